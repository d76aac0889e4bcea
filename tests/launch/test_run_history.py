"""A run's history survives its attempts (issue 16.3, 16.4): real `cnnrepro fit` processes stopped
by a real SIGUSR2 and a real SIGKILL, resumed, and compared with the same run uninterrupted."""

import csv
import json

import pytest

from conftest import run_cnnrepro

SIGNAL = "--trainer.callbacks+=signal_helpers.SignalAtStep"


def _rows(path):
    # perf/* are wall-clock timings: every other column is bit-exact on the CPU
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in csv.DictReader(f)]


@pytest.mark.slow
def test_metrics_and_attempts_survive_a_signal_a_kill_and_a_rerun(tmp_path, tiny_shards, tiny_recipe):
    base = ["fit", str(tiny_recipe), "--data.root", str(tiny_shards), "--run.wandb", "disabled"]
    p = run_cnnrepro([*base, "--run.folder", "A"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    whole = _rows(tmp_path / "A" / "metrics.csv")
    assert [r["step"] for r in whole if r["train/loss_step"]] == [str(s) for s in range(21)]

    # B: resumed the way a user does, `--ckpt_path last` (the newest runs/g/fit-* resumed in place)
    group = ["--run.dir", str(tmp_path / "runs"), "--run.name", "g"]
    last = [*group, "--ckpt_path", "last"]
    folder = tmp_path / "runs" / "g" / "fit-000"
    # attempt 0: SIGUSR2 during step 4 (epoch 0) -> checkpoint at step 5, exit
    p = run_cnnrepro([*base, *group, SIGNAL, "--trainer.callbacks.step", "4"], tmp_path)
    assert p.returncode == 3, p.stderr[-3000:]
    # attempt 1: checkpoints every 3 steps, SIGKILL during step 11: the last checkpoint is at step 9,
    # the rows of steps 9 and 10 were logged by an attempt that is then repeated
    p = run_cnnrepro([*base, *last, "--run.ckpt_every_n_steps", "3", SIGNAL, "--trainer.callbacks.step", "11", "--trainer.callbacks.signum", "SIGKILL"], tmp_path)
    assert p.returncode == -9, p.stderr[-3000:]
    # attempt 2: to the end
    p = run_cnnrepro([*base, *last], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert _rows(folder / "metrics.csv") == whole
    repeated = _rows(folder / "metrics.repeated.csv")
    assert {r["step"] for r in repeated if r["train/loss_step"]} == {"9", "10"}

    record = json.loads((folder / "record.json").read_text())
    attempts = record["attempts"]
    assert [a["reason"].split(":")[0] for a in attempts] == ["signal", "killed", "finished"]
    assert [(a["start_step"], a["end_step"]) for a in attempts] == [(0, 5), (5, 9), (9, 21)]
    assert record["wall_seconds"] == pytest.approx(sum(a["wall_seconds"] for a in attempts), abs=0.2)
    assert record["wall_seconds"] > record["wall_seconds_attempt"] == pytest.approx(attempts[-1]["wall_seconds"], abs=5)
    assert record["throughput"]["images_per_sec"] > 0

    # `--ckpt_path last` of the finished run trains nothing and keeps every row (it deleted the file)
    p = run_cnnrepro([*base, *last], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert _rows(folder / "metrics.csv") == whole
    history = json.loads((folder / "attempts.json").read_text())["attempts"]
    assert [a["reason"] for a in history][-1] == "finished" and len(history) == 4
