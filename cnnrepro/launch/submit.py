"""The same fit as a SLURM job (``cnnrepro submit``, parsed in cnnrepro/commands/submit.py).

Follow one submission: the fit overrides are parsed by the real ``cnnrepro fit`` parser first, so
a typo fails here, on the login node, not on the cluster; the SLURM options come from the cluster config file (defaults) and the
command line (overrides); the run folder ``runs/<recipe>/fit-NNN`` is chosen here, on the
submitting machine, and passed to the job as ``--run.folder``, so every (re)start of the job
trains in the same folder and resumes from its ``checkpoints/last.ckpt`` when there is one;
submitit writes the sbatch script (``#SBATCH --signal=USR2@90``, ``srun`` one task per device)
and pickles a ``FitJob``; each task runs ``cnnrepro fit`` in-process, Lightning reads the rank
layout from SLURM's environment (SLURMEnvironment) and runs DDP (NCCL on GPUs, gloo on CPUs).

Requeue: submitit owns it (see cnnrepro/lit/preemption.py for why, and for the step-boundary
checkpoint); ``FitJob.checkpoint`` resubmits the same arguments, which resume by construction.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

import submitit
import torch.distributed as dist
import yaml
from submitit.core.utils import FailedJobError

from cnnrepro.errors import UserError
from cnnrepro.lit.cli import parse_only, run_command
from cnnrepro.lit.preemption import REQUEUE_EXIT, REQUEUE_SIGNAL, Preempted, close_wandb
from cnnrepro.lit.runs import next_run_dir
from cnnrepro.recipes import recipe_chain

__all__ = ["FitJob", "SubmitError", "build_submission", "submit", "load_cluster_config", "CLUSTER_KEYS",
           "CONFIG_ENV", "DEFAULT_CONFIG", "build_array_submission", "submit_array", "seed_list", "wait_for",
           "wait_for_all"]

DEFAULT_CONFIG = Path("~/.config/cnnrepro/slurm.yaml")
CONFIG_ENV = "CNNREPRO_SLURM_CONFIG"

# cluster-config key -> meaning; the same names as the command-line options (with _ for -)
CLUSTER_KEYS = {
    "partition": "SLURM partition",
    "account": "account to charge",
    "qos": "quality of service",
    "constraint": "node features (--constraint)",
    "time": "time limit: minutes, or D-HH:MM:SS / HH:MM:SS",
    "nodes": "number of nodes",
    "gpus_per_node": "GPUs per node (one task per GPU)",
    "tasks_per_node": "tasks per node on CPU-only nodes (one DDP process each)",
    "cpus_per_task": "CPUs per task (loader workers + 1)",
    "mem": "memory per node, e.g. 64G",
    "job_name": "job name (default cnnrepro-<recipe>)",
    "sbatch_extra": "mapping of extra #SBATCH options, e.g. {exclude: node7, mail-type: END}",
    "setup": "shell lines run before the job (module load ..., source venv/bin/activate)",
    "logs": "folder of submitit's scripts and logs (default <run folder>/slurm)",
    "signal_delay_s": "seconds before the time limit at which SIGUSR2 asks for a checkpoint (default 90)",
    "max_num_timeout": "requeues after hitting the time limit before giving up (default 3; preemptions are unlimited)",
}


class SubmitError(UserError):
    """A user error of `cnnrepro submit`: one line, names the flag / key and the fix."""


def _parse_time(value: Any, source: str) -> int:
    """Minutes from 90, "90", "1:30:00", "2-00:00:00"."""
    if isinstance(value, int):
        return value
    s = str(value).strip()
    try:
        if s.isdigit():
            return int(s)
        days = 0
        if "-" in s:
            d, s = s.split("-", 1)
            days = int(d)
        parts = [int(p) for p in s.split(":")]
        if len(parts) == 3:
            h, m, sec = parts
        elif len(parts) == 2:
            h, m, sec = 0, parts[0], parts[1]
        else:
            raise ValueError
        return days * 1440 + h * 60 + m + (1 if sec else 0)
    except ValueError:
        raise SubmitError(f"{source}: time {value!r} is not minutes or [D-]HH:MM:SS") from None


def load_cluster_config(path: str | None) -> dict[str, Any]:
    """Defaults from --cluster-config, $CNNREPRO_SLURM_CONFIG or ~/.config/cnnrepro/slurm.yaml."""
    explicit = path or os.environ.get(CONFIG_ENV)
    p = Path(explicit or DEFAULT_CONFIG).expanduser()
    if not p.exists():
        if explicit:
            raise SubmitError(f"cluster config {p} (from --cluster-config or ${CONFIG_ENV}) does not exist; "
                              f"see slurm/cluster.example.yaml")
        return {}
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise SubmitError(f"cluster config {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SubmitError(f"cluster config {p} must be a mapping of keys to values")
    unknown = sorted(set(data) - set(CLUSTER_KEYS))
    if unknown:
        raise SubmitError(f"cluster config {p}: unknown key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(CLUSTER_KEYS)}")
    if "sbatch_extra" in data and not isinstance(data["sbatch_extra"], dict):
        raise SubmitError(f"cluster config {p}: sbatch_extra must be a mapping (option: value)")
    if "setup" in data and not isinstance(data["setup"], list):
        raise SubmitError(f"cluster config {p}: setup must be a list of shell lines")
    return data


def _given(overrides: list[str], key: str) -> bool:
    # whether the command line sets `key` (already parsed and type-checked by parse_only): a
    # recipe's trainer.devices yields to the SLURM layout, a flag on the command line does not
    return any(a == key or a.startswith(key + "=") for a in overrides)


class FitJob:
    """The callable submitit pickles: one `cnnrepro fit` per SLURM task.

    Implements submitit's Checkpointable protocol (a ``checkpoint`` method): when submitit is told
    to requeue (by cnnrepro.lit.preemption at a step boundary), it asks for the submission to run
    next time, which is the same one: ``--run.folder`` makes it resume from ``last.ckpt``.
    """

    def __init__(self, fit_args: list[str], run_folder: str):
        self.fit_args = list(fit_args)
        self.run_folder = run_folder

    def __call__(self) -> dict | None:
        _forget_earlier_result()
        recipe, *args = self.fit_args
        try:
            run_command("fit", recipe_chain(recipe), args)  # a UserError fails the job with its message
        except Preempted as e:
            if e.code == REQUEUE_EXIT and _global_rank() == 0:
                _requeue_through_submitit()
            raise
        finally:
            # a process group left open crashes the interpreter's exit in about one job in five
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
        rec = Path(self.run_folder) / "record.json"
        return json.loads(rec.read_text()) if rec.exists() and _global_rank() == 0 else None

    def checkpoint(self, *args, **kwargs):
        return submitit.helpers.DelayedSubmission(FitJob(self.fit_args, self.run_folder))


def _global_rank() -> int:
    return int(os.environ.get("SLURM_PROCID", "0"))


def _requeue_through_submitit() -> None:
    """Rank 0, after a requeue signal stopped the run (lit/preemption.py) and the trainer tore down:
    close W&B, then run submitit's handler of the signal, which calls ``FitJob.checkpoint``, runs
    `scontrol requeue` (SIGTERM to every process of the step) and exits the process."""
    close_wandb()  # before the requeue's SIGTERM reaches W&B's service process
    handler = signal.getsignal(REQUEUE_SIGNAL)  # submitit's again: the callback restored it
    if callable(handler) and "submitit" in getattr(handler, "__module__", ""):
        handler(REQUEUE_SIGNAL, None)
    else:
        print(f"cnnrepro: no submitit handler for {REQUEUE_SIGNAL.name}: checkpoint written, not requeued",
              file=sys.stderr, flush=True)


def _forget_earlier_result() -> None:
    # A requeued job keeps its job id, so this task's result file from an earlier attempt (an
    # error, say, from a rank that died while the job was being requeued) has the same path as
    # this attempt's: remove it, so that only this attempt's outcome can be read as the job's.
    if os.environ.get("SUBMITIT_FOLDER"):  # set by submitit's job runner
        submitit.JobEnvironment().paths.result_pickle.unlink(missing_ok=True)


def build_submission(a: Namespace, overrides: list[str]):
    """(executor parameters, FitJob, run folder, logs folder, wait) from `cnnrepro submit`'s
    parsed SLURM options ``a`` and the fit overrides; nothing is submitted."""
    cfg = load_cluster_config(a.cluster_config)

    def pick(name: str, default=None):
        v = getattr(a, name, None)
        return v if v is not None else cfg.get(name, default)

    chain = recipe_chain(a.recipe)
    recipe = chain[-1]
    # the real fit parser: unknown keys, wrong types and typos fail now (jsonargparse's message)
    fit_cfg = parse_only("fit", chain, overrides)
    if fit_cfg["run"]["folder"] is not None:
        raise SubmitError("--run.folder is chosen by `cnnrepro submit`; use --run.dir / --run.name to place it")
    if fit_cfg.get("ckpt_path") is not None:
        raise SubmitError("--ckpt_path: a submitted job resumes from its own run folder's last.ckpt; "
                          "to continue an earlier run, `cnnrepro fit ... --ckpt_path PATH` inside an sbatch script "
                          "(slurm/fit.sbatch)")
    name = fit_cfg["run"]["name"] or fit_cfg["model"]["arch"]

    nodes = int(pick("nodes", 1))
    gpus = pick("gpus_per_node")
    tasks = pick("tasks_per_node")
    if gpus and tasks and int(tasks) != int(gpus):
        raise SubmitError(f"--gpus-per-node {gpus} and --tasks-per-node {tasks} disagree: one task per GPU")
    per_node = int(gpus or tasks or 1)
    world = nodes * per_node

    fit_args = [str(recipe), *overrides]
    # Lightning checks that num_nodes x devices equals SLURM_NTASKS; say it explicitly
    if not _given(overrides, "--trainer.num_nodes"):
        fit_args += ["--trainer.num_nodes", str(nodes)]
    if not _given(overrides, "--trainer.devices"):
        fit_args += ["--trainer.devices", str(per_node)]
    if not _given(overrides, "--trainer.accelerator"):
        fit_args += ["--trainer.accelerator", "gpu" if gpus else "cpu"]
    if world > 1 and not _given(overrides, "--trainer.strategy"):
        # DDPStrategy picks the backend from the device: NCCL for CUDA, gloo for CPU
        fit_args += ["--trainer.strategy", "ddp"]

    extra: dict[str, Any] = dict(cfg.get("sbatch_extra") or {})
    for kv in a.sbatch_extra:
        if "=" not in kv:
            raise SubmitError(f"--sbatch-extra {kv!r}: expected KEY=VALUE (e.g. exclude=node7)")
        k, v = kv.split("=", 1)
        extra[k.strip().lstrip("-")] = v
    # submitit wants python identifiers for sbatch options (it turns _ back into -)
    extra = {k.replace("-", "_"): v for k, v in extra.items()}
    extra.setdefault("requeue", True)  # let SLURM requeue a preempted job (PreemptMode=REQUEUE)

    params: dict[str, Any] = {
        # a task that exits non-zero or is killed ends the whole step at once: without this the
        # other ranks wait for it in a DDP collective (or the rendezvous) until the DDP timeout
        "srun_args": ["--kill-on-bad-exit=1"],
        "nodes": nodes,
        "ntasks_per_node": per_node,
        "job_name": pick("job_name") or f"cnnrepro-{name}",
        "signal_delay_s": int(cfg.get("signal_delay_s", 90)),
        "max_num_timeout": int(cfg.get("max_num_timeout", 3)),
        "additional_parameters": extra,
    }
    if gpus:
        params["gpus_per_node"] = int(gpus)
    for key in ("cpus_per_task", "mem", "partition", "account", "qos", "constraint"):
        v = pick(key)
        if v is not None:
            params[key] = int(v) if key == "cpus_per_task" else str(v)
    t = pick("time")
    if t is not None:
        params["time"] = _parse_time(t, "--time" if a.time is not None else "cluster config time")
    else:
        params["time"] = 60 * 24
    if cfg.get("setup"):
        params["setup"] = [str(s) for s in cfg["setup"]]
    # the run folder is made last, once every option has been checked: a refused submission
    # leaves no empty fit-NNN behind (and does not shift the next run's number)
    folder = next_run_dir(Path(fit_cfg["run"]["dir"]) / name, "fit").resolve()
    fit_args += ["--run.folder", str(folder)]
    logs = Path(a.logs or cfg.get("logs") or (folder / "slurm")).expanduser()
    return params, FitJob(fit_args, str(folder)), folder, logs, a.wait


def _require_sbatch(folders: list[Path]) -> None:
    if shutil.which("sbatch") is None:
        for f in folders:
            f.rmdir() if f.exists() and not any(f.iterdir()) else None
        raise SubmitError("sbatch not found: `cnnrepro submit` needs a SLURM login node "
                          "(on this machine: tests/launch/slurm-cluster.sh start)")


def _files_under(folder: Path) -> set[Path] | None:
    return set(folder.rglob("*")) if folder.exists() else None


def _submit_or_clean_up(executor: submitit.SlurmExecutor, fits: list[FitJob], folders: list[Path],
                        logs: Path) -> list[submitit.Job]:
    """Submit one fit as a job, or several as one job array (submitit's ``batch``: one ``sbatch
    --array``). When sbatch refuses, remove what this submission made (the run folders, where
    nothing ran, and submitit's files in ``logs``) and raise sbatch's own reason as one line."""
    before = _files_under(logs)  # an array's logs folder is shared with earlier arrays of the recipe
    err = io.StringIO()
    try:
        # submitit prints sbatch's stderr itself before raising it: keep it for the one-line message
        with contextlib.redirect_stderr(err):
            if len(fits) == 1:
                return [executor.submit(fits[0])]
            with executor.batch():
                jobs = [executor.submit(f) for f in fits]
            return jobs
    except (FailedJobError, OSError) as e:
        if before is None:
            shutil.rmtree(logs, ignore_errors=True)
        else:
            for f in sorted((_files_under(logs) or set()) - before, reverse=True):  # files before their folders
                f.rmdir() if f.is_dir() else f.unlink(missing_ok=True)
        for f in folders:
            shutil.rmtree(f, ignore_errors=True)
        lines = [ln.strip() for ln in (str(e) or err.getvalue()).splitlines() if ln.strip()]
        reason = lines[-1] if lines else type(e).__name__
        what = "job" if len(fits) == 1 else f"job array of {len(fits)} runs"
        removed = f"the run folder {folders[0]} was" if len(folders) == 1 else \
            f"its run folders {', '.join(f.name for f in folders)} in {folders[0].parent} were"
        raise SubmitError(f"sbatch refused the {what} ({reason}); check the SLURM options "
                          f"(--partition, --gpus-per-node / --tasks-per-node, --mem, --time, --sbatch-extra); "
                          f"{removed} removed") from None


def _seed(fit: FitJob) -> str | None:
    a = fit.fit_args
    return a[len(a) - 1 - a[::-1].index("--seed_everything") + 1] if "--seed_everything" in a else None


def _announce(params: dict, jobs: list, fits: list[FitJob], folders: list[Path], seeds: bool) -> None:
    """What was submitted and where to look: the one place that prints it, for a job and an array."""
    layout = f"{params['nodes']} node(s) x {params['ntasks_per_node']} task(s)"
    first = str(jobs[0].job_id)
    job_id = first.split("_")[0]  # an array task's id is <array id>_<index>
    if len(jobs) == 1:
        print(f"submitted job {job_id}: {layout}")
    else:
        print(f"submitted job array {job_id}: {len(jobs)} run(s), each {layout}")
    for job, fit, folder in zip(jobs, fits, folders):
        (folder / "slurm_job_id.txt").write_text(f"{job.job_id}\n")
        print(f"run folder: {folder}" + (f" (job {job.job_id}, seed {_seed(fit)})" if seeds else ""))
    rank0 = jobs[0].task(0).paths.stdout
    if len(jobs) == 1:
        print(f"logs:       {rank0} (rank 0)")
    else:
        print(f"logs:       {rank0.parent}/{job_id}_<i>_0_log.out (rank 0 of run i)")
    # -D: every attempt of a requeued job (plain `sacct -j` shows only its newest)
    print(f"watch:      squeue -j {job_id}; sacct -D -j {job_id}; tail -f {rank0}")
    sys.stdout.flush()


def _submit_all(params: dict, fits: list[FitJob], folders: list[Path], logs: Path, wait: bool,
                seeds: bool = False) -> int:
    _require_sbatch(folders)
    params = dict(params)
    executor = submitit.SlurmExecutor(folder=logs, max_num_timeout=params.pop("max_num_timeout"))
    executor.update_parameters(**params)
    jobs = _submit_or_clean_up(executor, fits, folders, logs)
    _announce(params, jobs, fits, folders, seeds)
    if not wait:
        return 0
    return wait_for_all(jobs, folders)


def submit(params: dict, job_fn: FitJob, folder: Path, logs: Path, wait: bool) -> int:
    """Submit through submitit; with ``wait``, block until the job ends and print its record."""
    return _submit_all(params, [job_fn], [folder], logs, wait)


# SLURM job states after which nothing more happens to the job. PREEMPTED and REQUEUED are not:
# a requeued job (submitit's own requeue on SIGUSR2, or PreemptMode=REQUEUE) runs again.
_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
          "SPECIAL_EXIT", "REVOKED"}
# srun's line for a task that ended badly, in the batch script's stderr (submitit's rank-0 .err file)
_SRUN_TASK_END = re.compile(r"srun: error: \S+: tasks? ([\d,-]+): (.+)")
# slurmstepd's notice that the job is stopped to run again: what srun says after it is about that
# attempt, not about the job's end
_REQUEUED = re.compile(r"\*\*\* JOB \S+ ON \S+ CANCELLED AT \S+ DUE TO (JOB REQUEUE|PREEMPTION)")


def slurm_state(job_id: str) -> str | None:
    """The job's state, as soon as SLURM knows it: squeue (the controller's own view, no accounting
    lag) while the controller still lists the job, else sacct; None when neither knows the job."""
    p = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, check=False)
    state = p.stdout.split()[0] if p.returncode == 0 and p.stdout.strip() else None
    if state is None:
        p = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True, text=True,
                           check=False)
        if p.returncode == 0 and p.stdout.strip():
            state = p.stdout.strip().splitlines()[-1].split()[0]  # "CANCELLED by 0" -> CANCELLED
    return state


class _Polls:
    """Seconds to the next look at SLURM: 1 s at first, then 1.5x longer each time, at most ``cap``.

    A job that fails at startup is reported within seconds; a week-long job costs the controller
    one query every ``cap`` seconds. Anything new in the job's logs (srun's task-end lines, the
    requeue notice, a traceback) brings the interval back to 1 s: SLURM's state follows shortly.
    """

    def __init__(self, first: float = 1.0, cap: float = 30.0):
        self.first, self.cap, self.delay = first, cap, first

    def next(self) -> float:
        d, self.delay = self.delay, min(self.cap, self.delay * 1.5)
        return d

    def reset(self) -> None:
        self.delay = self.first


class _LogTail:
    """The complete lines a growing log file gained since the last read (the file may not exist yet)."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def read(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        self.offset += end
        return data[:end].decode(errors="replace").splitlines()


class _Watch:
    """One SLURM job (or one task of a job array) until it ends: its state, asked of SLURM on the
    ``_Polls`` schedule, and srun's task-end lines from its batch script's stderr."""

    def __init__(self, job, folder: Path, poll_cap_s: float):
        self.job, self.folder = job, folder
        self.polls = _Polls(cap=poll_cap_s)
        # the batch script's stderr, shared with rank 0's (submitit's #SBATCH --error): srun's task-end lines
        self.batch_err = _LogTail(Path(job.paths.folder) / f"{job.job_id}_0_log.err")
        self.srun_lines: list[str] = []  # srun's task-end lines of the current attempt, first first
        self.state = self.seen = None
        self.next_poll = 0.0

    def read_log(self) -> None:
        for ln in self.batch_err.read():
            if _REQUEUED.search(ln):
                self.srun_lines = []
            elif _SRUN_TASK_END.search(ln):
                self.srun_lines.append(ln)
            else:
                continue
            self.polls.reset()  # a task ended or the job is requeued: SLURM's state changes next
            self.next_poll = min(self.next_poll, time.monotonic())

    def ended(self) -> bool:
        """Read the log, and ask SLURM when the next look is due; True once the job has ended."""
        self.read_log()
        if time.monotonic() < self.next_poll:
            return False
        state = slurm_state(str(self.job.job_id))
        if state in _ENDED:
            self.state = state
            return True
        if state is None and self.seen is not None:
            # gone from squeue (MinJobAge) on a cluster without accounting: ended, state unknown;
            # the tasks' result files decide
            self.state = "ENDED" if _all_succeeded(self.job) else "ENDED (no result from every task)"
            return True
        self.seen = self.seen or state
        self.next_poll = time.monotonic() + self.polls.next()
        return False

    def report(self) -> int:
        """Print the run record (0), or the job's end and the dead rank's error in one line (1)."""
        job = self.job
        self.read_log()
        if self.state not in ("COMPLETED", "ENDED"):
            print(f"cnnrepro: job {job.job_id} {self.state}: {_dead_rank_error(job, self.srun_lines)}",
                  file=sys.stderr, flush=True)
            return 1
        try:
            results = job.results()  # every task's result file; job.result() refuses multi-task jobs
        except Exception as e:  # noqa: BLE001 - a task that raised although the job completed
            print(f"cnnrepro: job {job.job_id} COMPLETED but a task failed: {_last_line(str(e))}", file=sys.stderr,
                  flush=True)
            return 1
        rec = next((r for r in results if r), None)
        if rec is None:
            print(f"cnnrepro: job {job.job_id} ended without a run record in {self.folder}", file=sys.stderr,
                  flush=True)
            return 1
        print(json.dumps(rec, indent=1), flush=True)
        return 0


def wait_for(job, folder: Path, *, poll_cap_s: float = 30.0) -> int:
    """Block until SLURM says the job ended; print its run record (0) or the dead rank's error (1)."""
    return wait_for_all([job], [folder], poll_cap_s=poll_cap_s)


def wait_for_all(jobs: list, folders: list[Path], *, poll_cap_s: float = 30.0) -> int:
    """``wait_for`` of every job (the tasks of a ``--seeds`` array) at once: each one's outcome is
    printed as soon as it ends, whatever the others do; 1 if any of them did not succeed."""
    watches = [_Watch(j, f, poll_cap_s) for j, f in zip(jobs, folders)]
    failed = 0
    while watches:
        for w in list(watches):
            if w.ended():
                failed += w.report()
                watches.remove(w)
        if watches:
            due = min(w.next_poll for w in watches)
            time.sleep(min(1.0, max(0.0, due - time.monotonic())))
    return 1 if failed else 0


# -- seeds: N runs of one recipe as one SLURM job array (`cnnrepro submit RECIPE --seeds N`) ----------
#
# The array reuses build_submission for its first run (same parsing, same refusals, same SLURM
# parameters) and only varies the seed and the run folder; it is submitted, announced, cleaned up
# after a refusal and waited for by the single-job code above (``_submit_all``).

def seed_list(first: Any, n: int) -> list[int]:
    """The seeds of ``--seeds n``: ``first``, ``first + 1``, ... (``first``: the --seed_everything of
    the command line, else the recipe's)."""
    if n < 1:
        raise SubmitError(f"--seeds {n}: give the number of runs, 1 or more")
    if isinstance(first, bool) or not isinstance(first, int):
        raise SubmitError(f"--seeds needs an integer first seed, but seed_everything is {first!r}; "
                          f"pass --seed_everything S (the runs then use S, S+1, ...)")
    return [first + i for i in range(n)]


def build_array_submission(a: Namespace, overrides: list[str], n: int):
    """(executor parameters, [FitJob], [run folder], logs folder, wait) of ``--seeds n``: one fit per
    seed, each in its own ``runs/<recipe>/fit-NNN`` with ``--seed_everything`` set; nothing submitted.

    The W&B group of every run is the run group (``run.name``, by default the recipe's file name),
    shared by construction: only the seed and the folder differ between the tasks.
    """
    chain = recipe_chain(a.recipe)
    seeds = seed_list(parse_only("fit", chain, overrides).get("seed_everything"), n)
    # the seed is appended last: jsonargparse takes the last value, so it overrides the recipe's
    params, first, folder0, logs, wait = build_submission(a, [*overrides, "--seed_everything", str(seeds[0])])
    jobs, folders = [first], [folder0]
    for seed in seeds[1:]:
        folder = next_run_dir(folder0.parent, "fit").resolve()
        args = list(first.fit_args)
        args[len(args) - 1 - args[::-1].index("--seed_everything") + 1] = str(seed)
        args[len(args) - 1 - args[::-1].index("--run.folder") + 1] = str(folder)
        job = copy.copy(first)  # whatever else a FitJob carries is the same for every seed
        job.fit_args, job.run_folder = args, str(folder)
        jobs.append(job)
        folders.append(folder)
    if not (a.logs or load_cluster_config(a.cluster_config).get("logs")):
        # one array, one log folder: beside the runs rather than inside the first run's folder
        logs = folder0.parent / "slurm"
    if not (a.job_name or load_cluster_config(a.cluster_config).get("job_name")):
        params["job_name"] = f"{params['job_name']}-seeds"
    return params, jobs, folders, logs, wait


def submit_array(params: dict, jobs: list[FitJob], folders: list[Path], logs: Path, wait: bool) -> int:
    """Submit the fits as one SLURM job array; the same submission, refusal and ``--wait`` as a
    single job (``submit``), for every task of the array."""
    return _submit_all(params, jobs, folders, logs, wait, seeds=True)


def _all_succeeded(job) -> bool:
    for t in range(job.num_tasks):
        path = Path(job.task(t).paths.result_pickle)
        try:
            if submitit.core.utils.pickle_load(path)[0] != "success":
                return False
        except Exception:  # noqa: BLE001 - missing, or half-written by a task killed while writing it
            return False
    return True


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _exception_line(trace: str) -> str:
    """``Type: message``, the first line of the final exception of a formatted traceback (its
    message may run over several lines)."""
    lines = trace.rstrip().splitlines()
    last_frame = max((i for i, ln in enumerate(lines) if ln.startswith("  File ")), default=-1)
    for ln in lines[last_frame + 1:]:
        if ln and not ln[0].isspace():  # frames' source lines and carets are indented
            return ln.strip()[:500]
    return _last_line(trace)[:500]


# a rank's error that only says a peer went away: the consequence of another rank's death
_PEER_LOST = re.compile(r"[Cc]onnection (closed|reset) by peer|remote worker|Broken pipe|communicator was aborted")


def _dead_rank_error(job, srun_lines: list[str]) -> str:
    """The rank that died first and why, in one line, with the log to read.

    The others fail after it, often with an error of their own that only says a peer went away
    (gloo's "Connection closed by peer"), sometimes before srun has seen the first one exit. So:
    a rank whose traceback (submitit's result file) is not such a consequence, the earliest one;
    else a rank srun saw end without a traceback (killed by a signal: SIGKILL, out of memory),
    in srun's order; else srun's first task-end line; else the earliest error result.
    """
    errors = {}
    for t in range(job.num_tasks):
        path = Path(job.task(t).paths.result_pickle)
        if path.exists():
            try:
                outcome, payload = submitit.core.utils.pickle_load(path)
            except Exception:  # noqa: BLE001, S112 - half-written by a task killed while writing it
                continue
            if outcome == "error":
                errors[t] = (path.stat().st_mtime, _exception_line(str(payload)))
    ended = {}  # rank -> srun's reason, in srun's order
    for ln in srun_lines:
        m = _SRUN_TASK_END.search(ln)
        for t in _task_ids(m.group(1)):
            ended.setdefault(t, m.group(2).strip())

    def say(t: int, err: str) -> str:
        why = ended.get(t)
        return f"rank {t}: {why + ': ' if why else ''}{err} (log: {job.task(t).paths.stderr})".replace(": ()", " (")

    own = {t: e for t, e in errors.items() if not _PEER_LOST.search(e[1])}
    if own:
        t = min(own, key=lambda k: own[k][0])
        return say(t, own[t][1])
    for t in ended:
        if t not in errors:
            err = _error_line(Path(job.task(t).paths.stderr))
            return say(t, err) if err else f"rank {t}: {ended[t]} (log: {job.task(t).paths.stderr})"
    for t in ended:
        return say(t, errors[t][1])
    if errors:
        t = min(errors, key=lambda k: errors[k][0])
        return say(t, errors[t][1])
    return (f"no rank reported an error; see {job.task(0).paths.stderr} and "
            f"`sacct -D -j {job.job_id}` (-D: every attempt of a requeued job)")


def _task_ids(spec: str) -> list[int]:
    """srun's task list: "1", "0-1", "0,2-3"."""
    out = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def _error_line(log: Path) -> str:
    """The last line of a log that looks like a Python exception (``SomethingError: ...``)."""
    try:
        text = log.read_text(errors="replace")[-20000:]
    except OSError:
        return ""
    found = [ln.strip() for ln in text.splitlines() if re.match(r"^\w[\w.]*(Error|Exception|Interrupt)\b.*:", ln)]
    return found[-1] if found else ""
