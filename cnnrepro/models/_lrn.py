"""Cross-channel local response normalisation (Krizhevsky et al. 2012, Sec. 3.3), fast on the CPU.

Why the project writes its own: torch's `nn.LocalResponseNorm` sums the window with an
`avg_pool3d` over the squared activations, and `avg_pool3d`'s backward is slow on the CPU. On a
2-core machine the two LRN layers of the paper AlexNet cost about a quarter of a training step
(issue 15). This module computes the same function -- torch's `local_response_norm` exactly,
with its asymmetric window for even sizes, `alpha` divided by the window size, zero padding
counted in the average, `k` and `beta` -- with an analytic backward:

    d_c = k + alpha / n * sum_{j in W(c)} x_j^2,     W(c) = [c - n // 2, c + (n - 1) // 2]
    y_c = x_c * d_c^-beta
    dL/dx_j = g_j * d_j^-beta - 2 * alpha * beta / n * x_j * sum_{c : j in W(c)} g_c * y_c / d_c

The window sums are sums of shifted channel slices: exact, the same adds on any device, and few
for AlexNet's n = 5. Wide windows use a cumulative sum in float64, which keeps float32's
precision at any channel count. Nothing here is CPU-specific: on CUDA the same tensor ops run
(checked against torch's on the CPU only; this project's test machines have no GPU). `nn.LocalResponseNorm` stays the base class so `isinstance`
checks, the module's repr and its (empty) state_dict are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LocalResponseNorm", "local_response_norm"]

# Above this many slices a float64 cumulative sum (two passes whatever the width) is faster.
_MAX_SHIFTED_SLICES = 16


def _window_sum(src: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """out[:, c] = sum of src[:, j] for c - before <= j <= c + after, j inside [0, C): dim 1 is
    the channel dim, and the window is cut (zero-padded) at both ends."""
    channels = src.shape[1]
    before, after = min(before, channels - 1), min(after, channels - 1)
    if before + after + 1 > _MAX_SHIFTED_SLICES:
        # cs[:, i] = sum of the first i channels; window c - before .. c + after = cs[hi] - cs[lo]
        cs = torch.nn.functional.pad(src.to(torch.float64).cumsum(1), (0, 0) * (src.dim() - 2) + (1, 0))
        idx = torch.arange(channels, device=src.device)
        hi = (idx + after + 1).clamp(max=channels)
        lo = (idx - before).clamp(min=0)
        return (cs.index_select(1, hi) - cs.index_select(1, lo)).to(src.dtype)
    if before + after == 0:
        return src.clone()

    def head(t: torch.Tensor, n: int) -> torch.Tensor:
        return t.narrow(1, 0, n)

    def tail(t: torch.Tensor, n: int) -> torch.Tensor:
        return t.narrow(1, channels - n, n)

    # The first shifted pair writes a fresh buffer (one pass, not a copy then an add); the
    # others add in place on narrowed views (`out[:, s:] += ...` would copy the slice back).
    shifts = [-s for s in range(1, before + 1)] + list(range(1, after + 1))
    out = torch.empty_like(src)
    first, *rest = shifts
    n = channels - abs(first)
    if first < 0:  # out[c] = src[c] + src[c - s]
        torch.add(tail(src, n), head(src, n), out=tail(out, n))
        head(out, abs(first)).copy_(head(src, abs(first)))
    else:  # out[c] = src[c] + src[c + s]
        torch.add(head(src, n), tail(src, n), out=head(out, n))
        tail(out, first).copy_(tail(src, first))
    for s in rest:
        n = channels - abs(s)
        if s < 0:
            tail(out, n).add_(head(src, n))
        else:
            head(out, n).add_(tail(src, n))
    return out


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    # half and bfloat16 (autocast) hold d = k + ... to 3 digits at best: normalise in float32,
    # as torch's does under autocast (its avg_pool3d / pow run in float32 there)
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class _LRN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        before, after = size // 2, (size - 1) // 2  # torch pads the channel window this way
        xf = _at_least_float32(x)
        # few passes over memory and few fresh buffers: at AlexNet's sizes each is tens of MB,
        # and a fresh one costs its page faults
        q = torch.mul(xf, xf).mul_(alpha / size)
        d = _window_sum(q, before, after).add_(k)
        scale = torch.pow(d, -beta, out=q)
        ctx.save_for_backward(x, d, scale)
        ctx.lrn = (size, alpha, beta, before, after)
        ctx.lrn_k = k
        return (xf * scale).to(x.dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, d, scale = ctx.saved_tensors
        size, alpha, beta, before, after = ctx.lrn
        if torch.is_grad_enabled():
            # create_graph (a gradient penalty, a Hessian product): the saved d and scale carry
            # no graph, so the analytic gradient below would be differentiated as a constant of
            # x. Take torch's differentiable formula instead; rare, so its speed does not matter.
            with torch.enable_grad():
                y = F.local_response_norm(x, size, alpha, beta, ctx.lrn_k)
            return torch.autograd.grad(y, x, g, create_graph=True)[0], None, None, None, None
        dtype, x = x.dtype, _at_least_float32(x)
        gs = _at_least_float32(g) * scale
        # channel c's window holds j = c - before .. c + after, so j is in the windows of
        # c = j - after .. j + before: the transposed window swaps the two reaches
        t = torch.mul(gs, x).div_(d)
        back = _window_sum(t, after, before)
        grad = gs.addcmul_(back, x, value=-2.0 * alpha * beta / size)
        return grad.to(dtype), None, None, None, None


def local_response_norm(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> torch.Tensor:
    """`torch.nn.functional.local_response_norm`, same arguments, shapes and result."""
    if x.dim() < 3:
        raise ValueError(f"local_response_norm expects an N x C x ... input of 3 or more dims, got {x.dim()}")
    if size < 1:
        raise ValueError(f"local_response_norm: size is the channel window and must be >= 1, got {size}")
    if x.numel() == 0:
        return x  # as torch's does
    return _LRN.apply(x, size, alpha, beta, k)


class LocalResponseNorm(nn.LocalResponseNorm):
    """`nn.LocalResponseNorm` (same constructor and attributes) with a fast CPU backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)
