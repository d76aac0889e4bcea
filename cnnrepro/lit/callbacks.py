"""Training callbacks."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from cnnrepro.errors import UserError, unwritable
from cnnrepro.models import count_macs, create_model

__all__ = ["Throughput", "RunHistory", "EpochMetricsResume", "GPU_PEAK_TFLOPS", "model_flops_per_image", "peak_flops"]

# Dense peaks in TFLOP/s by the arithmetic a run's precision uses, for model FLOPs utilisation:
# "bf16" the BF16/FP16 tensor cores (the same peak on these parts), "tf32" the TF32 tensor cores,
# "fp32" the plain FP32 units. Values without 2:4 sparsity (the datasheets' headline figures are
# often the sparse ones, twice these). Sources, as tabulated from NVIDIA's datasheets by
# glennklockwood.com/garden/processors/A100 and .../h100 ("theoretical maximum performance"):
#   A100 (SXM4 and PCIe; nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf): FP32 19.5, TF32 156, BF16 312;
#   H100 SXM5: FP32 66.9, TF32 494.7, BF16 989.4; H200 SXM: the H100 SXM5's GH100 compute with more
#   memory (same page, and itkb.uw.cz "NVIDIA H200 vs B300": BF16 dense ~989).
# Key order matters: the first key contained in the device name wins. The PCIe and NVL variants of
# H100/H200 run at lower clocks with other peaks: unlisted, so they get no MFU rather than a wrong one.
GPU_PEAK_TFLOPS = {
    "H100 PCIe": None, "H100 NVL": None, "H200 NVL": None, "GH200": None,
    "H200": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
}


def model_flops_per_image(arch: str, num_classes: int, chw: tuple[int, int, int]) -> int:
    """Training FLOPs per image: 3 x forward (forward + backward) x 2 FLOPs per MAC."""
    with torch.device("meta"):  # shapes only
        m = create_model(arch, num_classes=num_classes)
    return 6 * count_macs(m, chw)


def arithmetic(precision: str) -> str | None:
    """The tensor-core arithmetic a Lightning precision setting computes convolutions in."""
    p = str(precision)
    if p.startswith(("bf16", "16")):
        return "bf16"
    if p.startswith("32"):
        # cuDNN convolutions use TF32 tensor cores unless switched off (PyTorch's default is on)
        return "tf32" if torch.backends.cudnn.allow_tf32 else "fp32"
    return None  # fp64 and others: no peak listed


def peak_flops(device_name: str, precision: str) -> float | None:
    """FLOP/s peak of the named GPU at the arithmetic of ``precision`` (None: unknown, no MFU)."""
    kind = arithmetic(precision)
    for key, peaks in GPU_PEAK_TFLOPS.items():
        if key in device_name:
            return peaks[kind] * 1e12 if peaks and kind in peaks else None
    return None


def _peak_flops(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    return peak_flops(torch.cuda.get_device_name(device), precision)


class Throughput(pl.Callback):
    """Images per second and the fraction of step time spent waiting for data.

    Host wall-clock between batch boundaries, averaged over each logging interval. We do not use
    Lightning's ThroughputMonitor because it synchronises CUDA on every step; in steady state the
    host is throttled by the device queue, so interval averages are accurate without a sync.
    """

    def __init__(self):
        self._t_end = None  # end of the previous step
        self._wait = 0.0
        self._busy = 0.0
        self._images = 0
        self._flops_per_image = None
        self._peak = None
        self.totals = {"images": 0, "busy": 0.0, "wait": 0.0}  # whole run, for the run record

    def on_fit_start(self, trainer, pl_module):
        self._peak = _peak_flops(trainer.strategy.root_device, str(trainer.precision))

    def on_train_epoch_start(self, trainer, pl_module):
        self._t_end = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = time.perf_counter()
        if self._t_end is not None:
            self._wait += now - self._t_end
            self.totals["wait"] += now - self._t_end
        self._t_start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.perf_counter()
        self._busy += now - self._t_start
        self._images += batch[0].shape[0]
        self.totals["busy"] += now - self._t_start
        self.totals["images"] += batch[0].shape[0]
        if self._peak is not None and self._flops_per_image is None:
            hp = pl_module.hparams
            self._flops_per_image = model_flops_per_image(hp.arch, hp.num_classes, tuple(batch[0].shape[1:]))
        self._t_end = now
        if (trainer.global_step % trainer.log_every_n_steps == 0 or batch_idx + 1 == trainer.num_training_batches) \
                and self._busy > 0:
            total = self._busy + self._wait
            ips = self._images / total
            metrics = {
                "perf/images_per_sec_device": ips,
                "perf/images_per_sec": ips * trainer.world_size,
                "perf/data_wait_fraction": self._wait / total,
            }
            if self._flops_per_image:
                metrics["perf/mfu"] = ips * self._flops_per_image / self._peak
            pl_module.log_dict(
                metrics,
                on_step=True, on_epoch=False, rank_zero_only=True,
            )
            self._wait = self._busy = 0.0
            self._images = 0

    def summary(self, world_size: int, totals: dict | None = None) -> dict:
        """Whole-run figures for the run record (steps of this rank, scaled to the world).

        ``totals``: images, busy and wait summed over every attempt of a resumed run (``RunHistory``);
        default this process's own.
        """
        totals = totals or self.totals
        t = totals["busy"] + totals["wait"]
        if not t:
            return {}
        ips = totals["images"] / t
        out = {"images_per_sec_device": round(ips, 2), "images_per_sec": round(ips * world_size, 2),
               "data_wait_fraction": round(totals["wait"] / t, 4)}
        if self._flops_per_image:
            out["mfu"] = round(ips * self._flops_per_image / self._peak, 4)
            out["mfu_peak_tflops"] = round(self._peak / 1e12, 1)  # the precision's peak it divides by
        return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _end_reason(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "signal: SIGINT"
    if isinstance(e, SystemExit):  # cnnrepro's Preempted and Lightning's SIGTERMException are SystemExits
        return f"signal: {type(e).__name__} (exit {e.code})"
    return f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]


class RunHistory(pl.Callback):
    """Every attempt of a fit (a first start and each resume), kept in ``attempts.json`` and the checkpoint.

    A requeued job's run is several processes; the record must describe all of them, not the last
    one (issue 16.4). Each attempt: start and end (ISO time), ``reason`` it ended ("finished",
    "signal: ...", "error: ...", or "killed" when the next start finds it never closed: a SIGKILL or a
    node loss; its end and steps are then those of its last checkpoint), the global steps it began
    at and ended at, its wall seconds, and its throughput totals (images, busy and data-wait seconds).
    Rank 0 writes the file at every checkpoint and at the end; the checkpoint carries the same list
    so a run folder that lost the file still knows the earlier attempts.

    Args:
        path: the run's ``attempts.json``.
        t_start: ``time.time()`` when this process's command started (its attempt's start).
    """

    def __init__(self, path: str | Path, t_start: float):
        self.path = Path(path)
        self.t_start = t_start
        self.attempts: list[dict[str, Any]] = []
        self._from_ckpt: list[dict[str, Any]] = []
        self._current: dict[str, Any] | None = None
        self._throughput = None

    # -- the file ----------------------------------------------------------------------------
    def _read(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, json.JSONDecodeError) as e:
            print(f"cnnrepro: WARNING {self.path} unreadable ({e}); earlier attempts come from the checkpoint",
                  flush=True)
            return []
        return data.get("attempts", []) if isinstance(data, dict) else []

    def _write(self, trainer) -> None:
        if not trainer.is_global_zero:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            tmp.write_text(json.dumps({"attempts": self.attempts}, indent=1))
            os.replace(tmp, self.path)
        except OSError as e:
            raise unwritable(self.path, "attempt history", e) from None

    def _update(self, trainer, end: str | None = None) -> None:
        cur = self._current
        if cur is None:
            return
        if cur["start_step"] is None:
            cur["start_step"] = trainer.global_step
        cur["end_time"] = _now()
        cur["end_step"] = trainer.global_step
        cur["wall_seconds"] = round(time.time() - self.t_start, 1)
        if self._throughput is not None:
            cur["throughput_totals"] = {k: round(v, 4) for k, v in self._throughput.totals.items()}
        if end is not None:
            cur["reason"] = end
            self._current = None

    # -- hooks -------------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module):
        # after the callbacks' states are restored (load_state_dict), before the loops' (global_step):
        # the folder's file first, else the checkpoint's copy
        self._throughput = next((c for c in trainer.callbacks if isinstance(c, Throughput)), None)
        earlier = self._read() or self._from_ckpt
        for a in earlier:
            if a.get("reason") == "running":
                a["reason"] = "killed"  # inferred now: it never closed (SIGKILL, node loss, OOM killer)
        self._current = {"attempt": len(earlier),
                         "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.t_start)),
                         "end_time": None, "reason": "running", "start_step": None, "end_step": None,
                         "wall_seconds": None, "host": platform.node(),
                         "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                         "slurm_restart_count": os.environ.get("SLURM_RESTART_COUNT")}
        self.attempts = [*earlier, self._current]
        self._write(trainer)

    def on_train_start(self, trainer, pl_module):
        self._update(trainer)  # the restored global_step is this attempt's start_step
        self._write(trainer)

    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "_trainer", None)
        if trainer is not None:
            self._update(trainer)
            self._write(trainer)  # the folder's copy advances with each checkpoint (a kill loses less)
        return {"attempts": [dict(a) for a in self.attempts]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._from_ckpt = list(state_dict.get("attempts") or [])

    def setup(self, trainer, pl_module, stage):
        self._trainer = trainer

    def on_exception(self, trainer, pl_module, exception):
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        if isinstance(exception, SystemExit) and trainer.training and progress.processed > progress.completed:
            # a signal stop (lit/preemption.py) raised in on_train_batch_end, after the step was
            # trained and checkpointed but before Lightning logs its metrics: log them, or the step
            # has no row in metrics.csv (the resumed run starts after it)
            trainer._logger_connector.update_train_step_metrics()
        if self._current is not None:
            self._update(trainer, end=_end_reason(exception))
            try:
                self._write(trainer)
            except UserError:  # the folder is unwritable: the exception that ended the attempt says why
                pass

    def on_fit_end(self, trainer, pl_module):
        if self._current is not None:
            self._update(trainer, end="finished")
            self._write(trainer)

    def totals(self) -> dict[str, Any]:
        """Wall seconds and throughput totals summed over every attempt (for the run record)."""
        tt = {"images": 0, "busy": 0.0, "wait": 0.0}
        for a in self.attempts:
            for k in tt:
                tt[k] += (a.get("throughput_totals") or {}).get(k, 0)
        return {"wall_seconds": round(sum(a.get("wall_seconds") or 0.0 for a in self.attempts), 1),
                "throughput_totals": tt}


class EpochMetricsResume(pl.Callback):
    """The epoch-averaged training metrics of an epoch resumed mid-way cover the whole epoch.

    Lightning's checkpoint keeps neither its running epoch means (``train/loss`` logged with
    ``on_epoch=True``) nor the states of torchmetrics objects (``train/top1``), so after a resume
    at batch k the epoch's ``train/loss_epoch`` and ``train/top1`` averaged only batches k..end and
    ``metrics.csv`` differed from the uninterrupted run's. A mid-epoch checkpoint carries both here
    (each rank's, gathered as ``lit/resume.py`` does the RNG states) and the resumed epoch starts
    from them. An end-of-epoch checkpoint carries nothing: the next epoch starts from zero anyway.
    """

    def __init__(self):
        self._trainer = None
        self._restored: list | None = None
        self._pending_results: dict | None = None

    def setup(self, trainer, pl_module, stage):
        self._trainer = trainer

    @staticmethod
    def _metrics(pl_module) -> dict:
        from torchmetrics import Metric

        return {n: m for n, m in pl_module.named_modules() if isinstance(m, Metric) and n}

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        if trainer is None or not trainer.training or trainer.fit_loop.epoch_loop._num_ready_batches_reached():
            return {}
        results = {}
        for key, rm in trainer.fit_loop.epoch_loop._results.items():
            if rm.is_tensor and rm.meta.on_epoch:
                results[key] = {"value": rm.value.detach().cpu().clone(),
                                "cumulated_batch_size": getattr(rm, "cumulated_batch_size", None)}
        mine = {"results": results,
                "metrics": {n: ({k: (v.detach().cpu().clone() if torch.is_tensor(v) else [t.cpu() for t in v])
                                 for k, v in m.metric_state.items()}, m._update_count)
                            for n, m in self._metrics(trainer.lightning_module).items()}}
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            states: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(states, mine)
        else:
            states = [mine]
        return {"ranks": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict.get("ranks")

    def on_train_start(self, trainer, pl_module):
        states, self._restored = self._restored, None
        if not states or len(states) != trainer.world_size:
            return  # another world size: each rank's partial epoch is not this run's rank's
        mine = states[trainer.global_rank]
        metrics = self._metrics(pl_module)
        for name, (state, count) in mine["metrics"].items():
            m = metrics.get(name)
            if m is None:
                continue
            for k, v in state.items():
                setattr(m, k, v.to(m.device) if torch.is_tensor(v) else [t.to(m.device) for t in v])
            m._update_count = count
            m._computed = None
        self._pending_results = mine["results"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # the epoch's result entries exist once the first resumed step has logged: add what the
        # batches before the checkpoint summed
        pending, self._pending_results = self._pending_results, None
        if not pending:
            return
        for key, saved in pending.items():
            rm = trainer.fit_loop.epoch_loop._results.get(key)
            if rm is None:
                continue
            value = saved["value"].to(rm.value.device, rm.value.dtype)
            if rm.meta.is_mean_reduction or rm.meta.is_sum_reduction:
                rm.value = rm.value + value
                if saved["cumulated_batch_size"] is not None and hasattr(rm, "cumulated_batch_size"):
                    rm.cumulated_batch_size = rm.cumulated_batch_size + saved["cumulated_batch_size"].to(
                        rm.cumulated_batch_size.device)
            elif rm.meta.is_max_reduction:
                rm.value = torch.maximum(rm.value, value)
            elif rm.meta.is_min_reduction:
                rm.value = torch.minimum(rm.value, value)
