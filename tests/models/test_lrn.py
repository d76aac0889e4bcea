"""The project's LocalResponseNorm computes torch's `local_response_norm`, forward and backward
(issue 15), and every registered net with LRN uses it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnrepro.models import create_model, list_models
from cnnrepro.models._lrn import LocalResponseNorm, local_response_norm

# (input shape, window size): odd and even windows, windows wider than the channel count, one
# channel, the wide-window (cumulative sum) path with many channels, 3-D and 5-D inputs
CASES = [
    ((2, 7, 5, 4), 5), ((2, 7, 5, 4), 4), ((2, 7, 5, 4), 1), ((2, 7, 5, 4), 2), ((2, 7, 5, 4), 3),
    ((2, 3, 4, 4), 5), ((2, 3, 4, 4), 8), ((2, 1, 4, 4), 5), ((3, 96, 6, 6), 5), ((2, 300, 3, 3), 41),
    ((2, 300, 3, 3), 64), ((2, 40, 3, 3), 16), ((2, 40, 3, 3), 17), ((2, 9, 3, 3), 40),
    ((2, 6, 11), 5), ((2, 6, 11), 4), ((1, 5, 7), 9), ((2, 5, 3, 2, 2), 3), ((2, 8, 2, 3, 2, 2), 6),
]
# AlexNet's (torch's alpha = n * the paper's 1e-4), GoogLeNet's, and a strong normalisation
CONSTANTS = [(5e-4, 0.75, 2.0), (1e-4, 0.75, 1.0), (1e-1, 0.5, 0.5)]


def _both(x: torch.Tensor, g: torch.Tensor, size: int, alpha: float, beta: float, k: float):
    out = []
    for fn in (F.local_response_norm, local_response_norm):
        xi = x.detach().clone().requires_grad_()
        y = fn(xi, size, alpha, beta, k)
        y.backward(g)
        out.append((y.detach(), xi.grad))
    return out


@pytest.mark.parametrize("constants", CONSTANTS)
@pytest.mark.parametrize("shape,size", CASES)
def test_equals_torch_forward_and_backward(shape, size, constants):
    gen = torch.Generator().manual_seed(size * 1000 + len(shape))
    # post-ReLU activations large enough that the normalisation is far from the identity
    x = torch.randn(shape, generator=gen).mul_(4).relu_().add_(torch.randn(shape, generator=gen))
    g = torch.randn(shape, generator=gen)
    (y_ref, g_ref), (y, grad) = _both(x, g, size, *constants)
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, g_ref, rtol=1e-6, atol=1e-6)


def test_wide_window_keeps_precision_after_large_channels():
    # a running sum over channels would carry the first channels' 1e8 into every later window
    # and lose the later channels' small squares in its float32 rounding
    x = torch.randn(2, 1000, 2, 2)
    x[:, :50] *= 1e4
    g = torch.randn_like(x)
    (y_ref, g_ref), (y, grad) = _both(x, g, 33, 1e-2, 0.75, 2.0)
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, g_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape,size", [((2, 7, 5, 4), 5), ((2, 7, 5, 4), 4), ((2, 40, 3, 3), 21), ((2, 5, 6), 3)])
def test_float64_matches_torch_to_rounding_and_passes_gradcheck(shape, size):
    x = torch.randn(shape, dtype=torch.float64) * 3
    g = torch.randn(shape, dtype=torch.float64)
    (y_ref, g_ref), (y, grad) = _both(x, g, size, 1e-2, 0.75, 2.0)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, g_ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, size, 1e-2, 0.75, 2.0), x.requires_grad_())


def test_alexnet_shape_and_channels_last():
    # the real layer shape (conv1's 96 maps, at a smaller map) in both memory formats
    x = torch.randn(4, 96, 13, 13).mul_(20).relu_().contiguous(memory_format=torch.channels_last)
    g = torch.randn(4, 96, 13, 13)
    (y_ref, g_ref), (y, grad) = _both(x, g, 5, 5e-4, 0.75, 2.0)
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, g_ref, rtol=1e-6, atol=1e-6)


def test_non_contiguous_input():
    x = torch.randn(2, 9, 6, 10)[..., ::2].mul(3)  # a strided view
    g = torch.randn(2, 9, 6, 5)
    (y_ref, g_ref), (y, grad) = _both(x, g, 5, 1e-2, 0.75, 2.0)
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, g_ref, rtol=1e-6, atol=1e-6)


def test_bf16_autocast_normalises_in_float32_like_torch():
    x = torch.randn(2, 16, 5, 5).mul_(10).relu_()
    conv = nn.Conv2d(16, 16, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(x)
        assert h.dtype == torch.bfloat16
        ref = F.local_response_norm(h, 5, 5e-4, 0.75, 2.0)
        ours = local_response_norm(h, 5, 5e-4, 0.75, 2.0)
    # same bf16 input; ours rounds its float32 result back to bf16, torch's stays float32
    torch.testing.assert_close(ours.float(), ref.float(), rtol=8e-3, atol=1e-2)


def test_same_refusals_and_empty_input_as_torch():
    with pytest.raises(ValueError, match="3 or more dims"):
        local_response_norm(torch.ones(2, 3), 5)
    with pytest.raises(ValueError, match="size"):
        local_response_norm(torch.ones(2, 3, 4), 0)
    empty = torch.ones(0, 4, 3, 3)
    assert local_response_norm(empty, 5) is empty


def test_second_derivative_equals_torchs():
    # create_graph takes torch's differentiable path: a gradient penalty through LRN is right
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64).mul_(3)
    g = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    out = []
    for fn in (F.local_response_norm, local_response_norm):
        xi = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(fn(xi, 4, 1e-2, 0.75, 2.0), xi, g, create_graph=True)
        (ggx,) = torch.autograd.grad(gx.square().sum(), xi)
        out.append((gx.detach(), ggx))
    torch.testing.assert_close(out[1], out[0], rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradgradcheck(lambda t: local_response_norm(t, 3, 1e-2, 0.75, 2.0), x.requires_grad_())


def test_module_is_a_drop_in_for_torchs():
    ours, ref = LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0), nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
    assert isinstance(ours, nn.LocalResponseNorm)  # optimiser groups and model tests test this
    assert repr(ours) == repr(ref) and ours.state_dict() == {} and not list(ours.parameters())
    x = torch.randn(2, 10, 4, 4).mul_(5)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-6, atol=1e-6)


def test_every_net_with_lrn_uses_the_fast_one():
    with_lrn = set()
    for name in list_models():
        with torch.device("meta"):  # the layers without initialising 100M+ weights
            model = create_model(name)
        lrn = [m for m in model.modules() if isinstance(m, nn.LocalResponseNorm)]
        assert all(type(m) is LocalResponseNorm for m in lrn), name
        if lrn:
            with_lrn.add(name)
    # issue 15: LRN is in AlexNet, ZFNet, GoogLeNet and VGG-A-LRN
    assert {"alexnet", "zfnet", "googlenet", "vgg11_lrn"} <= with_lrn


def test_alexnet_trains_as_with_torchs_lrn():
    # float64: in float32 the layers' last-bit differences grow through eight layers of
    # cancelling sums into ~1e-5 on conv1's gradient, which would hide a real error
    torch.manual_seed(0)
    ours = create_model("alexnet", num_classes=10).double()
    ref = create_model("alexnet", num_classes=10).double()
    ref.load_state_dict(ours.state_dict())
    for name in ("norm1", "norm2"):
        old = getattr(ref.features, name)
        setattr(ref.features, name, nn.LocalResponseNorm(old.size, old.alpha, old.beta, old.k))
    ours.eval(), ref.eval()  # no dropout: the same function
    x = torch.randn(2, 3, 227, 227, dtype=torch.float64)
    grads = []
    for m in (ref, ours):
        m(x).square().sum().backward()
        grads.append(m.features.conv1.weight.grad)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-14)
