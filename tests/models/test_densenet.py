"""DenseNet-BC checked against the paper's Table 1 (Huang et al. 2016, arXiv:1608.06993)."""

import pytest
import torch
import torchvision
from torch import nn

from cnnrepro.models import count_macs, count_params, create_model
from cnnrepro.models.interop import load_library_weights

# Table 1 blocks; DenseNet-161 (k = 48) from the authors' released models (see densenet.py)
TABLE1 = {
    "densenet121": (32, (6, 12, 24, 16)),
    "densenet169": (32, (6, 12, 32, 32)),
    "densenet201": (32, (6, 12, 48, 32)),
    "densenet161": (48, (6, 12, 36, 24)),
}


def _from_table1(k, blocks, num_classes=1000, size=224):
    """(params, MACs) of a DenseNet-BC from Table 1's rules: 2k-filter 7x7/2 stem conv, 3x3/2 max
    pool; dense layer = BN-ReLU-1x1 conv (4k) - BN-ReLU-3x3 conv (k); transition = BN-ReLU-1x1 conv
    to half the channels (theta = 0.5) + 2x2/2 avg pool; final BN, global pool, FC. No conv biases."""
    c = 2 * k
    r = size // 2
    params = 3 * 49 * c + 2 * c
    macs = r * r * 3 * 49 * c
    r //= 2
    for i, n in enumerate(blocks):
        for _ in range(n):
            params += 2 * c + c * 4 * k + 2 * 4 * k + 4 * k * 9 * k
            macs += r * r * (c * 4 * k + 4 * k * 9 * k)
            c += k
        if i < len(blocks) - 1:
            params += 2 * c + c * (c // 2)
            macs += r * r * c * (c // 2)
            c //= 2
            r //= 2
    params += 2 * c + c * num_classes + num_classes
    macs += c * num_classes
    return params, macs


# torchvision 0.29.1 densenet121 is documented with 7,978,856 params; the others likewise
TORCHVISION_PARAMS = {
    "densenet121": 7_978_856,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
    "densenet161": 28_681_000,
}


@pytest.mark.parametrize("name", list(TABLE1))
def test_parameter_count_derived_from_table1(name):
    expected, _ = _from_table1(*TABLE1[name])
    assert expected == TORCHVISION_PARAMS[name]
    assert count_params(create_model(name)) == expected


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TABLE1))
def test_macs_derived_from_table1(name):
    # the paper plots FLOPs (Fig. 3) but prints no figure; check against Table 1 arithmetic
    _, expected = _from_table1(*TABLE1[name])
    assert count_macs(create_model(name), (3, 224, 224)) == expected


def test_densenet121_macs():
    # 2,834,161,664 MACs at 224 (derived from Table 1)
    assert _from_table1(*TABLE1["densenet121"])[1] == 2_834_161_664


@pytest.mark.parametrize("name", list(TABLE1))
def test_claimed_structure(name):
    k, blocks = TABLE1[name]
    m = create_model(name)
    f = m.features
    assert f.conv0.out_channels == 2 * k and f.conv0.kernel_size == (7, 7) and f.conv0.stride == (2, 2)
    assert isinstance(f.pool0, nn.MaxPool2d) and f.pool0.kernel_size == 3 and f.pool0.stride == 2
    dense_blocks = [f.get_submodule(f"denseblock{i}") for i in range(1, 5)]
    assert tuple(len(b) for b in dense_blocks) == blocks
    for b in dense_blocks:
        for layer in b.values():
            # BN-ReLU-Conv order, 1x1 conv to 4k (bottleneck), 3x3 conv to k (growth rate)
            names = [n for n, _ in layer.named_children()]
            assert names == ["norm1", "relu1", "conv1", "norm2", "relu2", "conv2"]
            assert layer.conv1.kernel_size == (1, 1) and layer.conv1.out_channels == 4 * k
            assert layer.conv2.kernel_size == (3, 3) and layer.conv2.out_channels == k
            assert layer.drop_rate == 0  # no dropout on ImageNet
    for i in range(1, 4):
        t = f.get_submodule(f"transition{i}")
        assert t.conv.out_channels == t.conv.in_channels // 2  # compression theta = 0.5
        assert isinstance(t.pool, nn.AvgPool2d) and t.pool.kernel_size == 2 and t.pool.stride == 2
    assert isinstance(f.norm5, nn.BatchNorm2d)
    assert m.classifier.out_features == 1000


@pytest.mark.slow
def test_stage_resolutions_table1():
    f = create_model("densenet121").features.eval()
    x = torch.zeros(1, 3, 224, 224)
    sizes = {}
    for name, layer in f.named_children():
        x = layer(x)
        sizes[name] = tuple(x.shape[2:])
    assert sizes["conv0"] == (112, 112)
    assert sizes["pool0"] == sizes["denseblock1"] == (56, 56)
    assert sizes["denseblock2"] == (28, 28)
    assert sizes["denseblock3"] == (14, 14)
    assert sizes["denseblock4"] == (7, 7)
    assert x.shape[1] == 1024


def test_he_initialisation():
    torch.manual_seed(0)
    conv = create_model("densenet121").features.denseblock3.denselayer1.conv2
    fan_in = conv.in_channels * 9
    # Sec. 4.2: He et al. init, std sqrt(2 / fan_in) (torchvision: kaiming_normal_, fan-in)
    assert conv.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.03)


def test_loads_torchvision_weights():
    torch.manual_seed(0)
    lib = torchvision.models.densenet121().eval()
    ours = load_library_weights(create_model("densenet121"), "densenet121", "torchvision:densenet121", lib,
                                check_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours(x), lib(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "name", ["densenet121", *[pytest.param(n, marks=pytest.mark.slow) for n in ["densenet169", "densenet201", "densenet161"]]]
)
def test_forward_backward_small_batch(name):
    m = create_model(name, num_classes=10)
    out = m(torch.randn(2, 3, 32, 32))  # the smallest size the 32x stride allows
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
