"""`--ckpt_path FILE` as a user gives it: the run's own settings win over the checkpoint's, another
model is refused, a damaged file and an unknown model name are one line (issues 16.12 and 17)."""

import json

import pytest
import torch
import yaml
from test_cli import REPO, _one_line_error, run, tiny_shards  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_shards):  # noqa: F811
    """(work dir, recipe, data args, a one-epoch squeezenet1_1 checkpoint trained with lr 0.01)."""
    work = tmp_path_factory.mktemp("ckpt")
    recipe = work / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({
        "extends": str(REPO / "recipes" / "base.yaml"),
        "model": {"arch": "squeezenet1_1", "lr": 0.01},
        "data": {"batch_size": 4, "resize": 72, "crop": 64, "num_workers": 1},
        "trainer": {"max_epochs": 1, "limit_train_batches": 2, "num_sanity_val_steps": 0,
                    "enable_progress_bar": False},
        "run": {"wandb": "disabled"},
    }))
    data = ["--data.root", str(tiny_shards)]
    run(["fit", str(recipe), *data], work, check=0)
    return work, recipe, data, work / "runs" / "tiny" / "fit-000" / "checkpoints" / "last.ckpt"


def _new_runs(work):
    return sorted(p.name for p in (work / "runs" / "tiny").iterdir())


def test_the_command_line_and_the_recipe_win_over_the_checkpoint_and_the_record_says_so(trained):
    work, recipe, data, ckpt = trained
    p = run(["fit", str(recipe), *data, "--model.lr", "0.5", "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt)],
            work, check=0)
    assert "model.lr 0.5 (command line) instead of the checkpoint's 0.01" in p.stderr
    folder = work / "runs" / "tiny" / "fit-001"
    # LightningCLI used to merge the checkpoint's hyperparameters over the parsed config: lr 0.01
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]["lr"] == 0.5
    rec = json.loads((folder / "record.json").read_text())
    assert rec["ckpt_hparams_overridden"] == [
        {"key": "model.lr", "checkpoint": 0.01, "used": 0.5, "from": "command line"}]


def test_a_checkpoint_of_another_architecture_is_refused_naming_both(trained):
    work, recipe, data, ckpt = trained
    before = _new_runs(work)
    p = run(["fit", str(recipe), *data, "--model.arch", "squeezenet1_0", "--ckpt_path", str(ckpt)], work)
    line = _one_line_error(p)
    assert str(ckpt) in line and "'squeezenet1_1'" in line and "'squeezenet1_0'" in line and "--model.arch" in line
    assert _new_runs(work) == before


def test_a_checkpoint_with_other_classes_is_refused(trained, tmp_path):
    work, recipe, data, ckpt = trained
    ck = torch.load(ckpt, weights_only=True)
    ck["hyper_parameters"]["num_classes"] = 1000  # as if trained on ImageNet-1k; the demo data has 10
    other = tmp_path / "imagenet.ckpt"
    torch.save(ck, other)
    p = run(["validate", str(recipe), *data, "--ckpt_path", str(other)], work)
    line = _one_line_error(p)
    assert str(other) in line and "num_classes is 1000" in line and "is 10" in line


@pytest.mark.parametrize("damage", ["empty", "truncated", "text", "tensor"])
def test_a_damaged_checkpoint_is_one_line_naming_the_file_and_the_fix(trained, tmp_path, damage):
    work, recipe, data, ckpt = trained
    bad = tmp_path / f"{damage}.ckpt"
    if damage == "empty":
        bad.write_bytes(b"")
    elif damage == "truncated":
        bad.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif damage == "text":
        bad.write_text("not a checkpoint\n")
    else:
        torch.save(torch.zeros(3), bad)
    before = _new_runs(work)
    for command in ("fit", "validate"):
        p = run([command, str(recipe), *data, "--ckpt_path", str(bad)], work)
        line = _one_line_error(p)
        assert f"--ckpt_path {bad}:" in line and "written by `cnnrepro fit`" in line, line
        if damage == "empty":
            assert "empty (0 bytes)" in line
    assert _new_runs(work) == before  # no stale run folder


@pytest.mark.parametrize("command", ["fit", "validate"])
def test_an_unknown_model_name_is_one_line_naming_the_flag_and_the_list(tmp_path, tiny_shards, command):  # noqa: F811
    p = run([command, str(REPO / "recipes" / "alexnet.yaml"), "--data.root", str(tiny_shards),
             "--model.arch", "resnet_18"], tmp_path)
    line = _one_line_error(p)
    assert "--model.arch 'resnet_18'" in line and "`cnnrepro models`" in line and "resnet18" in line


def test_profile_of_an_unknown_model_is_one_line(tmp_path):
    p = run(["profile", "nosuchnet"], tmp_path)
    assert "`cnnrepro models`" in _one_line_error(p)


def test_a_resume_at_another_global_batch_is_one_line_naming_both(trained):
    # issue 16.6: a resume on another layout silently trained at the checkpoint's lr under a new batch
    work, recipe, data, ckpt = trained
    before = _new_runs(work)
    p = run(["fit", str(recipe), *data, "--data.batch_size", "2", "--trainer.max_epochs", "2", "--ckpt_path",
             str(ckpt)], work)
    line = _one_line_error(p)
    assert "global batch 4 = 1 device(s) x --data.batch_size 4" in line, line
    assert "global batch 2 = 1 device(s) x --data.batch_size 2" in line and "use --data.batch_size 4" in line
    assert torch.load(ckpt, weights_only=True)["cnnrepro_batch_plan"]["global_batch"] == 4
    del before
