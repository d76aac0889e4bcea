"""Issue 8's fast paths give the plain path's numbers, and the benchmark command runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnrepro.lit.module import ClassifierModule


def _losses(steps=3, **kw):
    torch.manual_seed(0)
    m = ClassifierModule(arch="resnet18", num_classes=10, lr_schedule="constant", **kw)
    opt = torch.optim.SGD(m.parameters(), lr=1e-3)  # small steps: compare the step, not chaos
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(4, 3, 64, 64, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(steps)]
    out = []
    m.train()
    for x, y in data:
        loss, _ = m._loss(m._run_model(m._input(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(loss.item())
    return out, m


def test_channels_last_gives_the_same_losses_and_reaches_the_model_as_nhwc():
    base, _ = _losses()
    cl, m = _losses(channels_last=True)
    assert cl == pytest.approx(base, rel=1e-3)
    seen = {}
    h = m.model.conv1.register_forward_pre_hook(lambda mod, inp: seen.update(x=inp[0]))
    m._run_model(m._input(torch.randn(2, 3, 64, 64)))
    h.remove()
    assert seen["x"].is_contiguous(memory_format=torch.channels_last)
    assert m.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    # checkpoint keys are the plain model's
    assert all(k.startswith(("model.", "val_", "train_")) for k in m.state_dict())


def test_bf16_autocast_on_cpu_stays_within_bf16_tolerance():
    base, _ = _losses()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf, _ = _losses()
    # bf16 keeps ~3 significant digits: the first loss (same weights) agrees to 2 %, later ones
    # drift a little further as rounding in the updates accumulates
    assert bf[0] == pytest.approx(base[0], rel=2e-2)
    assert bf == pytest.approx(base, rel=6e-2)


@pytest.mark.slow
def test_compiled_model_matches_eager():
    base, _ = _losses(steps=2)
    comp, m = _losses(steps=2, compile=True)
    assert comp == pytest.approx(base, rel=1e-3)
    assert not any("_orig_mod" in k for k in m.state_dict())


@pytest.mark.slow
def test_bench_train_runs_and_reports_a_ratio(tmp_path):
    from cnnrepro.data.demo import build_demo_tree
    from cnnrepro.data.shards import write_shards

    build_demo_tree(tmp_path / "tree", train_per_class=2, val_per_class=1)
    write_shards(tmp_path / "tree", tmp_path / "shards", samples_per_shard=8, workers=1, progress=False)
    exe = str(Path(sys.executable).with_name("cnnrepro"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    p = subprocess.run(
        [exe, "bench", "train", str(Path(__file__).resolve().parents[2] / "recipes" / "alexnet.yaml"),
         "--data.root", str(tmp_path / "shards"), "--data.batch_size", "4", "--data.num_workers", "0",
         "--steps", "4", "--warmup", "1", "--rounds", "1", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout[p.stdout.index("{"):])
    assert res["model"] == "alexnet" and res["batch_size"] == 4
    assert res["lightning_images_per_sec"] > 0 and res["plain_images_per_sec"] > 0
    assert res["ratio"] == pytest.approx(res["lightning_images_per_sec"] / res["plain_images_per_sec"])
    assert set(res["fast_paths"]) == {"fp32", "channels_last", "bf16 autocast", "channels_last + bf16"}
    # issue 15: a model with LRN gets the LRN table (layer and step, torch's vs ours)
    lrn = res["lrn"]
    assert [r["input"] for r in lrn["layers"]] == [[4, 96, 55, 55], [4, 256, 27, 27]]
    assert set(lrn["step"]) == {"torch", "ours", "none"} and lrn["step_speedup"] > 0
