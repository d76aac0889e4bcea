"""The `cnnrepro` command as a user runs it: the real console script, real shards, real files."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ALEXNET = str(REPO / "recipes" / "alexnet.yaml")
CNNREPRO = str(Path(sys.executable).with_name("cnnrepro"))
# few, small steps: the paper AlexNet at its 227 input, batch 8
FAST = ["--data.batch_size", "8", "--data.num_workers", "1", "--trainer.limit_train_batches", "2",
        "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false"]


def run(args, cwd, env_extra=None, check=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB") and k != "CNNREPRO_DATA"}
    env["CNNREPRO_CACHE"] = str(Path(cwd) / "cache")
    env.update(env_extra or {})
    p = subprocess.run([CNNREPRO, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check is not None:
        assert p.returncode == check, f"rc={p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-5000:]}"
    return p


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory):
    from cnnrepro.data.demo import build_demo_tree
    from cnnrepro.data.shards import write_shards

    root = tmp_path_factory.mktemp("tiny")
    build_demo_tree(root / "tree", train_per_class=3, val_per_class=2)  # 30 train, 20 val real JPEGs
    write_shards(root / "tree", root / "shards", samples_per_shard=8, workers=1, progress=False)
    return root / "shards"


def test_no_data_configured_names_the_flag_and_variable(tmp_path):
    p = run(["fit", ALEXNET], tmp_path, check=2)
    assert "--data.root" in p.stderr and "CNNREPRO_DATA" in p.stderr
    assert "Traceback" not in p.stderr


def test_missing_data_path_is_one_clear_line(tmp_path):
    p = run(["fit", ALEXNET, "--data.root", str(tmp_path / "nowhere")], tmp_path, check=2)
    assert "nowhere" in p.stderr and "does not exist" in p.stderr
    # the error is all the user sees: no log line (Lightning's "Seed set to 0") before it
    assert (p.stdout + p.stderr).strip().splitlines() == [p.stderr.strip()]


def test_environment_variable_supplies_the_data(tmp_path):
    p = run(["fit", ALEXNET], tmp_path, env_extra={"CNNREPRO_DATA": str(tmp_path / "elsewhere")}, check=2)
    assert "elsewhere" in p.stderr


def test_unknown_key_on_the_command_line_is_an_error(tmp_path, tiny_shards):
    p = run(["fit", ALEXNET, "--data.root", str(tiny_shards), "--model.lrr", "0.1"], tmp_path)
    assert p.returncode != 0
    assert "lrr" in p.stderr


def test_unknown_key_in_a_recipe_is_an_error_naming_it(tmp_path, tiny_shards):
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text(f"extends: {ALEXNET}\nmodel:\n  learning_rate: 0.1\n")
    p = run(["fit", str(leaf), "--data.root", str(tiny_shards)], tmp_path)
    assert p.returncode != 0
    assert "learning_rate" in p.stderr


def test_wrong_type_is_an_error_naming_the_key(tmp_path, tiny_shards):
    p = run(["fit", ALEXNET, "--data.root", str(tiny_shards), "--model.lr", "fast"], tmp_path)
    assert p.returncode != 0
    assert "lr" in p.stderr and "fast" in p.stderr


def test_missing_recipe_is_a_clear_error(tmp_path):
    p = run(["fit", "recipes/nope.yaml"], tmp_path, check=2)
    assert "nope.yaml" in p.stderr and "Traceback" not in p.stderr


@pytest.fixture(scope="module")
def printed_config(tmp_path_factory):
    """`cnnrepro fit ALEXNET --print_config`, run once for the tests below."""
    return run(["fit", ALEXNET, "--print_config"], tmp_path_factory.mktemp("print_config"), check=0)


def test_print_config_shows_the_resolved_recipe(printed_config):
    cfg = yaml.safe_load(printed_config.stdout)
    assert cfg["model"]["lr"] == 0.01 and cfg["data"]["batch_size"] == 128
    assert cfg["trainer"]["max_epochs"] == 90
    assert cfg["trainer"]["log_every_n_steps"] == 10  # from base.yaml through `extends`


def test_a_printed_config_replays_as_the_same_run(printed_config, tmp_path):
    cfg = yaml.safe_load(printed_config.stdout)
    # the chain is resolved: no `extends` pointing at a base.yaml that is not beside the saved file
    assert "extends" not in cfg
    assert cfg["run"]["name"] == "alexnet"  # the replay runs in the recipe's group, not in runs/config/
    saved = tmp_path / "config.yaml"
    saved.write_text(printed_config.stdout)
    replay = run(["fit", str(saved), "--print_config"], tmp_path, check=0)
    assert yaml.safe_load(replay.stdout) == cfg


def test_no_lightningcli_warning_about_args_and_the_command_line(printed_config):
    assert "args parameter is intended" not in printed_config.stderr


def test_lightningcli_optimizer_flags_are_refused_naming_the_recipe_keys(tmp_path):
    # they would silently replace the paper's optimizer and schedule (ClassifierModule.configure_optimizers)
    p = run(["fit", ALEXNET, "--optimizer", "Adam"], tmp_path, check=2)
    assert "model.optimizer" in p.stderr and "model.lr_schedule" in p.stderr and "Traceback" not in p.stderr
    p = run(["fit", ALEXNET, "--lr_scheduler=StepLR"], tmp_path, check=2)
    assert "--lr_scheduler" in p.stderr and "model.lr_schedule" in p.stderr
    p = run(["fit", ALEXNET, "--help"], tmp_path, check=0)
    assert "--model.optimizer" in p.stdout
    assert not re.search(r"(^|[\s\[])--(optimizer|lr_scheduler)\b", p.stdout)


def test_top_level_help_lists_every_command(capsys):
    from cnnrepro.cli import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("fit", "validate", "test", "submit", "table", "plot", "profile", "models", "recipes check",
                 "shards", "bench data"):
        assert f"cnnrepro {verb} " in out, verb
    assert "bench train RECIPE" in out


@pytest.mark.slow
def test_fit_resume_validate_and_table_end_to_end(tmp_path, tiny_shards):
    data = ["--data.root", str(tiny_shards)]
    p = run(["fit", ALEXNET, *data, *FAST, "--trainer.max_epochs", "1"], tmp_path, check=0)
    run_dir = tmp_path / "runs" / "alexnet" / "fit-000"
    assert "run record:" in p.stdout and "| alexnet |" in p.stdout
    rec = json.loads((run_dir / "record.json").read_text())
    for key in ("model", "recipe", "recipe_sha256", "git_commit", "data", "num_classes", "samples", "protocol",
                "top1", "top5", "epochs", "wall_seconds", "hardware"):
        assert key in rec, key
    assert rec["model"] == "alexnet" and rec["num_classes"] == 10 and rec["epochs"] == 1
    assert rec["samples"] == rec["samples_expected"] == 20  # every validation image, once
    assert rec["protocol"] == "center" and 0 <= rec["top1"] <= rec["top5"] <= 100
    assert len(rec["recipe_sha256"]) == 64 and rec["global_step"] == 2
    assert rec["throughput"]["images_per_sec"] > 0 and 0 <= rec["throughput"]["data_wait_fraction"] < 1
    assert rec["fast_paths"] == {"precision": "32-true", "channels_last": False, "compile": False}
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["lr"] == 0.01 and saved["data"]["root"] == str(tiny_shards)
    assert "extends" not in saved and saved["run"]["name"] == "alexnet"  # replayable: `cnnrepro fit config.yaml`
    assert rec["seed"] == saved["seed_everything"] == 0  # seeded (quietly: lit/cli.py _set_seed)
    assert (run_dir / "metrics.csv").exists()
    # W&B offline (no API key in the environment): real run files under the run folder
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    wandb_id = (run_dir / "wandb_id.txt").read_text().strip()

    # resume the same run for a second epoch
    p = run(["fit", ALEXNET, *data, *FAST, "--trainer.max_epochs", "2", "--ckpt_path", "last"], tmp_path, check=0)
    rec2 = json.loads((run_dir / "record.json").read_text())
    assert rec2["epochs"] == 2 and rec2["global_step"] == 4
    assert rec2["wandb_id"] == wandb_id
    assert not (tmp_path / "runs" / "alexnet" / "fit-001").exists()

    # validate the checkpoint: same weights, same numbers
    p = run(["validate", ALEXNET, *data, "--data.batch_size", "8", "--data.num_workers", "1",
             "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")], tmp_path, check=0)
    val_dir = tmp_path / "runs" / "alexnet" / "validate-000"
    rec3 = json.loads((val_dir / "record.json").read_text())
    assert rec3["epochs"] == 2 and rec3["samples"] == 20
    assert rec3["top1"] == pytest.approx(rec2["top1"]) and rec3["top5"] == pytest.approx(rec2["top5"])

    p = run(["table", "runs"], tmp_path, check=0)
    assert p.stdout.count("| alexnet |") == 2
    assert "not comparable" in p.stdout  # demo data and centre crop vs the paper's ImageNet 10-crop
    p = run(["table", "runs", "--csv"], tmp_path, check=0)
    assert p.stdout.splitlines()[0].startswith("model,data,protocol")


@pytest.mark.slow
def test_a_wandb_run_carries_group_job_type_tags_the_resolved_config_and_the_record(tmp_path, tiny_shards, monkeypatch):
    # in process: the run object is where W&B keeps them (offline runs keep no readable files)
    from pytorch_lightning.loggers import WandbLogger

    from cnnrepro.lit.cli import CnnreproCLI
    from cnnrepro.recipes import recipe_chain

    for k in [k for k in os.environ if k.startswith("WANDB")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("CNNREPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    chain = recipe_chain(ALEXNET)
    cli = CnnreproCLI(args=["fit", *[a for p in chain for a in ("--config", str(p))], "--data.root", str(tiny_shards),
                            *FAST, "--trainer.max_epochs", "1", "--run.wandb", "offline",
                            "--run.wandb_tags", "[ablation]"], recipe_files=chain)
    wb = next(lg for lg in cli.trainer.loggers if isinstance(lg, WandbLogger)).experiment
    try:
        rec = json.loads(cli.run.record_path.read_text())
        assert wb.group == "alexnet" and wb.job_type == "fit" and wb.name == "alexnet/fit-000"
        assert set(wb.tags) == {"alexnet", "fit", "protocol:center", "ablation"}
        assert wb.config["model"]["lr"] == 0.01 and wb.config["data"]["root"] == str(tiny_shards)
        assert wb.config["trainer"]["max_epochs"] == 1 and wb.config["run"]["name"] == "alexnet"
        assert wb.summary["record/top1"] == rec["top1"] and wb.summary["record/protocol"] == "center"
        assert wb.summary["record/epochs"] == rec["epochs"] == 1
    finally:
        wb.finish()


def test_resume_without_a_previous_run_is_explained(tmp_path, tiny_shards):
    p = run(["fit", ALEXNET, "--data.root", str(tiny_shards), "--ckpt_path", "last"], tmp_path, check=2)
    assert "last.ckpt" in p.stderr and "Traceback" not in p.stderr


def test_table_without_records_is_explained(tmp_path):
    (tmp_path / "runs").mkdir()
    p = run(["table", "runs"], tmp_path, check=2)
    assert "cnnrepro fit" in p.stderr


# -- issue 17: bad data is one line before any step ---------------------------------------------------

def _one_line_error(p):
    assert p.returncode == 2, p.stderr[-3000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("cnnrepro: error:")]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    return lines[0]


def test_damaged_validation_labels_are_refused_before_validating(tmp_path, tiny_shards):
    import shutil
    import tarfile

    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    val = shards / "val-000001.tar"
    with tarfile.open(val) as tf:  # change one label in place: same size
        m = next(m for m in tf if m.name.endswith(".cls"))
        offset, old = m.offset_data, tf.extractfile(m).read()
    data = bytearray(val.read_bytes())
    data[offset : offset + 1] = b"1" if old[:1] != b"1" else b"2"
    val.write_bytes(bytes(data))
    p = run(["validate", ALEXNET, "--data.root", str(shards), "--data.batch_size", "8", "--data.num_workers", "0"],
            tmp_path)
    line = _one_line_error(p)
    assert f"{val}: sha256 differs from the manifest" in line and "cnnrepro shards " in line
    assert not (tmp_path / "runs" / "alexnet" / "validate-000" / "record.json").exists()
    p = run(["shards", "--verify", str(shards)], tmp_path)
    assert p.returncode == 1 and f"BAD {val}: sha256 differs" in p.stderr


@pytest.mark.parametrize("batch, says", [("-4", "--data.batch_size -4: the per-device batch must be at least 1"),
                                         ("64", "--data.batch_size 64 x 1 device(s) is larger than the 30 training")])
def test_impossible_batch_size_is_one_line(tmp_path, tiny_shards, batch, says):
    p = run(["fit", ALEXNET, "--data.root", str(tiny_shards), *FAST, "--data.batch_size", batch,
             "--trainer.max_epochs", "1"], tmp_path)
    assert says in _one_line_error(p)
    assert not list((tmp_path / "runs").glob("*/*/checkpoints/*.ckpt"))


def test_damaged_training_shard_met_while_streaming_is_one_line(tmp_path, tiny_shards):
    import shutil
    import tarfile

    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    train = shards / "train-000000.tar"  # damage that keeps the size: only streaming can see it
    with tarfile.open(train) as tf:
        offsets = [m.offset_data for m in tf if m.name.endswith(".cls")]
    data = bytearray(train.read_bytes())
    for o in offsets:
        data[o : o + 1] = b"x"
    train.write_bytes(bytes(data))
    p = run(["fit", ALEXNET, "--data.root", str(shards), *FAST, "--trainer.max_epochs", "1"], tmp_path)
    line = _one_line_error(p)
    assert f"in {train} has the class " in line and "not an integer" in line and "--verify" in line
def test_table_does_not_pay_for_lightning(tmp_path):
    # everything `cnnrepro table` imports (the verb's module and what it imports at its top)
    code = ("import sys, cnnrepro.cli, cnnrepro.commands.results; "
            "assert 'pytorch_lightning' not in sys.modules and 'lightning' not in sys.modules")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 0, p.stderr[-2000:]
