"""Model FLOPs utilisation divides by the peak of the arithmetic the run actually uses."""

import torch

from cnnrepro.lit.callbacks import peak_flops


def test_peak_follows_the_precision(monkeypatch):
    # NVIDIA datasheet peaks, dense (sources in cnnrepro/lit/callbacks.py)
    assert peak_flops("NVIDIA A100-SXM4-80GB", "bf16-mixed") == 312e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", "16-mixed") == 312e12
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # PyTorch's default: convolutions in TF32
    assert peak_flops("NVIDIA A100-SXM4-80GB", "32-true") == 156e12
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert peak_flops("NVIDIA A100-SXM4-80GB", "32-true") == 19.5e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", "64-true") is None


def test_the_h200_is_known_and_variants_with_other_peaks_are_not_guessed(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert peak_flops("NVIDIA H200", "bf16-mixed") == 989.4e12
    assert peak_flops("NVIDIA H200", "32-true") == 494.7e12
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16-mixed") == 989.4e12
    for name in ("NVIDIA H100 PCIe", "NVIDIA H200 NVL", "NVIDIA GH200 480GB", "Tesla V100-SXM2-16GB"):
        assert peak_flops(name, "bf16-mixed") is None, name
