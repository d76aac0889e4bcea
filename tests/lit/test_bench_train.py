"""`cnnrepro bench train` (issue 15): the leg with `cnnrepro fit`'s own callbacks, and the LRN table.

Structure only, at a tiny size (batch 2, 3 steps): no timing is asserted.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnrepro.lit.bench import render
from cnnrepro.lit.cli import run_callbacks
from cnnrepro.lit.runs import RunFolder

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_train_reports_the_callbacks_leg_and_the_lrn_effect(tmp_path, capsys):
    from cnnrepro.data.demo import build_demo_tree
    from cnnrepro.data.shards import write_shards

    build_demo_tree(tmp_path / "tree", train_per_class=1, val_per_class=1)
    write_shards(tmp_path / "tree", tmp_path / "shards", samples_per_shard=8, workers=1, progress=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    (tmp_path / "ckpts").mkdir()
    p = subprocess.run(
        [str(Path(sys.executable).with_name("cnnrepro")), "bench", "train", str(REPO / "recipes" / "alexnet.yaml"),
         "--data.root", str(tmp_path / "shards"), "--data.batch_size", "2", "--data.num_workers", "0",
         "--steps", "3", "--warmup", "1", "--rounds", "1", "--no-fast-paths", "--ckpt-dir", str(tmp_path / "ckpts"),
         "--run.ckpt_every_n_steps", "1", "--json"],
        check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout[p.stdout.index("{"):])
    assert res["model"] == "alexnet" and res["batch_size"] == 2 and res["input"] == [3, 227, 227]
    # three legs, each a rate, and the ratios are theirs
    for k in ("plain_images_per_sec", "lightning_images_per_sec", "callbacks_images_per_sec"):
        assert res[k] > 0, k
    assert res["ratio"] == pytest.approx(res["lightning_images_per_sec"] / res["plain_images_per_sec"])
    assert res["ratio_callbacks"] == pytest.approx(res["callbacks_images_per_sec"] / res["plain_images_per_sec"])
    # the leg ran fit's own set: the same callbacks in the same order, and it wrote fit's checkpoints
    fit_set = [type(c).__name__ for c in run_callbacks("fit", RunFolder.open("fit", runs_dir=tmp_path / "r", group="a"),
                                                       ckpt_every_n_steps=1, t_start=0.0)]
    assert sorted(res["callbacks"]) == sorted(fit_set)
    assert res["checkpoints"] == ["best-epoch000.ckpt", "last.ckpt"]
    assert res["checkpoint_dir"] == str(tmp_path / "ckpts") and not any((tmp_path / "ckpts").iterdir())  # cleaned up
    # 10 training images at batch 2: an epoch of the recipe is 5 steps, and its ratio spreads the epoch end over them
    assert res["steps_per_epoch"] == 5
    assert set(res["epoch_end_sec"]) == {"bare", "callbacks"}
    extra = max(0.0, res["epoch_end_sec"]["callbacks"] - res["epoch_end_sec"]["bare"])
    assert res["epoch_end_extra_sec"] == pytest.approx(extra)
    n = 5 * 2
    assert res["ratio_callbacks_per_epoch"] == pytest.approx(
        n / (n / res["callbacks_images_per_sec"] + extra) / res["plain_images_per_sec"])
    # the paper AlexNet has LRN: torch's LocalResponseNorm vs ours, layers at the model's own shapes and the step
    lrn = res["lrn"]
    assert [r["input"] for r in lrn["layers"]] == [[2, 96, 55, 55], [2, 256, 27, 27]]
    assert set(lrn["step"]) == {"torch", "ours", "none"}
    assert lrn["step_speedup"] == pytest.approx(lrn["step"]["torch"]["sec_per_step"] / lrn["step"]["ours"]["sec_per_step"])
    # the human form names every leg and the LRN comparison
    render(res)
    out = capsys.readouterr().out
    for row in ("plain PyTorch loop", "Lightning, bare Trainer", "Lightning + cnnrepro callbacks",
                "over one of this recipe's epochs (5 steps)", "torch's LocalResponseNorm", "cnnrepro LocalResponseNorm",
                "step speed-up, ours vs torch's LRN"):
        assert row in out, row
