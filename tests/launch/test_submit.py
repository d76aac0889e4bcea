"""`cnnrepro submit` option handling, without a cluster: what reaches sbatch and `cnnrepro fit`."""

import os

import pytest

from cnnrepro.commands.submit import build_submission
from cnnrepro.errors import UserError
from cnnrepro.launch.submit import SubmitError, load_cluster_config


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CNNREPRO_SLURM_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/cnnrepro/slurm.yaml
    p = tmp_path / "r.yaml"
    p.write_text("model:\n  arch: alexnet\n")
    return p


def test_options_reach_sbatch_and_fit(recipe, tmp_path):
    params, job, folder, logs, wait = build_submission([
        str(recipe), "--data.root", "/data", "--nodes", "2", "--gpus-per-node", "4", "--cpus-per-task", "8",
        "--mem", "64G", "--partition", "gpu", "--account", "lab", "--qos", "high", "--constraint", "a100",
        "--time", "1-02:00:00", "--job-name", "alex", "--sbatch-extra", "exclude=node7", "--wait"])
    assert params["nodes"] == 2 and params["ntasks_per_node"] == 4 and params["gpus_per_node"] == 4
    assert params["time"] == 26 * 60 and params["mem"] == "64G" and params["cpus_per_task"] == 8
    assert (params["partition"], params["account"], params["qos"], params["constraint"]) == ("gpu", "lab", "high", "a100")
    assert params["job_name"] == "alex" and params["additional_parameters"]["exclude"] == "node7"
    assert params["signal_delay_s"] == 90  # SIGUSR2 90 s before the limit (NCCL owns SIGUSR1)
    a = job.fit_args
    assert a[a.index("--trainer.num_nodes") + 1] == "2" and a[a.index("--trainer.devices") + 1] == "4"
    assert a[a.index("--trainer.accelerator") + 1] == "gpu" and a[a.index("--trainer.strategy") + 1] == "ddp"
    assert a[a.index("--run.folder") + 1] == str(folder) and folder == (tmp_path / "runs" / "r" / "fit-000")
    assert "--data.root" in a and wait and logs == folder / "slurm"


def test_cluster_config_gives_defaults_and_the_command_line_wins(recipe, tmp_path):
    cfg = tmp_path / "slurm.yaml"
    cfg.write_text("partition: cpu\ntasks_per_node: 2\ntime: 90\nsbatch_extra: {exclude: bad1}\n"
                   "setup: ['source venv/bin/activate']\n")
    params, job, *_ = build_submission([str(recipe), "--cluster-config", str(cfg), "--partition", "debug"])
    assert params["partition"] == "debug" and params["ntasks_per_node"] == 2 and params["time"] == 90
    assert params["additional_parameters"]["exclude"] == "bad1" and params["setup"] == ["source venv/bin/activate"]
    assert job.fit_args[job.fit_args.index("--trainer.accelerator") + 1] == "cpu"


def test_unknown_cluster_config_key_names_it(tmp_path):
    cfg = tmp_path / "slurm.yaml"
    cfg.write_text("partiton: gpu\n")
    with pytest.raises(SubmitError, match="partiton"):
        load_cluster_config(str(cfg))


def test_missing_explicit_cluster_config_is_an_error(tmp_path):
    with pytest.raises(SubmitError, match="does not exist"):
        load_cluster_config(str(tmp_path / "nope.yaml"))


@pytest.mark.parametrize("argv, match", [
    (["--time", "soon"], "time"),
    (["--sbatch-extra", "exclude"], "KEY=VALUE"),
    (["--ckpt_path", "x.ckpt"], "ckpt_path"),
    (["--nodez", "2"], "--nodez"),
    (["--gpus-per-node", "4", "--tasks-per-node", "2"], "disagree"),
    # an abbreviation of --gpus-per-node is not read as it (argparse's allow_abbrev): it is no option at all
    (["--gpus", "2"], "--gpus"),
    (["--tasks", "2"], "--tasks"),
    (["--trainer.max_epoch", "3"], "--trainer.max_epoch"),  # the fit parser takes no abbreviation either
])
def test_bad_options_are_one_clear_error(recipe, tmp_path, argv, match):
    with pytest.raises(UserError, match=match):
        build_submission([str(recipe), *argv])
    assert not (tmp_path / "runs").exists()  # a refused submission leaves no run folder behind


def _arg(args, key):
    return args[len(args) - 1 - args[::-1].index(key) + 1]


def test_seeds_make_one_run_folder_and_one_seed_per_task(recipe, tmp_path):
    from cnnrepro.commands.submit import build_array_submission

    params, jobs, folders, logs, wait = build_array_submission(
        [str(recipe), "--data.root", "/data", "--seeds", "3", "--seed_everything", "7", "--tasks-per-node", "2"])
    assert [_arg(j.fit_args, "--seed_everything") for j in jobs] == ["7", "8", "9"]  # S defines the first seed
    assert folders == [tmp_path / "runs" / "r" / f"fit-{i:03d}" for i in range(3)]
    assert [_arg(j.fit_args, "--run.folder") for j in jobs] == [str(f) for f in folders]
    assert [j.run_folder for j in jobs] == [str(f) for f in folders] and all(f.is_dir() for f in folders)
    # everything but the seed and the folder is the same fit: same group (runs/r), same layout
    strip = [[a for a in j.fit_args if a not in ("7", "8", "9") and not a.startswith(str(tmp_path))] for j in jobs]
    assert strip[0] == strip[1] == strip[2] and _arg(jobs[0].fit_args, "--trainer.devices") == "2"
    assert params["ntasks_per_node"] == 2 and logs == tmp_path / "runs" / "r" / "slurm" and not wait


def test_seeds_start_at_the_recipes_seed_and_need_an_integer(recipe, tmp_path):
    from cnnrepro.commands.submit import build_array_submission

    (tmp_path / "s.yaml").write_text("seed_everything: 3\nmodel:\n  arch: alexnet\n")
    _, jobs, *_ = build_array_submission([str(tmp_path / "s.yaml"), "--seeds", "2"])
    assert [_arg(j.fit_args, "--seed_everything") for j in jobs] == ["3", "4"]
    (tmp_path / "t.yaml").write_text("seed_everything: true\nmodel:\n  arch: alexnet\n")
    with pytest.raises(SubmitError, match=r"--seeds needs an integer first seed.*--seed_everything S"):
        build_array_submission([str(tmp_path / "t.yaml"), "--seeds", "2"])
    with pytest.raises(SubmitError, match="--seeds 0"):
        build_array_submission([str(recipe), "--seeds", "0", "--seed_everything", "1"])


def test_other_commands_take_no_abbreviations(capsys):
    # every argparse in cnnrepro/commands sets allow_abbrev=False: `--no-mac` is not `--no-macs`
    from cnnrepro.commands import models

    with pytest.raises(SystemExit) as e:
        models.main("models", ["--no-mac"])
    assert e.value.code == 2 and "unrecognized arguments: --no-mac" in capsys.readouterr().err


def _refusing_sbatch(tmp_path, monkeypatch):
    # a stand-in for sbatch answering as SLURM does when it refuses a job (exit 1, its reason on stderr);
    # the real refusal is tested on the SLURM cluster in test_slurm.py
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Requested node "
                                   "configuration is not available' >&2\nexit 1\n")
    (bindir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def test_a_job_sbatch_refuses_leaves_no_run_folder_and_one_line(recipe, tmp_path, monkeypatch, capsys):
    _refusing_sbatch(tmp_path, monkeypatch)
    from cnnrepro.cli import main

    assert main(["submit", str(recipe), "--gpus-per-node", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Requested node configuration is not available" in err, err
    assert not any((tmp_path / "runs" / "r").iterdir())  # the fit-000 made for it is gone


def test_a_job_array_sbatch_refuses_leaves_nothing_and_one_line(recipe, tmp_path, monkeypatch, capsys):
    # issue 14: `--seeds` went around the single job's clean-up: a traceback, and fit-000..002 stayed
    _refusing_sbatch(tmp_path, monkeypatch)
    from cnnrepro.cli import main

    assert main(["submit", str(recipe), "--gpus-per-node", "8", "--seeds", "3", "--seed_everything", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sbatch refused the job array of 3 runs (sbatch: error: Batch job submission " \
        "failed: Requested node configuration is not available)" in err, err
    assert "fit-000, fit-001, fit-002" in err and "removed" in err
    # nor submitit's files in the array's log folder beside the runs
    assert not any((tmp_path / "runs" / "r").iterdir()), list((tmp_path / "runs" / "r").rglob("*"))
    # an earlier array's logs in that folder stay
    (tmp_path / "runs" / "r" / "slurm").mkdir()
    (tmp_path / "runs" / "r" / "slurm" / "7_0_0_log.err").write_text("earlier\n")
    assert main(["submit", str(recipe), "--gpus-per-node", "8", "--seeds", "2", "--seed_everything", "1"]) == 2
    runs = tmp_path / "runs" / "r"
    assert sorted(p.relative_to(runs).as_posix() for p in runs.rglob("*")) == ["slurm", "slurm/7_0_0_log.err"]


def test_the_job_script_ends_the_step_when_a_task_dies(recipe, tmp_path):
    # without --kill-on-bad-exit, srun lets the other ranks wait for a dead one (issue 16.1)
    from submitit.slurm.slurm import _make_sbatch_string

    params, *_ = build_submission([str(recipe), "--tasks-per-node", "2"])
    params.pop("max_num_timeout")  # an executor setting, not an sbatch one
    script = _make_sbatch_string(command="python -m job", folder=str(tmp_path), **params)
    srun = next(ln for ln in script.splitlines() if ln.startswith("srun "))
    assert "--kill-on-bad-exit=1" in srun.split()
