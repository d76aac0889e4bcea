"""The practical analysis of Canziani, Paszke & Culurciello 2016 (arXiv:1605.07678), per model:
parameters, operations, peak activation memory of a forward pass, and inference latency and
throughput by batch size on the current device.

How each number is measured (printed with the table and stored in every record):

- parameters: every parameter tensor of the model built for 1000 classes;
- MACs: ``cnnrepro.models.count_macs`` (conv and FC multiply-accumulates, one image, the
  paper's input size);
- peak activation memory: on CUDA, ``torch.cuda.max_memory_allocated`` during one forward minus
  the memory held before it (weights and input); on the CPU, the peak of the running sum of the
  allocator's allocation/free events recorded by ``torch.profiler`` (``profile_memory=True``)
  during one forward, i.e. bytes allocated by the forward and alive at the same time (activations
  and temporary buffers, not the weights or the input). Both are under ``torch.no_grad()``, as
  inference runs, so no activation is kept for a backward pass;
- latency: wall time of one forward of a batch (``time.perf_counter``, CUDA synchronised), after
  warm-up iterations; we report the median and the minimum over ``repeats``; throughput is batch
  size / median latency. Canziani et al. measured on a Jetson TX1 in Torch7; the numbers here are
  for this machine, which the record names (CPU model, threads, GPU).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from cnnrepro.models import count_macs, count_params, create_model, model_info
from cnnrepro.results.records import _cpu_name, git_commit

__all__ = ["profile_model", "peak_forward_bytes", "render_profile_table", "write_profile_record", "MEMORY_METHOD"]

MEMORY_METHOD = {
    "cpu": "peak running sum of allocator events in one no_grad forward (torch.profiler profile_memory)",
    "cuda": "torch.cuda.max_memory_allocated during one no_grad forward minus memory held before it",
}


@torch.no_grad()
def peak_forward_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes allocated by one forward pass and alive at its peak (see module docstring)."""
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        before = torch.cuda.memory_allocated(x.device)
        model(x)
        torch.cuda.synchronize(x.device)
        return torch.cuda.max_memory_allocated(x.device) - before

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(x)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type().name == "CPU"]
    cur = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _latencies(model, x, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        model(x)
    _sync(x.device)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        model(x)
        _sync(x.device)
        out.append(time.perf_counter() - t)
    return out


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)

    return f"{_cpu_name()} ({torch.get_num_threads()} threads)"


def profile_model(
    name: str,
    *,
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64),
    repeats: int = 10,
    warmup: int = 2,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> dict:
    """One profile record of registry model ``name`` (eval mode, fp32, random weights and input)."""

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    info = model_info(name)
    torch.manual_seed(seed)
    model = create_model(name, num_classes=info.num_classes).eval().to(device)
    rec = {
        "model": name,
        "input_size": list(info.input_size),
        "params": count_params(model),
        "macs": count_macs(model, info.input_size),
        "device": str(device),
        "device_name": _device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "dtype": "float32",
        "repeats": repeats,
        "warmup": warmup,
        "memory_method": MEMORY_METHOD["cuda" if device.type == "cuda" else "cpu"],
        "batches": [],
    }
    for bs in batch_sizes:
        x = torch.randn(bs, *info.input_size, device=device)
        lat = _latencies(model, x, repeats, warmup)
        med = statistics.median(lat)
        rec["batches"].append({
            "batch_size": bs,
            "latency_ms_median": round(med * 1e3, 3),
            "latency_ms_min": round(min(lat) * 1e3, 3),
            "images_per_s": round(bs / med, 2),
            "peak_activation_bytes": peak_forward_bytes(model, x),
        })
        del x
    return rec


def write_profile_record(rec: dict, out_dir: str | Path) -> Path:

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rec = {"written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_commit": git_commit(), **rec}
    path = out_dir / f"{rec['model']}-{rec['device'].replace(':', '')}.json"
    path.write_text(json.dumps(rec, indent=1))
    return path


def render_profile_table(recs: list[dict]) -> str:
    """Canziani et al.-style table: per model, latency (ms per batch) and memory by batch size."""
    sizes = sorted({b["batch_size"] for r in recs for b in r["batches"]})
    head = ("| model | params (M) | GMACs | " + " | ".join(f"ms @{s}" for s in sizes) + " | "
            + " | ".join(f"img/s @{s}" for s in sizes) + " | " + " | ".join(f"act. MiB @{s}" for s in sizes) + " |\n")
    head += "|---|---:|---:|" + "---:|" * (3 * len(sizes)) + "\n"
    lines = []
    for r in recs:
        by = {b["batch_size"]: b for b in r["batches"]}

        def cell(s, key, fmt):
            return fmt(by[s][key]) if s in by else ""

        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.2f} | {r['macs'] / 1e9:.3f} | "
            + " | ".join(cell(s, "latency_ms_median", lambda v: f"{v:.1f}") for s in sizes) + " | "
            + " | ".join(cell(s, "images_per_s", lambda v: f"{v:.1f}") for s in sizes) + " | "
            + " | ".join(cell(s, "peak_activation_bytes", lambda v: f"{v / 2**20:.1f}") for s in sizes) + " |"
        )
    devices = sorted({r["device_name"] for r in recs})
    foot = (f"\nDevice: {'; '.join(devices)}. fp32, eval mode, no_grad; latency = median wall time of one batch "
            f"forward. Memory: {'; '.join(sorted({r['memory_method'] for r in recs}))}.\n")
    return head + "\n".join(lines) + "\n" + foot
