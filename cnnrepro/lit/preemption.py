"""Preemption and time limits: checkpoint at a step boundary, write checkpoints atomically, resume.

Who requeues (exactly one owner per job):
    Under ``cnnrepro submit`` the owner is **submitit**. Its job wrapper catches the requeue signal
    (SIGUSR2, sent by SLURM ``--signal=USR2@90`` before the time limit, or by a preempting
    scheduler/``scancel -s USR2``), calls the submitted callable's ``checkpoint()`` and runs
    ``scontrol requeue``. Lightning's own SLURM auto-requeue is switched off
    (``SLURMEnvironment(auto_requeue=False)``, see ``slurm_plugins``), so nobody requeues twice.
    Under a plain ``sbatch`` + ``srun cnnrepro fit`` (slurm/fit.sbatch) there is no submitit
    wrapper; then this callback itself runs ``scontrol requeue`` and is the one owner.

    Why not Lightning's auto-requeue: its handler saves the checkpoint *inside* the signal
    handler, i.e. wherever Python happened to be (possibly between two parameter updates of
    ``optimizer.step``, or inside a collective that the other ranks have not entered), and its
    default signal is SIGUSR1, which NCCL uses. Submitit's handler has the same problem, so this
    callback *defers* it: the signal only sets a flag; at a step boundary all ranks agree on the
    flag, save ``last.ckpt`` atomically, the trainer tears down (loggers flushed), and only then is
    submitit's handler run (rank 0, by ``cnnrepro.launch.submit.FitJob``), which requeues and exits.

Agreeing on the flag costs no host-device synchronisation: on one process the flag is a Python
int; under DDP each rank adds its flag to a non-blocking all-reduce of one CPU integer over a gloo
group at every step boundary and reads the previous step's result, so all ranks act on the same
step, one step after the first of them was signalled.

SIGTERM (``scontrol requeue``, ``scancel``, or preemption with PreemptMode=REQUEUE, all send
SIGTERM and then SIGKILL after KillWait) is treated the same way minus the requeue: checkpoint
at the next step boundary, then stop with exit code 143; whoever sent SIGTERM decides what happens
next. Lightning's own SIGTERM notifier is *not* chained: it makes the loops raise
``SIGTERMException``, a ``SystemExit`` with code None (exit 0), at the first validation batch or
epoch end, with nothing saved; and under DDP it broadcasts inside the signal handler.

Where a signal can land, and where the run stops (every path saves, then exits 143 or 3):
  - during a step that is not the epoch's last: checkpoint after that step, stop;
  - during the epoch's last step, its validation or its end: a checkpoint after the last step
    would make Lightning skip that epoch's validation and scheduler step on resume, so the epoch
    finishes (validation included), ``last.ckpt`` is written at the epoch end, and the run stops
    before the next epoch's first step. That costs the rest of the validation pass: KillWait (or
    the USR2 lead time) must cover one validation pass;
  - during the last epoch's last step or validation: the run ends normally (everything saved, run
    record written, exit 0, no requeue): there is nothing left to resume.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from lightning_fabric.plugins.environments import SLURMEnvironment

from .checkpoint_io import AtomicCheckpointIO

__all__ = ["Preemption", "Preempted", "slurm_plugins", "REQUEUE_SIGNAL", "REQUEUE_EXIT", "close_wandb"]

# NCCL reserves SIGUSR1; submitit's default preemption signal is SIGUSR2 (env SUBMITIT_PREEMPT_SIGNAL)
REQUEUE_SIGNAL = signal.SIGUSR2


# exit code of a run stopped to be requeued (143, as if killed by SIGTERM, for a plain stop)
REQUEUE_EXIT = 3


class Preempted(SystemExit):
    """Raised on every rank after the preemption checkpoint is on disk: the process ends here."""


def slurm_plugins() -> list:
    """Trainer plugins for a run under SLURM: Lightning must not requeue (see module docstring)."""
    plugins: list = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins


def _handlers_besides_lightning(handler) -> list:
    """The callables of a SIGTERM handler minus Lightning's notifier (see the module docstring).

    Lightning composes its notifier with the handler it found (``_HandlersCompose``); there is no
    public way to register only the latter.
    """
    members = getattr(handler, "signal_handlers", None)
    if members is None:
        return [handler] if callable(handler) else []
    out = []
    for h in members:
        if isinstance(h, int):
            h = signal.getsignal(h)
        if callable(h) and getattr(h, "__name__", "") != "_sigterm_notifier_fn":
            out.append(h)
    return out


def close_wandb() -> None:
    """Finish the W&B run and stop W&B's service process; for after the trainer's teardown (which
    still logs to W&B), before a requeue.

    A requeue (`scontrol requeue`, also the one submitit runs) sends SIGTERM to every process of
    the job step at once, W&B's service process included; W&B's exit hook then finds its service
    gone and prints a ``ConnectionResetError`` traceback in rank 0's log, which reads as a crash.
    The run is resumed under the same id by the next attempt (lit/runs.py).
    """
    wandb = sys.modules.get("wandb")  # W&B was imported only if the run has a W&B logger
    if wandb is None:
        return
    try:
        if wandb.run is not None:
            wandb.run.mark_preempting()  # W&B shows the run as preempted, not crashed
        wandb.teardown()
    except Exception as e:  # noqa: BLE001 - e.g. a SIGTERM to the whole step already ended W&B's service
        print(f"cnnrepro: W&B could not be closed before stopping ({type(e).__name__}: {e}); the next "
              f"attempt resumes the same W&B run", file=sys.stderr, flush=True)


class _FlagVote:
    """Every rank's flag, max-reduced without blocking: ``vote(mine)`` returns the previous vote's result.

    A CPU tensor over a gloo group: no device synchronisation (NCCL would need a device tensor and a
    ``.item()`` sync). All ranks call ``vote`` at the same step boundaries, so they read the same
    result at the same step.

    ``timeout_s`` bounds every wait: a new group gets torch's default (30 min for gloo), not the
    training group's, and a peer that hangs must not hold this rank longer than the DDP timeout.
    """

    def __init__(self, timeout_s: float):
        # its own gloo group: CPU tensors under NCCL, and never interleaved with DDP's gradient
        # all-reduces on the training group
        self._group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
        self._buf = torch.zeros(1, dtype=torch.int32)
        self._work = None

    def vote(self, flag: int) -> int:
        agreed = 0
        if self._work is not None:
            self._work.wait()  # started a whole step ago: already done
            agreed = int(self._buf[0])
        self._buf = torch.tensor([flag], dtype=torch.int32)
        self._work = dist.all_reduce(self._buf, op=dist.ReduceOp.MAX, group=self._group, async_op=True)
        return agreed

    def close(self) -> None:
        if self._work is not None:
            self._work.wait()
            self._work = None


class Preemption(pl.Callback):
    """Signal -> flag; next step boundary -> atomic ``last.ckpt`` on every rank's behalf -> requeue.

    Args:
        ckpt_dir: where ``last.ckpt`` goes (the run's ``checkpoints/``).
        every_n_steps: also save ``last.ckpt`` every n optimizer steps (0: only on signals and
            at epoch ends), bounding what a kill without warning (SIGKILL, node failure) loses.
        requeue_signal: the signal that means "checkpoint and requeue".
        vote_timeout_s: under DDP, how long a rank waits for the others' flags (``--run.ddp_timeout_s``).
    """

    def __init__(self, ckpt_dir: str | Path, every_n_steps: int = 0, requeue_signal: int = REQUEUE_SIGNAL,
                 vote_timeout_s: float = 300.0):  # 300: --run.ddp_timeout_s's default (lit/cli.py)
        self.ckpt_dir = Path(ckpt_dir)
        self.every_n_steps = every_n_steps
        self.requeue_signal = requeue_signal
        self.vote_timeout_s = vote_timeout_s
        self._flag = 0  # 0 nothing, 1 stop (SIGTERM), 2 stop and requeue (requeue signal)
        self._previous: dict[int, Any] = {}
        self._vote: _FlagVote | None = None  # under DDP only
        self._trainer: pl.Trainer | None = None
        self._epoch_end_stop = 0  # the flag agreed at the epoch's last step: stop after the epoch end

    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / "last.ckpt"

    # -- signals ----------------------------------------------------------------------------
    def _on_requeue_signal(self, signum, frame):
        print(f"cnnrepro: caught {signal.Signals(signum).name}: checkpointing at the next step boundary, "
              f"then requeueing", file=sys.stderr, flush=True)
        self._flag = max(self._flag, 2)

    def _on_sigterm(self, signum, frame):
        print("cnnrepro: caught SIGTERM: checkpointing at the next step boundary, then stopping",
              file=sys.stderr, flush=True)
        first = self._flag == 0
        self._flag = max(self._flag, 1)
        launcher = getattr(getattr(self._trainer, "strategy", None), "launcher", None)
        if first and launcher is not None:
            # what Lightning's notifier did that we keep: pass the signal on to the ranks it spawned
            launcher.kill(signum)
        for handler in _handlers_besides_lightning(self._previous.get(signal.SIGTERM)):
            handler(signum, frame)  # e.g. submitit's, installed before Lightning's

    def _install_handlers(self):
        # called in on_train_start, after Lightning registered its own handlers (Trainer._run),
        # so ours wrap them
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous = {s: signal.getsignal(s) for s in (self.requeue_signal, signal.SIGTERM)}
        signal.signal(self.requeue_signal, self._on_requeue_signal)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def on_train_start(self, trainer, pl_module):
        self._trainer = trainer
        self._install_handlers()
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            self._vote = _FlagVote(self.vote_timeout_s)

    def teardown(self, trainer, pl_module, stage):
        if self._vote is not None:
            self._vote.close()
            self._vote = None
        if threading.current_thread() is threading.main_thread():
            for s, h in self._previous.items():
                if h is not None:
                    signal.signal(s, h)
        self._previous = {}

    # -- the step boundary ------------------------------------------------------------------
    def _agreed_flag(self) -> int:
        # ranks may receive the signal a step apart: the max makes them act on the same step
        return self._flag if self._vote is None else self._vote.vote(self._flag)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        flag = self._agreed_flag()  # every step, the last one too: all ranks vote at the same boundaries
        if batch_idx + 1 >= trainer.num_training_batches:
            # The epoch's last batch: validation and the epoch's scheduler step are still to come.
            # A checkpoint here makes Lightning skip both on resume, so a stop waits for the epoch end.
            self._epoch_end_stop = max(self._epoch_end_stop, flag)
            return
        periodic = self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0
        if flag == 0 and not periodic:
            return
        trainer.save_checkpoint(self.last_path)  # every rank calls it; rank 0 writes; ends in a barrier
        if flag:
            self._stop(trainer, flag, f"checkpoint at step {trainer.global_step} (epoch {trainer.current_epoch}, "
                                      f"batch {batch_idx + 1} of {trainer.num_training_batches})")

    def on_train_epoch_end(self, trainer, pl_module):
        # A signal during the last step or the validation: the single process knows now; under DDP
        # the ranks agreed at the last step, or agree at the next epoch's first step.
        if self._vote is None:
            self._epoch_end_stop = max(self._epoch_end_stop, self._flag)
        if self._epoch_end_stop:
            # the epoch-end checkpoint (ExactResume redoes the epoch's scheduler step on resume).
            # ModelCheckpoint writes the same state right after this hook; written here too so the
            # stop never depends on how the checkpoint callbacks are configured.
            trainer.save_checkpoint(self.last_path)

    def on_train_epoch_start(self, trainer, pl_module):
        if self._epoch_end_stop:
            self._stop(trainer, self._epoch_end_stop,
                       f"checkpoint at the end of epoch {trainer.current_epoch - 1} (step {trainer.global_step})")

    def on_train_end(self, trainer, pl_module):
        if self._flag or self._epoch_end_stop:
            print("cnnrepro: the signal came during the last epoch's last step or validation: the run is "
                  "complete and saved, so it ends normally (not stopped, not requeued)", file=sys.stderr, flush=True)
            self._flag = self._epoch_end_stop = 0

    def _stop(self, trainer, flag: int, where: str) -> None:
        print(f"cnnrepro: rank {trainer.global_rank}: {where} in {self.last_path}", file=sys.stderr, flush=True)
        for logger in trainer.loggers:
            logger.save()
        if flag == 2:
            self._requeue(trainer)
        if trainer.global_rank != 0 and os.environ.get("SLURM_STEP_ID") is not None:
            # A task of an srun step: rank 0 ends first. Under srun --kill-on-bad-exit (cnnrepro
            # submit, slurm/fit.sbatch) the first task to exit non-zero gets every other one killed
            # at once, and rank 0 still writes its logs and attempts.json on the way out; after a
            # requeue the requeue itself ends the step. The checkpoint is on disk: nothing is lost
            # when this rank is killed while it waits.
            time.sleep(float(os.environ.get("CNNREPRO_REQUEUE_WAIT", "60")))
        raise Preempted(143 if flag == 1 else REQUEUE_EXIT)  # 143: as if killed by SIGTERM

    def _requeue(self, trainer) -> None:
        if trainer.global_rank != 0:
            return  # rank 0 requeues; the requeue ends this allocation (see _stop)
        submitit_handler = self._previous.get(self.requeue_signal)
        if callable(submitit_handler) and "submitit" in getattr(submitit_handler, "__module__", ""):
            # submitit owns the requeue, once the trainer has torn down (loggers flushed, W&B
            # closed): cnnrepro.launch.submit.FitJob runs submitit's handler when this run ends
            # with Preempted(REQUEUE_EXIT); the handler calls FitJob.checkpoint(), runs
            # `scontrol requeue` and exits. Run from here, inside the training loop, that exit
            # made Lightning's teardown log to a W&B run the requeue had already killed.
            return
        job = os.environ.get("SLURM_JOB_ID")
        if job is None:
            print("cnnrepro: not a SLURM job: checkpoint written, nothing to requeue", file=sys.stderr, flush=True)
            return
        if os.environ.get("SLURM_ARRAY_JOB_ID"):
            job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        print(f"cnnrepro: scontrol requeue {job}: {'ok' if r.returncode == 0 else r.stderr.strip()}",
              file=sys.stderr, flush=True)

