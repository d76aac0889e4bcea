"""Every paper recipe: `cnnrepro recipes check` passes, bad recipes are caught, and each recipe
trains two steps and validates on the demo data (MNIST subset for the MNIST track), in-process."""

import gc
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from cnnrepro.cli import main
from cnnrepro.models import list_models, model_info
from cnnrepro.commands.recipes import main as recipes_main
from cnnrepro.recipes import check_one

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"

# The smallest input each family allows, where the recipe's size is not the point of this test
# (global pooling heads); nets with fixed-size FC heads run at their own size.
SMALL = {
    **{n: 64 for n in list_models() if n.startswith(("resnet", "preact_", "resnext", "wide_", "se_", "res2net",
                                                        "densenet", "mobilenet", "shufflenet", "efficientnet",
                                                        "squeezenet", "nin", "enet", "fractalnet"))},
}


@pytest.mark.slow
def test_recipes_check_passes(capsys):
    assert recipes_main("recipes", ["check"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "0 failing, 0 missing" in out


def test_check_catches_a_bad_recipe(tmp_path):
    for f in ("base.yaml", "resnet_base.yaml"):
        shutil.copy(RECIPES / f, tmp_path / f)
    good = (RECIPES / "resnet50.yaml").read_text()
    (tmp_path / "resnet50.yaml").write_text(good)
    assert check_one(tmp_path / "resnet50.yaml", set(list_models())).errors == []
    # no header, wrong crop, an uncited value, a milestone past the end
    bad = "\n".join(ln for ln in good.splitlines() if not ln.startswith("#"))
    bad += "\ndata:\n  crop: 200\n  resize: 256          # fine\ntrainer:\n  max_epochs: 10\n"
    (tmp_path / "resnet50.yaml").write_text(bad)
    errs = "\n".join(check_one(tmp_path / "resnet50.yaml", set(list_models())).errors)
    assert "no provenance header" in errs
    assert "value without a source comment: 'crop: 200'" in errs
    assert "data.crop 200 is not resnet50's input size 224" in errs
    assert "plateau_patience 5 >= max_epochs" not in errs  # 5 < 10: consistent
    (tmp_path / "resnet50.yaml").write_text(good + "  lr_schedule: multistep  # x\n  lr_milestones: [30, 200]  # x\n")
    (tmp_path / "resnet50.yaml").write_text(good.replace("  arch: resnet50", "  arch: resnet50\n  lr_schedule: multistep"
                                                         "  # x\n  lr_milestones: [30, 200]  # x"))
    errs = "\n".join(check_one(tmp_path / "resnet50.yaml", set(list_models())).errors)
    assert "lr_milestones [30.0, 200.0] must be increasing and inside max_epochs 120" in errs


def test_rule_none_recipe_refuses_another_batch_in_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CNNREPRO_DATA", raising=False)
    rc = main(["fit", str(RECIPES / "inception_v3.yaml"), "--data.root", "demo", "--data.batch_size", "8",
               "--data.num_workers", "0", "--run.wandb", "disabled", "--trainer.accelerator", "cpu",
               "--trainer.devices", "1", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
               "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "global batch 8" in err and "paper's batch 32" in err and "--trainer.accumulate_grad_batches 4" in err
    assert "Traceback" not in err


def _fit_overrides(name: str) -> list[str]:
    info = model_info(name)
    size = SMALL.get(name, info.input_size[-1])
    args = ["--data.batch_size", "2", "--data.num_workers", "0", "--data.shuffle_buffer", "8",
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "0.01",  # 1 batch of the 100 (a bare "1" parses as 100 %)
            "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
            "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--run.wandb", "disabled",
            # batch 2 is not the paper's: the linear rule lets every recipe run at it
            "--model.batch_rule", "linear"]
    if info.normalization == "mnist":
        return ["--data.root", "mnist", *args]
    args = ["--data.root", "demo", *args]
    if size != info.input_size[-1]:
        args += ["--data.crop", str(size), "--data.resize", str(size + size // 7)]
        cfg = yaml.safe_load((RECIPES / f"{name}.yaml").read_text()) or {}
        if (cfg.get("data") or {}).get("scale_range") or name.startswith(("resnet", "preact_", "fractalnet", "enet")):
            args += ["--data.scale_range", f"[{size},{size + size // 4}]"]
    return args


@pytest.fixture
def restore_signal_handlers():
    """Lightning's signal connector leaves handlers referencing the trainer after an in-process fit;
    restoring them lets each run's model be freed (57 runs in one process otherwise exhaust RAM)."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)
    gc.collect()


@pytest.fixture
def run_dir(tmp_path):
    """Where a run's folder goes: a RAM-backed folder (/dev/shm) when there is room. The fit saves
    two checkpoints, 2 x 1.1 GB for VGG-19 (weights and momentum; measured): on CI's disk writing
    them was half of such a test's time; what is written, and how, is the same."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 6 << 30):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=shm, prefix="cnnrepro-recipes-") as d:
        yield Path(d)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_recipe_trains_two_steps_and_validates(name, run_dir, monkeypatch, restore_signal_handlers):
    monkeypatch.chdir(run_dir)
    monkeypatch.delenv("CNNREPRO_DATA", raising=False)
    torch.set_num_threads(2)
    rc = main(["fit", str(RECIPES / f"{name}.yaml"), *_fit_overrides(name)])
    assert rc == 0
    import json

    rec = json.loads(next((run_dir / "runs" / name).glob("fit-*/record.json")).read_text())
    assert rec["model"] == name and rec["global_step"] == 2
    assert rec["batch_plan"]["global_batch"] == 2 and rec["batch_plan"]["rule"] == "linear"
    assert 0 < rec["samples"] <= 10  # 1 % of the validation batches
    # the run's two checkpoints (2.2 GB for VGG-19) would fill the disk or the RAM over 57 runs
    shutil.rmtree(run_dir / "runs")
