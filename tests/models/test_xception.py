"""Xception checked against the paper (Chollet 2016, arXiv:1610.02357, Fig. 5 and Table 3)."""

import pytest
import torch
from torch import nn

from cnnrepro.models import count_macs, count_params, create_model

# Table 3: "Xception ... 22,855,952" parameters. Derived from Fig. 5 (conv / depthwise /
# pointwise weights, BN gamma + beta after each conv and separable conv, no biases):
#   entry convs 3*32*9 + 64 + 32*64*9 + 128                                   = 19,584
#   entry block 128: sep(64->128) + sep(128->128) + skip 64*128 + BN 256, ... (see _expected)
#   middle: 8 blocks x 3 x sep(728->728); exit block + SepConv 1536 + SepConv 2048; FC 2049*1000
XCEPTION_PARAMS = 22_855_952
# no MAC figure in the paper; computed from timm 1.0.31 legacy_xception at 299
XCEPTION_MACS = 8_357_403_496


def _sep(cin, cout):
    """Depthwise 3x3 (multiplier 1) + pointwise 1x1 + BN."""
    return cin * 9 + cin * cout + 2 * cout


def _expected_params():
    p = 3 * 32 * 9 + 2 * 32 + 32 * 64 * 9 + 2 * 64  # entry flow convs
    for cin, cout in [(64, 128), (128, 256), (256, 728)]:  # entry flow blocks, 1x1/2 skip + BN
        p += _sep(cin, cout) + _sep(cout, cout) + cin * cout + 2 * cout
    p += 8 * 3 * _sep(728, 728)  # middle flow
    p += _sep(728, 728) + _sep(728, 1024) + 728 * 1024 + 2 * 1024  # exit flow block
    p += _sep(1024, 1536) + _sep(1536, 2048)
    return p + 2048 * 1000 + 1000  # logistic regression


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("xception")


def test_parameter_count_matches_table3(model):
    import timm

    assert _expected_params() == XCEPTION_PARAMS
    assert count_params(model) == XCEPTION_PARAMS
    assert count_params(timm.create_model("legacy_xception")) == XCEPTION_PARAMS


def test_macs_at_299(model):
    assert count_macs(model, (3, 299, 299)) == XCEPTION_MACS


def test_flows_follow_fig5(model):
    m = model.eval()
    x = torch.zeros(1, 3, 299, 299)
    with torch.no_grad():
        x = m.act2(m.bn2(m.conv2(m.act1(m.bn1(m.conv1(x))))))
        assert tuple(x.shape[1:]) == (64, 147, 147)
        shapes = []
        for i in range(1, 13):
            x = getattr(m, f"block{i}")(x)
            shapes.append(tuple(x.shape[1:]))
    assert shapes[:3] == [(128, 74, 74), (256, 37, 37), (728, 19, 19)]  # entry flow
    assert shapes[3:11] == [(728, 19, 19)] * 8  # middle flow, repeated 8 times
    assert shapes[11] == (1024, 10, 10)  # exit flow
    assert m.conv4.pointwise.out_channels == 2048
    # middle flow blocks: three separable convs with identity shortcuts
    for i in range(4, 12):
        blk = getattr(m, f"block{i}")
        assert blk.skip is None
        assert sum(isinstance(x, nn.BatchNorm2d) for x in blk.rep) == 3


def test_separable_convs_have_depth_multiplier_one_and_bn_everywhere(model):
    convs = [c for c in model.modules() if isinstance(c, nn.Conv2d)]
    depthwise = [c for c in convs if c.groups > 1]
    assert all(c.groups == c.in_channels == c.out_channels for c in depthwise)
    assert len(depthwise) == 2 * 3 + 8 * 3 + 2 + 2  # entry 3 blocks x 2, middle 8 x 3, exit 2 + 2
    # every conv and every separable conv (depthwise + pointwise pair) is followed by BN
    bns = [b for b in model.modules() if isinstance(b, nn.BatchNorm2d)]
    assert len(bns) == len(convs) - len(depthwise)


def test_shortcut_sees_the_pre_relu_input(model):
    # Fig. 5 puts the ReLU inside the residual branch: an in-place ReLU there would also change
    # the tensor the shortcut adds (a bug of early PyTorch ports); timm uses an out-of-place one.
    for i in range(2, 13):
        first = getattr(model, f"block{i}").rep[0]
        assert isinstance(first, nn.ReLU) and not first.inplace
    blk = model.block5.eval()
    x = torch.randn(1, 728, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(blk(x.clone()), blk.rep(x.clone()) + x)


def test_dropout_before_logistic_regression(model):
    assert model.drop_rate == 0.5  # Sec. 4.3


@pytest.mark.slow
def test_forward_backward_small_input():
    torch.manual_seed(0)
    m = create_model("xception", num_classes=10).train()
    out = m(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.slow
def test_timm_weights_give_identical_outputs(model):
    import timm

    from cnnrepro.models.interop import load_library_weights

    torch.manual_seed(1)
    lib = timm.create_model("legacy_xception").eval()
    ours = load_library_weights(model, "xception", "timm:legacy_xception", lib, check_size=64).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), lib(x), rtol=0, atol=0)
