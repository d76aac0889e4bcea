"""The project's LocalResponseNorm against torch's (issue 15): the layer alone at the model's
own LRN input shapes, forward + backward, and the whole plain training step of the model with
each. Both sides run on the same inputs in alternation, several rounds; medians are reported,
so a loaded machine shifts both alike and the ratio (torch's time / ours) is the figure.

Used by `cnnrepro bench train` for models with LRN; `cnnrepro bench lrn` times
the paper AlexNet on random batches without a recipe or data (`--help`).
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from cnnrepro.models._lrn import LocalResponseNorm, local_response_norm

__all__ = ["bench_lrn", "lrn_shapes", "with_lrn", "format_lrn"]


def lrn_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[tuple[int, ...], nn.LocalResponseNorm]]:
    """(input shape, layer) of every LRN layer, in forward order, for a batch like x."""
    seen, hooks = [], []
    for m in model.modules():
        if isinstance(m, nn.LocalResponseNorm):
            hooks.append(m.register_forward_hook(lambda mod, inp, out: seen.append((tuple(inp[0].shape), mod))))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def with_lrn(model: nn.Module, impl: str) -> nn.Module:
    """A copy of model whose LRN layers are torch's ("torch"), ours ("ours") or removed ("none",
    only to measure LRN's share of the step: that model is not the paper's)."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, m in parent.named_children():
            if isinstance(m, nn.LocalResponseNorm):
                new = {"torch": lambda: nn.LocalResponseNorm(m.size, m.alpha, m.beta, m.k),
                       "ours": lambda: LocalResponseNorm(m.size, m.alpha, m.beta, m.k),
                       "none": nn.Identity}[impl]()
                setattr(parent, name, new)
    return model


def _time_layer(fn, x: torch.Tensor, g: torch.Tensor, layer: nn.LocalResponseNorm, reps: int) -> float:
    """seconds per forward + backward"""
    t0 = time.perf_counter()
    for _ in range(reps):
        xi = x.detach().requires_grad_()
        fn(xi, layer.size, layer.alpha, layer.beta, layer.k).backward(g)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def bench_lrn(model: nn.Module, batches, step_fn, *, rounds: int = 3, layer_reps: int = 3) -> dict:
    """Layer and training-step timings. step_fn(model, batches) -> images/s of a training loop
    (the caller's, e.g. `cnnrepro bench train`'s plain loop)."""
    layers = lrn_shapes(copy.deepcopy(model), batches[0][0])
    res = {"layers": [], "step": {}}
    gen = torch.Generator(device=batches[0][0].device).manual_seed(0)
    for shape, layer in layers:
        dev = batches[0][0].device
        # post-ReLU-like input: LRN follows a ReLU in every net that has it
        x = torch.randn(shape, generator=gen, device=dev).relu_()
        g = torch.randn(shape, generator=gen, device=dev)
        for fn in (F.local_response_norm, local_response_norm):  # warm-up (allocator, threads)
            _time_layer(fn, x, g, layer, 1)
        t_torch, t_ours = [], []
        for _ in range(rounds):
            t_torch.append(_time_layer(F.local_response_norm, x, g, layer, layer_reps))
            t_ours.append(_time_layer(local_response_norm, x, g, layer, layer_reps))
        a, b = statistics.median(t_torch), statistics.median(t_ours)
        res["layers"].append({"input": list(shape), "size": layer.size, "torch_ms": 1e3 * a, "ours_ms": 1e3 * b,
                              "speedup": a / b})
    ips = {"torch": [], "ours": [], "none": []}
    for _ in range(rounds):
        for impl in ips:
            ips[impl].append(step_fn(with_lrn(model, impl), batches))
    n = batches[0][0].shape[0]
    for impl, v in ips.items():
        med = statistics.median(v)
        res["step"][impl] = {"images_per_sec": med, "sec_per_step": n / med}
    res["step_speedup"] = res["step"]["torch"]["sec_per_step"] / res["step"]["ours"]["sec_per_step"]
    for impl in ("torch", "ours"):
        s = res["step"][impl]["sec_per_step"]
        res["step"][impl]["lrn_share"] = (s - res["step"]["none"]["sec_per_step"]) / s
    return res


def format_lrn(res: dict) -> str:
    lines = [f"{'LRN forward+backward':32s} {'torch ms':>9s} {'ours ms':>9s} {'speedup':>8s}"]
    for r in res["layers"]:
        lines.append(f"{'x'.join(map(str, r['input'])) + ', n=' + str(r['size']):32s} "
                     f"{r['torch_ms']:9.1f} {r['ours_ms']:9.1f} {r['speedup']:8.2f}")
    lines.append(f"\n{'training step (plain loop)':32s} {'images/s':>9s} {'s/step':>9s} {'LRN share':>9s}")
    names = {"torch": "torch's LocalResponseNorm", "ours": "cnnrepro LocalResponseNorm",
             "none": "LRN removed (not the paper)"}
    for impl, v in res["step"].items():
        share = f"{100 * v['lrn_share']:8.1f}%" if "lrn_share" in v else ""
        lines.append(f"{names[impl]:32s} {v['images_per_sec']:9.2f} {v['sec_per_step']:9.3f} {share:>9s}")
    lines.append(f"step speed-up, ours vs torch's LRN: {res['step_speedup']:.3f}")
    return "\n".join(lines)
