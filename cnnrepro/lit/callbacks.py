"""Training callbacks."""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch

from cnnrepro.models import count_macs, create_model

__all__ = ["Throughput", "GPU_PEAK_TFLOPS", "model_flops_per_image", "peak_flops"]

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

    def summary(self, world_size: int) -> dict:
        """Whole-run figures for the run record (steps of this rank, scaled to the world)."""
        t = self.totals["busy"] + self.totals["wait"]
        if not t:
            return {}
        ips = self.totals["images"] / t
        out = {"images_per_sec_device": round(ips, 2), "images_per_sec": round(ips * world_size, 2),
               "data_wait_fraction": round(self.totals["wait"] / t, 4)}
        if self._flops_per_image:
            out["mfu"] = round(ips * self._flops_per_image / self._peak, 4)
            out["mfu_peak_tflops"] = round(self._peak / 1e12, 1)  # the precision's peak it divides by
        return out
