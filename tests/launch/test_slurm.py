"""A real single-machine SLURM cluster (tests/launch/slurm-cluster.sh): `cnnrepro submit` runs a
two-task DDP job over gloo, and a job survives the preemption signal and `scontrol requeue`.

Skipped only where the cluster cannot be installed: not root, or no apt-get. In CI (root) the
script installs the Debian packages and these tests run.
"""

import json
import os
import pickle
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import CNNREPRO, HERE, REPO, cnnrepro_env, run_cnnrepro

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SCRIPT = str(HERE / "slurm-cluster.sh")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the SLURM daemons are installed with apt-get and run as root: not root here")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("no apt-get to install slurmctld/slurmd/slurmdbd/munge/mariadb on this machine")
    d = tmp_path_factory.mktemp("slurm")
    p = subprocess.run([SCRIPT, "start", str(d)], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"cluster did not start:\n{p.stderr[-5000:]}"
    env = {"SLURM_CONF": str(d / "slurm.conf")}
    yield env
    subprocess.run([SCRIPT, "stop", str(d)], capture_output=True, text=True, timeout=120)


def _submit(tmp_path, cluster, shards, recipe, *extra, timeout=900):
    return run_cnnrepro(["submit", str(recipe), "--data.root", str(shards), "--data.num_workers", "1",
                         "--tasks-per-node", "2", "--cpus-per-task", "1", "--time", "30", *extra],
                        tmp_path, env_extra=cluster, timeout=timeout)


def _job(stdout):
    job = re.search(r"submitted job (\d+)", stdout).group(1)
    folder = Path(re.search(r"run folder: (\S+)", stdout).group(1))
    return job, folder


def _sacct_state(job, env):
    p = subprocess.run(["sacct", "-n", "-X", "-j", job, "-o", "State"], capture_output=True, text=True,
                       env={**os.environ, **env})
    return p.stdout.strip()


def _wait_until(pred, timeout, what):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return time.time() - t0
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _rank0_log(folder, job):
    return (folder / "slurm" / f"{job}_0_log.err").read_text()


def test_submit_wait_runs_two_task_ddp_and_prints_the_record(tmp_path, cluster, tiny_shards, tiny_recipe):
    p = _submit(tmp_path, cluster, tiny_shards, tiny_recipe, "--trainer.max_epochs", "1", "--wait")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    job, folder = _job(p.stdout)
    rec = json.loads(p.stdout[p.stdout.index("{"):])
    assert rec["hardware"]["world_size"] == 2 and rec["global_batch"] == 8
    assert rec["samples"] == 20 == rec["samples_expected"]  # each val image once across the 2 ranks
    assert rec["global_step"] == 30 // 8 and rec["run_dir"] == str(folder)
    assert "distributed_backend=gloo" in _rank0_log(folder, job)
    # the tasks' results are written just before the job ends
    _wait_until(lambda: _sacct_state(job, cluster) == "COMPLETED", 60, "sacct to report COMPLETED")


def _logs(folder):
    return {f.name: f.read_text(errors="replace") for f in sorted((folder / "slurm").glob("*_log.*"))}


def _error_results(folder):
    """The tasks' result files that hold an error (submitit's ("error", traceback) pickles)."""
    return [f.name for f in (folder / "slurm").glob("*_result.pkl") if pickle.loads(f.read_bytes())[0] == "error"]


def _preempted_job(tmp_path, cluster, tiny_shards, tiny_recipe, action, *extra):
    # 12 epochs of 3 steps: long enough to interrupt after the first epoch's checkpoint
    p = _submit(tmp_path, cluster, tiny_shards, tiny_recipe, "--trainer.max_epochs", "12",
                "--run.ckpt_every_n_steps", "2", *extra)
    assert p.returncode == 0, p.stderr[-3000:]
    job, folder = _job(p.stdout)
    _wait_until(lambda: (folder / "checkpoints" / "last.ckpt").exists(), 300, "the first checkpoint")
    time.sleep(1.0)
    t_signal = time.time()
    subprocess.run(action + [job], check=True, env={**os.environ, **cluster})
    _wait_until(lambda: "resumed at step" in _rank0_log(folder, job), 300, "the requeued job to resume")
    t_resumed = time.time()
    # the requeue left nothing that `cnnrepro submit --wait` could read as the job's failure
    assert _error_results(folder) == []
    _wait_until(lambda: _sacct_state(job, cluster) == "COMPLETED", 600, "the job to complete")
    rec = json.loads((folder / "record.json").read_text())
    assert rec["global_step"] == 12 * 3 and rec["epochs"] == 12
    log = _rank0_log(folder, job)
    print(f"\n{' '.join(action)}: resumed {t_resumed - t_signal:.0f} s after the signal")
    return log, folder, job


def _requeue_overhead(folder, job):
    """Seconds from the last step before the stop to the first step after the resume, split into
    the job's wait in the queue and its startup: what a requeue costs beyond the lost steps."""
    err = _rank0_log(folder, job)
    before, after = err[:err.index("resumed at step")], err[err.index("resumed at step"):]
    clock = r"test: step \d+ done at ([\d.]+)"
    last_before, first_after = float(re.findall(clock, before)[-1]), float(re.search(clock, after).group(1))
    requeued = re.search(r"CANCELLED AT (\S+) DUE TO JOB REQUEUE", err).group(1)
    out = (folder / "slurm" / f"{job}_0_log.out").read_text()
    started = re.findall(r"submitit INFO \((\S+ \S+)\) - Starting with", out)[-1].split(",")[0]
    t_requeued = time.mktime(time.strptime(requeued, "%Y-%m-%dT%H:%M:%S"))
    t_started = time.mktime(time.strptime(started, "%Y-%m-%d %H:%M:%S"))
    return first_after - last_before, t_started - t_requeued, first_after - t_started


def test_preemption_signal_checkpoints_at_a_step_boundary_and_requeues(tmp_path, cluster, tiny_shards, tiny_recipe):
    log, folder, job = _preempted_job(tmp_path, cluster, tiny_shards, tiny_recipe, ["scancel", "--signal=USR2"],
                                      "--trainer.callbacks+=signal_helpers.StepClock")
    # mid-epoch the stop comes at the next step; in an epoch's last step or its validation, at the
    # epoch's end (lit/preemption.py): either way the message names the step it saved
    saved = re.search(r"rank 0: checkpoint at (?:step (\d+)|the end of epoch \d+ \(step (\d+)\))", log)
    assert saved, log[-4000:]
    resumed = re.search(r"resumed at step (\d+)", log)
    assert resumed.group(1) == (saved.group(1) or saved.group(2))  # nothing lost: it resumed where it stopped
    assert "this job is preempted" in log or "this job is timed-out" in log  # submitit did the requeue
    # a requeue is no crash: no traceback in any rank's log, from either attempt, and no error result
    logs = _logs(folder)
    assert len(logs) == 4, sorted(logs)  # .out and .err of both ranks
    crashed = {name: text[text.index("Traceback"):][:3000] for name, text in logs.items() if "Traceback" in text}
    assert not crashed, crashed
    assert _error_results(folder) == []
    total, pending, startup = _requeue_overhead(folder, job)
    print(f"requeue overhead (this cluster): {total:.1f} s from the last step before the stop to the first "
          f"step after the resume; the job restarted {pending:.0f} s after the requeue, and its first step "
          f"came {startup:.1f} s after that restart")


def test_scontrol_requeue_resumes_from_the_newest_complete_checkpoint(tmp_path, cluster, tiny_shards, tiny_recipe):
    log, folder, _ = _preempted_job(tmp_path, cluster, tiny_shards, tiny_recipe, ["scontrol", "requeue"])
    assert "DUE TO JOB REQUEUE" in log
    step = int(re.search(r"resumed at step (\d+)", log).group(1))
    assert step > 0  # from a checkpoint, not from scratch


def test_seeds_run_as_one_job_array_and_the_table_shows_their_spread(tmp_path, cluster, tiny_shards, tiny_recipe):
    # issue 14: `--seeds 2` is one sbatch --array of two one-task fits, each its own run folder and seed
    p = run_cnnrepro(["submit", str(tiny_recipe), "--data.root", str(tiny_shards), "--data.num_workers", "1",
                      "--tasks-per-node", "1", "--cpus-per-task", "1", "--time", "30", "--trainer.max_epochs", "1",
                      "--seeds", "2", "--wait"], tmp_path, env_extra=cluster, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    array = re.search(r"submitted job array (\d+): 2 run\(s\)", p.stdout).group(1)
    runs = re.findall(r"run folder: (\S+) \(job (\S+), seed (\d+)\)", p.stdout)
    assert [(job, seed) for _, job, seed in runs] == [(f"{array}_0", "0"), (f"{array}_1", "1")]
    # SLURM itself knows them as the tasks of one array
    tasks = subprocess.run(["sacct", "-n", "-X", "-j", array, "-o", "JobID%30"], capture_output=True, text=True,
                           env={**os.environ, **cluster}).stdout.split()
    assert sorted(tasks) == [f"{array}_0", f"{array}_1"], tasks
    recs = [json.loads((Path(f) / "record.json").read_text()) for f, _, _ in runs]
    assert [r["seed"] for r in recs] == [0, 1] and len({r["run_dir"] for r in recs}) == 2
    assert [Path(r["run_dir"]).name for r in recs] == ["fit-000", "fit-001"]
    # one run group, the recipe's name: RunFolder makes it the W&B group (checked in tests/test_cli.py)
    assert {Path(r["run_dir"]).parent.name for r in recs} == {"tiny"}
    assert all(r["samples"] == 20 for r in recs) and all(r["wandb_id"] for r in recs)
    t = run_cnnrepro(["table", "runs", "--csv"], tmp_path)
    assert t.returncode == 0, t.stderr
    import csv
    import io

    (row,) = [r for r in csv.DictReader(io.StringIO(t.stdout)) if r["command"] == "fit"]
    assert row["runs"] == "2" and sorted(row["seeds"].split(",")) == ["0", "1"] and row["images"] == "20"
    errs = [100.0 - r["top1"] for r in recs]
    assert float(row["top1_err"]) == pytest.approx(sum(errs) / 2) and row["top1_err_std"] != ""
    md = run_cnnrepro(["table", "runs"], tmp_path).stdout
    assert " ± " in md.splitlines()[2] and "| 2 | 20 |" in md.splitlines()[2], md


def _one_error_line(p):
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("cnnrepro: error:"), p.stderr[-3000:]
    return lines[0]


def test_a_job_sbatch_refuses_is_one_line_and_leaves_no_run_folder(tmp_path, cluster, tiny_shards, tiny_recipe):
    # issue 16.7: a failed submit left an empty run folder and a 33-line traceback
    p = _submit(tmp_path, cluster, tiny_shards, tiny_recipe, "--partition", "no-such-partition")
    line = _one_error_line(p)
    assert "sbatch refused the job" in line and "partition" in line.lower(), line
    assert not (tmp_path / "runs" / "tiny").exists() or not any((tmp_path / "runs" / "tiny").iterdir())


def test_a_job_array_sbatch_refuses_is_one_line_and_leaves_nothing(tmp_path, cluster, tiny_shards, tiny_recipe):
    # issue 14: a refused `--seeds` array left its run folders (and submitit's files) and a traceback
    p = _submit(tmp_path, cluster, tiny_shards, tiny_recipe, "--seeds", "2", "--partition", "no-such-partition")
    line = _one_error_line(p)
    assert "sbatch refused the job array of 2 runs" in line and "partition" in line.lower(), line
    assert not (tmp_path / "runs" / "tiny").exists() or not any((tmp_path / "runs" / "tiny").iterdir())


def test_wait_reports_a_dead_array_task_in_one_line_within_a_minute(tmp_path, cluster, tiny_shards, tiny_recipe):
    # issue 14: `--seeds N --wait` read each task's result in turn (a dead task was reported after the
    # tasks before it had ended, as a traceback); now as a single job: the task that died, at once.
    # Seed 1 (array task 1) is killed at startup; seed 0 trains two steps and completes.
    args = ["submit", str(tiny_recipe), "--data.root", str(tiny_shards), "--data.num_workers", "1",
            "--tasks-per-node", "1", "--cpus-per-task", "1", "--time", "30", "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--seeds", "2", "--wait",
            "--trainer.callbacks+=signal_helpers.DieOnRank", "--trainer.callbacks.rank", "0",
            "--trainer.callbacks.at", "init", "--trainer.callbacks.array_task", "1"]
    out = tmp_path / "stdout.txt"
    with open(out, "w") as stdout:
        proc = subprocess.Popen([CNNREPRO, *args], cwd=tmp_path, env=cnnrepro_env(tmp_path, cluster), stdout=stdout,
                                stderr=subprocess.PIPE, text=True)
        lines = [(time.time(), ln.rstrip("\n")) for ln in proc.stderr]  # each line as it comes
        assert proc.wait(timeout=600) == 1, "\n".join(ln for _, ln in lines)[-3000:]
    array = re.search(r"submitted job array (\d+): 2 run\(s\)", out.read_text()).group(1)
    assert f"sacct -D -j {array}" in out.read_text()
    runs = {job: Path(f) for f, job, _ in re.findall(r"run folder: (\S+) \(job (\S+), seed (\d+)\)",
                                                     out.read_text())}
    logs = runs[f"{array}_1"].parent / "slurm"
    died = re.search(r"test: rank 0 dies \(SIGKILL\) at ([\d.]+)", (logs / f"{array}_1_0_log.err").read_text())
    assert died, (logs / f"{array}_1_0_log.err").read_text()[-3000:]
    # one line, naming the array task, the rank that died and its log; nothing else about it
    about = [(t, ln) for t, ln in lines if f"{array}_1" in ln]
    assert len(about) == 1 and "Traceback" not in "".join(ln for _, ln in lines), lines[-40:]
    t_said, line = about[0]
    assert line.startswith(f"cnnrepro: job {array}_1 FAILED: rank 0") and f"{array}_1_0_log.err" in line, line
    assert "Killed" in line, line
    assert t_said - float(died.group(1)) < 60, t_said - float(died.group(1))
    # the other seed ran to its end and its record was printed
    assert json.loads(out.read_text()[out.read_text().index("{"):])["run_dir"] == str(runs[f"{array}_0"])
    print(f"\n`--wait` said the array task {array}_1 died {t_said - float(died.group(1)):.1f} s after: {line}")


def test_a_first_two_task_demo_submit_on_an_empty_cache_succeeds(tmp_path, cluster, tiny_recipe):
    # issue 16.2: both ranks built the demo dataset at once and one failed (tree.partial)
    assert not (tmp_path / "cache").exists()  # run_cnnrepro's CNNREPRO_CACHE: empty
    p = run_cnnrepro(["submit", str(tiny_recipe), "--data.root", "demo", "--data.num_workers", "1",
                      "--tasks-per-node", "2", "--cpus-per-task", "1", "--time", "30", "--trainer.max_epochs", "1",
                      "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2", "--wait"],
                     tmp_path, env_extra=cluster, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    job, folder = _job(p.stdout)
    logs = "".join((folder / "slurm" / f"{job}_{r}_log.err").read_text() for r in (0, 1))
    assert logs.count("building the demo dataset once") == 1, logs[-3000:]
    from cnnrepro.data.demo import DEMO_VERSION

    assert (tmp_path / "cache" / f"demo-v{DEMO_VERSION}" / "shards" / "manifest.json").is_file()


def test_fit_sbatch_runs_on_cpu_nodes_with_rank_logs_in_the_run_folder(tmp_path, cluster, tiny_shards, tiny_recipe):
    # issue 16.9: the template hard-coded --gpus-per-node=8 (rejected on CPU-only nodes) and wrote
    # every rank into slurm-<jobid>.out in the submit directory; sbatch's command line sets the resources
    env = {**os.environ, **cluster, "CNNREPRO_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline",
           "PATH": f"{Path(CNNREPRO).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run(["sbatch", "--wait", "--parsable", "--ntasks-per-node=2", "--cpus-per-task=1", "--time=30",
                        str(REPO / "slurm" / "fit.sbatch"), str(tiny_recipe), "--data.root", str(tiny_shards),
                        "--data.num_workers", "1", "--trainer.max_epochs", "1"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    job = p.stdout.strip().split(";")[0]
    batch_out = tmp_path / f"slurm-{job}.out"
    assert p.returncode == 0, p.stderr[-2000:] + (batch_out.read_text()[-3000:] if batch_out.exists() else "")
    folder = tmp_path / "runs" / "tiny" / f"fit-slurm-{job}"
    rec = json.loads((folder / "record.json").read_text())
    assert rec["hardware"]["world_size"] == 2 and rec["run_dir"].endswith(f"fit-slurm-{job}")
    for rank in (0, 1):  # one log per rank, in the run folder, named as `cnnrepro submit`'s
        assert (folder / "slurm" / f"{job}_{rank}_log.err").is_file()
    assert "distributed_backend=gloo" in (folder / "slurm" / f"{job}_0_log.err").read_text()
    batch = batch_out.read_text()
    assert f"run folder {Path('runs') / 'tiny' / f'fit-slurm-{job}'}" in batch
    assert "distributed_backend" not in batch  # the ranks' output is not in the batch file


@pytest.mark.parametrize("at, how, rank", [
    ("step", "SIGKILL", 1),   # kill -9 of one rank mid-run: the other waits in a gradient all-reduce
    ("init", "SIGKILL", 1),   # at startup, before the rendezvous: rank 0 waits for it in the TCPStore
    ("setup", "raise", 0),    # an error at startup, after the rendezvous: rank 1 waits in a collective
])
def test_a_dead_rank_fails_the_job_within_a_minute_with_its_error(tmp_path, cluster, tiny_shards, tiny_recipe,
                                                                   at, how, rank):
    p = _submit(tmp_path, cluster, tiny_shards, tiny_recipe, "--trainer.max_epochs", "2",
                "--trainer.callbacks+=signal_helpers.DieOnRank", "--trainer.callbacks.rank", str(rank),
                "--trainer.callbacks.at", at, "--trainer.callbacks.how", how, "--wait",
                timeout=240)  # a job that outlives its dead rank by minutes fails here
    t_returned = time.time()
    job, folder = _job(p.stdout)
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-3000:]
    died = re.search(r"test: rank \d dies \(\w+\) at ([\d.]+)", (folder / "slurm" / f"{job}_{rank}_log.err").read_text())
    assert died, _logs(folder)
    # SLURM ended the job and `--wait` said so within a minute of the death (not at the DDP timeout)
    assert t_returned - float(died.group(1)) < 60, t_returned - float(died.group(1))
    assert _sacct_state(job, cluster) == "FAILED"
    # one line: the job, its state, the rank that died first and why, and where its log is
    line = next(ln for ln in p.stderr.splitlines() if ln.startswith(f"cnnrepro: job {job} FAILED"))
    assert f"rank {rank}" in line and f"{job}_{rank}_log.err" in line, line
    assert ("injected failure on rank 0" if how == "raise" else "Killed") in line, line
    print(f"\n{at}/{how}: `--wait` returned {t_returned - float(died.group(1)):.1f} s after rank {rank} died: {line}")
