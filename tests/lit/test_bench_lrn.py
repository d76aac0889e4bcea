"""The LRN benchmark (issue 15) runs, times the model's own LRN shapes, and swaps the layers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnrepro.lit.bench_lrn import lrn_shapes, with_lrn
from cnnrepro.models import create_model
from cnnrepro.models._lrn import LocalResponseNorm


def test_with_lrn_swaps_every_lrn_layer_and_keeps_the_rest():
    m = create_model("alexnet", num_classes=10)
    for impl, kind in (("torch", nn.LocalResponseNorm), ("ours", LocalResponseNorm), ("none", nn.Identity)):
        c = with_lrn(m, impl)
        got = [type(c.features.norm1), type(c.features.norm2)]
        assert got == [kind, kind], impl
        assert c.state_dict().keys() == m.state_dict().keys()
    assert type(m.features.norm1) is LocalResponseNorm  # the original is untouched
    t = with_lrn(m, "torch").features.norm1
    assert (t.size, t.alpha, t.beta, t.k) == (5, 5e-4, 0.75, 2.0)


def test_lrn_shapes_are_the_models_own():
    shapes = [s for s, _ in lrn_shapes(create_model("alexnet", num_classes=10), torch.zeros(2, 3, 227, 227))]
    assert shapes == [(2, 96, 55, 55), (2, 256, 27, 27)]  # Fig. 2: after conv1 and conv2


@pytest.mark.slow
def test_command_prints_json_with_both_legs():
    p = subprocess.run([str(Path(sys.executable).with_name("cnnrepro")), "bench", "lrn", "--batch-size", "2", "--steps", "2",
                        "--warmup", "1", "--rounds", "1", "--json"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout)
    assert [r["input"] for r in res["layers"]] == [[2, 96, 55, 55], [2, 256, 27, 27]]
    assert all(r["torch_ms"] > 0 and r["ours_ms"] > 0 for r in res["layers"])
    assert set(res["step"]) == {"torch", "ours", "none"}
    assert res["step_speedup"] == pytest.approx(res["step"]["torch"]["sec_per_step"] / res["step"]["ours"]["sec_per_step"])


def test_command_refuses_a_model_without_lrn():
    p = subprocess.run([str(Path(sys.executable).with_name("cnnrepro")), "bench", "lrn", "--model", "alexnet_owt"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and "--model alexnet_owt has no LocalResponseNorm" in p.stderr
