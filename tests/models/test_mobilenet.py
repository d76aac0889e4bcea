"""MobileNet v1 (Howard et al. 2017, arXiv:1704.04861, Tables 1, 2, 8) and MobileNetV2
(Sandler et al. 2018, arXiv:1801.04381, Table 2) checked against the papers."""

import pytest
import timm
import torch
import torchvision
from torch import nn

from cnnrepro.models import count_macs, count_params, create_model
from cnnrepro.models.interop import load_library_weights

# ---- MobileNet v1 -------------------------------------------------------------------------
# Derived from Table 1 (conv weights, BN gamma+beta per conv output channel, FC weights + bias):
#   conv1 3*3*3*32 = 864; depthwise 3x3: 9*(32+64+128+128+256+256+5*512+512+1024) = 44,640
#   pointwise 1x1: 32*64 + 64*128 + 128*128 + 128*256 + 256*256 + 256*512 + 5*512*512
#                  + 512*1024 + 1024*1024 = 3,139,584
#   FC 1024*1000 + 1000 = 1,025,000            -> weights + FC bias 4,210,088 ("4.2M", Table 8)
#   BN 2 * (32 + 4,960 dw widths + 5,952 pw widths) = 21,888
#   total 4,231,976 (timm 1.0.31 mobilenetv1_100 has the same count: it differs only in ReLU6)
MOBILENET_V1_PARAMS = 4_231_976
MOBILENET_V1_WEIGHTS = 4_210_088
# Table 8: 1.0 MobileNet-224, 569 million mult-adds. Counted: 568,740,352 (convs + FC).
MOBILENET_V1_PAPER_MADDS = 569e6


def test_mobilenet_v1_parameter_count():
    m = create_model("mobilenet_v1")
    assert count_params(m) == MOBILENET_V1_PARAMS
    weights = sum(p.numel() for n, p in m.named_parameters() if ".bn." not in n)
    assert weights == MOBILENET_V1_WEIGHTS
    assert round(weights / 1e6, 1) == 4.2  # Table 8


def test_mobilenet_v1_params_equal_timm_reference():
    assert count_params(timm.create_model("mobilenetv1_100")) == MOBILENET_V1_PARAMS


def test_mobilenet_v1_mult_adds_table8():
    macs = count_macs(create_model("mobilenet_v1"), (3, 224, 224))
    assert macs == 568_740_352
    assert abs(macs - MOBILENET_V1_PAPER_MADDS) / MOBILENET_V1_PAPER_MADDS < 0.005


def _resources_by_layer_type(model):
    sizes = {}
    hooks = [
        mod.register_forward_hook(lambda mod, i, o: sizes.__setitem__(mod, o.shape))
        for mod in model.modules()
        if isinstance(mod, (nn.Conv2d, nn.Linear))
    ]
    model.eval()(torch.zeros(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    params, madds = {}, {}
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            kind = "dw3x3" if mod.groups > 1 else ("1x1" if mod.kernel_size == (1, 1) else "3x3")
            w = mod.weight.numel()
            ma = w * sizes[mod][2] * sizes[mod][3]
        elif isinstance(mod, nn.Linear):
            kind, w = "fc", mod.weight.numel()
            ma = w
        else:
            continue
        params[kind] = params.get(kind, 0) + w
        madds[kind] = madds.get(kind, 0) + ma
    tp, tm = sum(params.values()), sum(madds.values())
    return {k: (100 * madds[k] / tm, 100 * params[k] / tp) for k in params}


def test_mobilenet_v1_resources_per_layer_type_table2():
    # Table 2: (mult-adds %, parameters %) per layer type
    r = _resources_by_layer_type(create_model("mobilenet_v1"))
    assert r["1x1"] == pytest.approx((94.86, 74.59), abs=0.01)
    assert r["dw3x3"] == pytest.approx((3.06, 1.06), abs=0.01)
    assert r["fc"] == pytest.approx((0.18, 24.33), abs=0.01)
    # Table 2 prints 1.19% mult-adds for the full 3x3 conv, but its column then sums to 99.29%;
    # the first conv is 112*112*32*27 = 10.8M of 568.7M = 1.91% (digits transposed in the paper).
    assert r["3x3"] == pytest.approx((1.91, 0.02), abs=0.01)


def test_mobilenet_v1_table1_shapes_and_last_dw_stride():
    m = create_model("mobilenet_v1").eval()
    x = torch.zeros(1, 3, 224, 224)
    shapes = []
    for layer in m.features:
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    assert len(shapes) == 14  # 1 full conv + 13 depthwise separable = 28 conv layers (Sec. 3.2)
    assert shapes[0] == (32, 112, 112)
    assert shapes[1] == (64, 112, 112)
    assert shapes[3] == (128, 56, 56)
    assert shapes[5] == (256, 28, 28)
    assert shapes[11] == (512, 14, 14)
    assert shapes[12] == (1024, 7, 7)
    assert shapes[13] == (1024, 7, 7)  # the last depthwise conv has stride 1 (Table 1 typo)
    assert m.features.conv14.dw.conv.stride == (1, 1)


def test_mobilenet_v1_width_multiplier():
    # Sec. 3.3 / Table 6: 0.5 MobileNet-224 has 1.3M parameters and 149M mult-adds
    m = create_model("mobilenet_v1", width_mult=0.5)
    weights = sum(p.numel() for n, p in m.named_parameters() if ".bn." not in n)
    assert round(weights / 1e6, 1) == 1.3
    assert abs(count_macs(m, (3, 224, 224)) - 149e6) / 149e6 < 0.01


def _timm_mobilenetv1():
    torch.manual_seed(0)
    lib = timm.create_model("mobilenetv1_100").eval()
    with torch.no_grad():
        for mod in lib.modules():  # non-trivial BN statistics, so a mis-mapped tensor shows
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                # BN shifts up to 3 take activations past 6, where ReLU6 and ReLU part, as trained
                # weights do; at timm's init (shift 0) they hardly ever get there
                mod.weight.uniform_(0.8, 1.2)
                mod.bias.uniform_(0.0, 3.0)
    return lib


def test_timm_mobilenetv1_weights_are_refused_by_the_python_api():
    # timm's mobilenetv1_100 computes with ReLU6, our paper net with ReLU (models/mobilenet.py):
    # its weights would make a silently different net, so no converter takes them
    with pytest.raises(KeyError, match=r"no converter from 'timm:mobilenetv1_100' to 'mobilenet_v1'; "
                                       r"available for it: none"):
        load_library_weights(create_model("mobilenet_v1"), "mobilenet_v1", "timm:mobilenetv1_100",
                             _timm_mobilenetv1())


def test_load_library_weights_checks_the_converted_net_computes_the_library_function(monkeypatch):
    # the converter that was registered for timm's mobilenetv1_100 (its tensors, in our order): the
    # tensors load strictly, but with ReLU6 in timm's net and ReLU in ours the logits differ, and
    # the Python API says so (as `--weights` does) and leaves our model as it was
    from cnnrepro.models import interop
    from cnnrepro.models.interop import ConversionError

    ours = create_model("mobilenet_v1")
    names = list(ours.state_dict())
    monkeypatch.setitem(interop._CONVERTERS, ("mobilenet_v1", "timm:mobilenetv1_100"),
                        lambda sd: dict(zip(names, sd.values())))
    lib = _timm_mobilenetv1()
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with pytest.raises(ConversionError, match=r"converter timm:mobilenetv1_100 loads these tensors, but the model "
                                              r"then computes another function .* 2x3x224x224 input"):
        load_library_weights(ours, "mobilenet_v1", "timm:mobilenetv1_100", lib)
    assert all(torch.equal(v, before[k]) for k, v in ours.state_dict().items())
    # with timm's ReLU6 swapped for the paper's ReLU, the same tensors are the same function
    for mod in lib.modules():
        if hasattr(mod, "act") and isinstance(mod.act, nn.ReLU6):
            mod.act = nn.ReLU()
    ours = load_library_weights(ours, "mobilenet_v1", "timm:mobilenetv1_100", lib, check_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), lib(x), rtol=0, atol=1e-5)
    # a state dict (not the module) is checked against timm's own default model: ReLU6 again
    with pytest.raises(ConversionError, match="computes another function"):
        load_library_weights(create_model("mobilenet_v1"), "mobilenet_v1", "timm:mobilenetv1_100",
                             _timm_mobilenetv1().state_dict(), check_size=64)


# ---- MobileNetV2 --------------------------------------------------------------------------
# Table 2 rows (t, c, n, s)
MOBILENET_V2_TABLE2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _mobilenet_v2_params_from_table2(num_classes=1000):
    """Parameters of Table 2 with BN (gamma, beta) after every conv and no conv biases."""
    total = 3 * 3 * 3 * 32 + 2 * 32  # conv2d 3x3/2, 32
    cin = 32
    for t, c, n, _ in MOBILENET_V2_TABLE2:
        for _ in range(n):
            hidden = cin * t
            if t != 1:  # the authors' code has no expansion conv when t = 1
                total += cin * hidden + 2 * hidden
            total += 9 * hidden + 2 * hidden  # 3x3 depthwise
            total += hidden * c + 2 * c  # linear 1x1 projection
            cin = c
    total += cin * 1280 + 2 * 1280  # conv2d 1x1, 1280
    total += 1280 * num_classes + num_classes  # final 1x1 conv on the pooled map == FC
    return total


def test_mobilenet_v2_parameter_count():
    # derived from Table 2: 3,504,872 = torchvision 0.29.1 mobilenet_v2. The paper rounds to "3.4M"
    # (Table 4): we are 3% above it, the same count as the authors' released models.
    expected = _mobilenet_v2_params_from_table2()
    assert expected == 3_504_872
    assert count_params(create_model("mobilenet_v2")) == expected
    assert abs(expected - 3.4e6) / 3.4e6 < 0.035


def test_mobilenet_v2_madds():
    # Table 4: 300M MAdds at 224
    macs = count_macs(create_model("mobilenet_v2"), (3, 224, 224))
    assert macs == 300_774_272
    assert abs(macs - 300e6) / 300e6 < 0.01


def test_mobilenet_v2_structure_table2():
    m = create_model("mobilenet_v2")
    f = m.features
    assert f[0][0].out_channels == 32 and f[0][0].stride == (2, 2)
    blocks = list(f[1:-1])
    assert len(blocks) == sum(n for _, _, n, _ in MOBILENET_V2_TABLE2) == 17
    i = 0
    for t, c, n, s in MOBILENET_V2_TABLE2:
        for j in range(n):
            b = blocks[i]
            convs = [mod for mod in b.conv.modules() if isinstance(mod, nn.Conv2d)]
            dw = [cv for cv in convs if cv.groups > 1][0]
            assert dw.stride == ((s, s) if j == 0 else (1, 1))
            assert convs[-1].out_channels == c
            assert dw.out_channels == convs[0].in_channels * t
            # residual only when stride 1 and in == out (Fig. 4d)
            assert b.use_res_connect == (dw.stride == (1, 1) and convs[0].in_channels == c)
            # linear bottleneck: no activation after the projection (Sec. 3.2)
            assert not isinstance(list(b.conv.children())[-1], (nn.ReLU, nn.ReLU6))
            i += 1
    assert f[-1][0].out_channels == 1280
    acts = {type(mod) for mod in m.modules() if isinstance(mod, (nn.ReLU, nn.ReLU6, nn.SiLU))}
    assert acts == {nn.ReLU6}  # Sec. 3.1: ReLU6 for its robustness at low precision


def test_mobilenet_v2_loads_torchvision_weights():
    torch.manual_seed(0)
    lib = torchvision.models.mobilenet_v2().eval()
    ours = load_library_weights(create_model("mobilenet_v2"), "mobilenet_v2", "torchvision:mobilenet_v2", lib).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours(x), lib(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_forward_backward_small_batch(name):
    m = create_model(name, num_classes=10)
    out = m(torch.randn(2, 3, 32, 32))  # the smallest size the 32x stride allows
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
