"""A run's history survives its attempts (issue 16.3, 16.4): real `cnnrepro fit` processes stopped
by a real SIGUSR2 and a real SIGKILL, resumed, and compared with the same run uninterrupted."""

import csv
import json
import subprocess

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


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size, read_only) -> a real tmpfs folder (skipped where mounting is not permitted)."""
    mounted = []

    def mount(size: str, read_only: bool = False):
        d = tmp_path / f"mnt{len(mounted)}"
        d.mkdir()
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], capture_output=True)
        if p.returncode != 0:
            pytest.skip(f"mount not permitted here: {p.stderr.decode().strip()}")
        mounted.append(d)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True)
        return d

    yield mount
    for d in reversed(mounted):
        subprocess.run(["umount", str(d)], check=True)


def _one_error_line(p):
    assert p.returncode == 2, p.stderr[-3000:]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("cnnrepro: error:")]
    assert len(errors) == 1, p.stderr[-3000:]
    return errors[0]


@pytest.mark.slow
def test_read_only_and_full_run_folders_are_one_line(tmp_path, tiny_shards, tiny_recipe, tmpfs):
    base = ["fit", str(tiny_recipe), "--data.root", str(tiny_shards), "--run.wandb", "disabled"]
    ro = tmpfs("1m", read_only=True)
    line = _one_error_line(run_cnnrepro([*base, "--run.dir", str(ro / "runs")], tmp_path))
    assert f"{ro / 'runs'}: read-only file system; make {ro} writable" in line
    # 3 MB: config.yaml and metrics.csv fit, the first checkpoint (~3 MB) does not
    full = tmpfs("3m")
    line = _one_error_line(run_cnnrepro([*base, "--run.dir", str(full / "runs")], tmp_path))
    assert f"cannot write the checkpoint {full / 'runs'}/tiny/fit-000/checkpoints/" in line
    assert "no space left on device; free space on the file system" in line
    assert not [f for f in (full / "runs" / "tiny" / "fit-000" / "checkpoints").iterdir()]  # no partial file


def test_a_record_on_a_read_only_or_full_folder_is_one_line(tmpfs):
    from cnnrepro.errors import UserError
    from cnnrepro.results.records import RECORD_KEYS, write_record

    rec = {k: 1 for k in RECORD_KEYS}
    ro = tmpfs("1m", read_only=True)
    with pytest.raises(UserError, match=f"cannot write the run record {ro}/r/record.json: read-only file system"):
        write_record(rec, ro / "r" / "record.json")
    full = tmpfs("64k")
    with open(full / "filler", "wb") as f:
        try:
            f.write(b"\0" * (1 << 20))
        except OSError:
            pass  # the disk is full now
    with pytest.raises(UserError, match=f"cannot write the run record {full}/record.json: no space left on device"):
        write_record({**rec, "hardware": {"pad": "x" * 100_000}}, full / "record.json")
    assert not (full / "record.tmp").exists()
