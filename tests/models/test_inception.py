"""BN-Inception, Inception-v3, Inception-v4 and Inception-ResNet-v1/v2 checked against their papers.

BN-Inception: Ioffe & Szegedy 2015 (arXiv:1502.03167), appendix Figure 5.
Inception-v3: Szegedy et al. 2015 (arXiv:1512.00567).
Inception-v4 / Inception-ResNet: Szegedy et al. 2016 (arXiv:1602.07261), Figs. 3-19, Table 1.
"""

from collections import Counter

import pytest
import torch
from torch import nn

from cnnrepro.models import count_macs, count_params, create_model
from cnnrepro.models.interop import load_library_weights


def conv_bn(cin, cout, kh, kw=None):
    """Parameters of conv (no bias) + BN (gamma, beta)."""
    return cin * cout * kh * (kw or kh) + 2 * cout


def _train_step(m, size, batch=2):
    m.train()
    out = m(torch.randn(batch, 3, size, size))
    outs = out if isinstance(out, tuple) else (out,)
    assert all(torch.isfinite(o).all() for o in outs)
    sum(o.logsumexp(1).sum() for o in outs).backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    return outs


_MODELS: dict = {}


def _model(name):
    """One shared ImageNet-head instance per registry name (these nets are slow to build)."""
    if name not in _MODELS:
        torch.manual_seed(0)
        _MODELS[name] = create_model(name)
    return _MODELS[name]


def _conv_shapes(module):
    """Multiset of (out, in, kh, kw, stride) of a block's convolutions."""
    return Counter(
        (*m.weight.shape, m.stride[0]) for m in module.modules() if isinstance(m, nn.Conv2d)
    )


# --------------------------------------------------------------------------------------------
# BN-Inception
# --------------------------------------------------------------------------------------------

# Appendix Figure 5, typed independently of the model file:
# (#1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, proj (0 = pass through), grid out)
FIG5 = {
    "3a": (64, 64, 64, 64, 96, 32, 28),
    "3b": (64, 64, 96, 64, 96, 64, 28),
    "3c": (0, 128, 160, 64, 96, 0, 14),
    "4a": (224, 64, 96, 96, 128, 128, 14),
    "4b": (192, 96, 128, 96, 128, 128, 14),
    "4c": (160, 128, 160, 128, 160, 128, 14),
    "4d": (96, 128, 192, 160, 192, 128, 14),
    "4e": (0, 128, 192, 192, 256, 0, 7),
    "5a": (352, 192, 320, 160, 224, 128, 7),
    "5b": (352, 192, 320, 192, 224, 128, 7),
}


def _bn_inception_expected():
    """Parameters and MACs at 224 from Figure 5's filter columns."""
    # conv1, separable with depth multiplier 8 (appendix): depthwise 7x7x3x8, pointwise 24->64
    params = 7 * 7 * 3 * 8 + conv_bn(24, 64, 1)
    macs = (7 * 7 * 24 + 24 * 64) * 112 * 112
    # conv2: 1x1 64 reduce + 3x3 192, at 56x56
    params += conv_bn(64, 64, 1) + conv_bn(64, 192, 3)
    macs += (64 * 64 + 64 * 192 * 9) * 56 * 56
    cin, grid_in = 192, 28
    for a, b, c, d, e, proj, grid in FIG5.values():
        w_in = cin * (a + b + d + proj)  # the 1x1s, all at the input grid
        w_out = b * c * 9 + e * e * 9  # the convs that may stride, at the output grid
        w_mid = d * e * 9  # first double-3x3 conv, stride 1
        params += w_in + w_out + w_mid + 2 * (a + b + c + d + 2 * e + proj)
        macs += (w_in + w_mid) * grid_in**2 + w_out * grid**2
        cin, grid_in = a + c + e + (proj or cin), grid
    params += cin * 1000 + 1000
    macs += cin * 1000
    return params, macs


# = 11,278,528: conv1 (separable) 2,840 and conv2 115,200, with BN; inception modules
#   10,135,488; linear 1024*1000 + 1000 = 1,025,000. The appendix says "13.6 * 10^6 parameters": not reconciled
#   (no reading of Figure 5 we tried reaches it; auxiliary heads like GoogLeNet's would add
#   ~6.4M, one of them ~3.2M).
BN_INCEPTION_PARAMS = 11_278_528
BN_INCEPTION_MACS = 1_948_605_440


def test_bn_inception_params_and_macs_from_figure5():
    m = _model("bn_inception")
    params, macs = _bn_inception_expected()
    assert (params, macs) == (BN_INCEPTION_PARAMS, BN_INCEPTION_MACS)
    assert count_params(m) == BN_INCEPTION_PARAMS
    assert count_macs(m, (3, 224, 224)) == BN_INCEPTION_MACS
    # Appendix: the double 3x3s increase "the computational cost by about 30%" over GoogLeNet's
    # 1.5G multiply-adds budget (arXiv:1409.4842 Sec. 5)
    assert abs(BN_INCEPTION_MACS / 1.5e9 - 1.30) < 0.01


def test_bn_inception_layers_follow_figure5():
    m = _model("bn_inception").eval()
    x = torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        x = m.stem(x)
    assert tuple(x.shape[1:]) == (192, 28, 28)
    seen = {}
    for name, block in m.blocks.named_children():
        with torch.no_grad():
            x = block(x)
        seen[name[-2:]] = tuple(x.shape[1:])
    # the output column's 576 (4c, 4d) and 1024 (4e) disagree with the filter columns: 608/1056
    assert seen == {
        "3a": (256, 28, 28), "3b": (320, 28, 28), "3c": (576, 14, 14),
        "4a": (576, 14, 14), "4b": (576, 14, 14), "4c": (608, 14, 14), "4d": (608, 14, 14),
        "4e": (1056, 7, 7), "5a": (1024, 7, 7), "5b": (1024, 7, 7),
    }
    # 5b uses max-pooling, the others average, 3c/4e pass the max-pooled input through
    assert isinstance(m.blocks.inception5b.branch4[0], nn.MaxPool2d)
    assert isinstance(m.blocks.inception5a.branch4[0], nn.AvgPool2d)
    assert isinstance(m.blocks.inception3c.branch4, nn.MaxPool2d)
    assert m.blocks.inception3c.branch1 is None
    # separable first conv with depth multiplier 8; no LRN (Sec. 4.2.1)
    dw = m.stem.conv1_depthwise
    assert dw.groups == 3 and dw.weight.shape == (24, 1, 7, 7)
    assert not any(isinstance(x, nn.LocalResponseNorm) for x in m.modules())
    assert sum(isinstance(x, nn.BatchNorm2d) for x in m.modules()) == sum(
        isinstance(x, nn.Conv2d) for x in m.modules()
    ) - 1  # every conv but the depthwise half of conv1


def test_bn_inception_train_step_small_input():
    torch.manual_seed(0)
    (out,) = _train_step(create_model("bn_inception", num_classes=10), 64)
    assert out.shape == (2, 10)


# --------------------------------------------------------------------------------------------
# Inception-v3 (torchvision)
# --------------------------------------------------------------------------------------------

# torchvision 0.29.1 docs, Inception_V3_Weights: 27,161,264 parameters (with the aux head);
# 23,834,568 without it, as timm 1.0.31 inception_v3 (computed below).
INCEPTION_V3_PARAMS = 27_161_264
INCEPTION_V3_PARAMS_NO_AUX = 23_834_568
# torchvision docs: 5.71 GFLOPS (= GMACs in its convention) at 299
INCEPTION_V3_MACS = 5_713_216_096


def test_inception_v3_params():
    import timm

    m = _model("inception_v3")
    assert count_params(m) == INCEPTION_V3_PARAMS
    assert count_params(m) - count_params(m.AuxLogits) == INCEPTION_V3_PARAMS_NO_AUX
    assert count_params(timm.create_model("inception_v3")) == INCEPTION_V3_PARAMS_NO_AUX
    # abstract: "less than 25 million parameters"
    assert INCEPTION_V3_PARAMS_NO_AUX < 25e6


def test_inception_v3_macs_at_299():
    macs = count_macs(_model("inception_v3"), (3, 299, 299))
    assert macs == INCEPTION_V3_MACS
    # abstract: "a computational cost of 5 billion multiply-adds per inference"; the released
    # model (what torchvision ports) is 14% above that round figure.
    assert 5e9 < macs < 5.8e9


@pytest.mark.slow
def test_inception_v3_train_returns_aux_eval_returns_main():
    # the aux head needs the 17x17 grid (5x5/3 pool then a valid 5x5 conv): 299 is the minimum
    torch.manual_seed(0)
    m = create_model("inception_v3", num_classes=10)
    outs = _train_step(m, 299)
    assert len(outs) == 1 + len(m.aux_loss_weights) == 2
    assert m.aux_loss_weights == (0.4,)
    assert all(o.shape == (2, 10) for o in outs)
    m.eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, 75, 75))  # torchvision's smallest input
    assert isinstance(y, torch.Tensor) and y.shape == (2, 10)


@pytest.mark.slow
def test_inception_v3_torchvision_weights_give_identical_outputs():
    from torchvision.models import inception_v3 as tv_inception_v3

    torch.manual_seed(0)
    # torch's default init (init_weights=False) is random too, and much faster to build
    tv = tv_inception_v3(weights=None, aux_logits=True, init_weights=False).eval()
    ours = _model("inception_v3").eval()
    load_library_weights(ours, "inception_v3", "torchvision:inception_v3", tv, check_size=75)
    x = torch.randn(2, 3, 75, 75)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=0, atol=0)


@pytest.mark.slow
def test_inception_v3_timm_weights_load_into_the_no_aux_model():
    import timm

    torch.manual_seed(0)
    lib = timm.create_model("inception_v3").eval()
    ours = create_model("inception_v3", aux_logits=False).eval()
    load_library_weights(ours, "inception_v3", "timm:inception_v3", lib, check_size=75)
    x = torch.randn(1, 3, 75, 75)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), lib(x), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_timm_weights_load_strictly(name):
    import timm

    torch.manual_seed(1)
    lib = timm.create_model(name)
    # the logit check at 75 px, a size both nets take, costs a fifth of one at 299
    ours = load_library_weights(_model(name), name, f"timm:{name}", lib, check_size=75)
    for k, v in lib.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k


# --------------------------------------------------------------------------------------------
# Inception-v4 (timm)
# --------------------------------------------------------------------------------------------

# timm 1.0.31 inception_v4 (the paper gives no count): computed from timm below
INCEPTION_V4_PARAMS = 42_679_816
INCEPTION_V4_MACS = 12_253_974_624


def _v4_figure_convs():
    """Convs of one block per figure: (out, in, kh, kw, stride); figures 4-8 of arXiv:1602.07261."""
    a = Counter({(96, 384, 1, 1, 1): 1, (64, 384, 1, 1, 1): 2, (96, 64, 3, 3, 1): 2, (96, 96, 3, 3, 1): 1})
    a[(96, 384, 1, 1, 1)] += 1  # avg-pool branch 1x1 96
    b = Counter({
        (128, 1024, 1, 1, 1): 1, (384, 1024, 1, 1, 1): 1, (192, 1024, 1, 1, 1): 2,
        # 1x7/7x1 pairs: 192->224->256 and 192->192->224->224->256 (order-independent multiset)
    })
    c = Counter({
        (256, 1536, 1, 1, 1): 2, (384, 1536, 1, 1, 1): 2,
        (256, 384, 1, 3, 1): 1, (256, 384, 3, 1, 1): 1,
        (256, 512, 1, 3, 1): 1, (256, 512, 3, 1, 1): 1,
    })
    ra = Counter({(384, 384, 3, 3, 2): 1, (192, 384, 1, 1, 1): 1, (224, 192, 3, 3, 1): 1, (256, 224, 3, 3, 2): 1})
    rb = Counter({
        (192, 1024, 1, 1, 1): 1, (192, 192, 3, 3, 2): 1, (256, 1024, 1, 1, 1): 1,
        (256, 256, 1, 7, 1): 1, (320, 256, 7, 1, 1): 1, (320, 320, 3, 3, 2): 1,
    })
    return a, b, c, ra, rb


def test_inception_v4_blocks_follow_figures():
    m = _model("inception_v4")
    kinds = Counter(type(b).__name__ for b in m.features)
    # Fig. 9: stem (3 mixed parts), 4 x Inception-A, Reduction-A, 7 x B, Reduction-B, 3 x C
    assert kinds["InceptionA"] == 4 and kinds["InceptionB"] == 7 and kinds["InceptionC"] == 3
    a, b, c, ra, rb = _v4_figure_convs()
    blocks = {type(x).__name__: x for x in m.features}
    assert _conv_shapes(blocks["InceptionA"]) == a
    sb = _conv_shapes(blocks["InceptionB"])
    pairs = Counter({k: v for k, v in sb.items() if k[2] * k[3] == 7})
    assert Counter({k: v for k, v in sb.items() if k[2] * k[3] == 1}) == b
    # each factorised 7-conv, by (out, in) with one 1x7 and one 7x1 per 7x7 equivalent
    assert sorted((o, i) for (o, i, *_r) in pairs.elements()) == sorted(
        [(224, 192), (256, 224), (192, 192), (224, 192), (224, 224), (256, 224)]
    )
    # Fig. 6's 384 -> 448 -> 512 pair, in the release's order (3x1 first)
    assert _conv_shapes(blocks["InceptionC"]) == c + Counter({(448, 384, 3, 1, 1): 1, (512, 448, 1, 3, 1): 1})
    assert _conv_shapes(blocks["ReductionA"]) == ra  # k, l, m, n = 192, 224, 256, 384 (Table 1)
    assert _conv_shapes(blocks["ReductionB"]) == rb
    assert m.head_drop.p == 0.2  # Fig. 9: dropout keep 0.8


@pytest.mark.slow
def test_inception_v4_params_and_macs():
    import timm

    m = _model("inception_v4")
    assert count_params(m) == INCEPTION_V4_PARAMS == count_params(timm.create_model("inception_v4"))
    assert count_macs(m, (3, 299, 299)) == INCEPTION_V4_MACS


@pytest.mark.slow
def test_inception_v4_train_step_small_input():
    torch.manual_seed(0)
    (out,) = _train_step(create_model("inception_v4", num_classes=10), 75)
    assert out.shape == (2, 10)


# --------------------------------------------------------------------------------------------
# Inception-ResNet-v1 (ours)
# --------------------------------------------------------------------------------------------


def _ir_v1_expected_params():
    # Fig. 14 stem: 3x3/2 32 V, 3x3 32 V, 3x3 64, pool, 1x1 80, 3x3 192 V, 3x3/2 256 V
    stem = (conv_bn(3, 32, 3) + conv_bn(32, 32, 3) + conv_bn(32, 64, 3) + conv_bn(64, 80, 1)
            + conv_bn(80, 192, 3) + conv_bn(192, 256, 3))
    # Fig. 10, on 256 channels: 1x1 32 | 1x1 32, 3x3 32 | 1x1 32, 3x3 32, 3x3 32; 1x1 96->256 + bias
    ir_a = (3 * conv_bn(256, 32, 1) + 3 * conv_bn(32, 32, 3)) + 96 * 256 + 256
    # Fig. 7 with k, l, m, n = 192, 192, 256, 384 (Table 1)
    red_a = conv_bn(256, 384, 3) + conv_bn(256, 192, 1) + conv_bn(192, 192, 3) + conv_bn(192, 256, 3)
    # Fig. 11, on 896 channels: 1x1 128 | 1x1 128, 1x7 128, 7x1 128; 1x1 256->896 + bias
    ir_b = 2 * conv_bn(896, 128, 1) + conv_bn(128, 128, 1, 7) + conv_bn(128, 128, 7, 1) + 256 * 896 + 896
    # Fig. 12
    red_b = (3 * conv_bn(896, 256, 1) + conv_bn(256, 384, 3) + conv_bn(256, 256, 3)
             + conv_bn(256, 256, 3) + conv_bn(256, 256, 3))
    # Fig. 13, on 1792 channels: 1x1 192 | 1x1 192, 1x3 192, 3x1 192; 1x1 384->1792 + bias
    ir_c = 2 * conv_bn(1792, 192, 1) + conv_bn(192, 192, 1, 3) + conv_bn(192, 192, 3, 1) + 384 * 1792 + 1792
    fc = 1792 * 1000 + 1000
    # Fig. 15: 5 x A, 10 x B, 5 x C
    return stem + 5 * ir_a + red_a + 10 * ir_b + red_b + 5 * ir_c + fc


# No published count (the paper gives none, timm/torchvision do not have the model):
# derived from the figures in _ir_v1_expected_params: stem 615,552 + 5 x IR-A 77,440
# + Reduction-A 1,710,080 + 10 x IR-B 690,048 + Reduction-B 3,346,176 + 5 x IR-C 1,600,768
# + linear 1,793,000 = 22,756,328.
INCEPTION_RESNET_V1_PARAMS = 22_756_328
INCEPTION_RESNET_V1_MACS = 6_206_361_696


def test_inception_resnet_v1_params_from_figures():
    assert _ir_v1_expected_params() == INCEPTION_RESNET_V1_PARAMS
    assert count_params(_model("inception_resnet_v1")) == INCEPTION_RESNET_V1_PARAMS


@pytest.mark.slow
def test_inception_resnet_v1_macs():
    macs = count_macs(_model("inception_resnet_v1"), (3, 299, 299))
    assert macs == INCEPTION_RESNET_V1_MACS
    # Sec. 3.1: "Inception-ResNet-v1 ... roughly the computational cost of Inception-v3"
    assert abs(macs / INCEPTION_V3_MACS - 1) < 0.1


def test_inception_resnet_v1_shapes_follow_fig15():
    m = _model("inception_resnet_v1").eval()
    with torch.no_grad():
        x = m.stem(torch.zeros(1, 3, 299, 299))
        assert tuple(x.shape[1:]) == (256, 35, 35)
        x = m.reduction_a(m.blocks_a(x))
        assert tuple(x.shape[1:]) == (896, 17, 17)
        x = m.reduction_b(m.blocks_b(x))
        assert tuple(x.shape[1:]) == (1792, 8, 8)
        assert tuple(m.blocks_c(x).shape[1:]) == (1792, 8, 8)
    assert (len(m.blocks_a), len(m.blocks_b), len(m.blocks_c)) == (5, 10, 5)
    assert [b.scale for b in (m.blocks_a[0], m.blocks_b[0], m.blocks_c[0])] == [0.17, 0.10, 0.20]
    # the "Linear" 1x1 before each sum: no BN, no ReLU before the addition
    assert m.blocks_b[0].up.bias is not None
    assert m.dropout.p == pytest.approx(0.2)


def test_inception_resnet_v1_residual_is_scaled_sum():
    torch.manual_seed(0)
    m = _model("inception_resnet_v1").eval()
    block = m.blocks_c[0]
    x = torch.randn(1, 1792, 8, 8).relu()
    with torch.no_grad():
        r = block.up(torch.cat([b(x) for b in block.branches], 1))
        torch.testing.assert_close(block(x), torch.relu(x + 0.2 * r))


def test_inception_resnet_v1_train_step_small_input():
    torch.manual_seed(0)
    (out,) = _train_step(create_model("inception_resnet_v1", num_classes=10), 75)
    assert out.shape == (2, 10)


# --------------------------------------------------------------------------------------------
# Inception-ResNet-v2 (timm, the TF-slim release)
# --------------------------------------------------------------------------------------------

# timm 1.0.31 inception_resnet_v2 (the paper gives no count): computed from timm below
INCEPTION_RESNET_V2_PARAMS = 55_843_464
INCEPTION_RESNET_V2_MACS = 13_155_794_016


@pytest.mark.slow
def test_inception_resnet_v2_params_and_macs():
    import timm

    m = _model("inception_resnet_v2")
    assert count_params(m) == INCEPTION_RESNET_V2_PARAMS == count_params(timm.create_model("inception_resnet_v2"))
    macs = count_macs(m, (3, 299, 299))
    assert macs == INCEPTION_RESNET_V2_MACS
    # Sec. 3.1: v2 "matches the raw cost of the newly introduced Inception-v4 network"
    assert abs(macs / INCEPTION_V4_MACS - 1) < 0.1


def test_inception_resnet_v2_documented_release_structure():
    # the DEVIATIONs written in inception.py: 10/20/10 blocks (Fig. 15: 5/10/5), widths 320 /
    # 1088 / 2080 (paper 384 / 1152 / 2144), Reduction-A k, l, m, n = 256, 256, 384, 384 (Table 1)
    m = _model("inception_resnet_v2")
    assert (len(m.repeat), len(m.repeat_1), len(m.repeat_2) + 1) == (10, 20, 10)
    assert [b.conv2d.out_channels for b in (m.repeat[0], m.repeat_1[0], m.block8)] == [320, 1088, 2080]
    assert _conv_shapes(m.mixed_6a) == Counter(
        {(384, 320, 3, 3, 2): 1, (256, 320, 1, 1, 1): 1, (256, 256, 3, 3, 1): 1, (384, 256, 3, 3, 2): 1}
    )
    assert [b.scale for b in (m.repeat[0], m.repeat_1[0], m.repeat_2[0])] == [0.17, 0.10, 0.20]
    assert m.head_drop.p == 0.2


@pytest.mark.slow
def test_inception_resnet_v2_train_step_small_input():
    torch.manual_seed(0)
    (out,) = _train_step(create_model("inception_resnet_v2", num_classes=10), 75)
    assert out.shape == (2, 10)
