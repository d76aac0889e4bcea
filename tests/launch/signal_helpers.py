"""Test-only Lightning callbacks: the training process sends itself a real signal at a known point.

Loaded into `cnnrepro fit` subprocesses with ``--trainer.callbacks+=signal_helpers.SignalAtStep``
(PYTHONPATH=tests/launch), so the interruption happens at a known place without timing races.
"""

import os
import signal
import sys
import time

import pytorch_lightning as pl


class SignalAtStep(pl.Callback):
    """Signal during global step ``step`` (0-based) at its start."""

    def __init__(self, step: int, signum: str = "SIGUSR2"):
        self.step, self.signum = step, getattr(signal, signum)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # during step `step` (0-based global step): the Preemption callback must finish this step,
        # checkpoint, and stop before step `step + 1`
        if trainer.global_step == self.step and trainer.global_rank == 0:
            os.kill(os.getpid(), self.signum)


class SignalInEpoch(pl.Callback):
    """Signal in epoch ``epoch``, during its validation (``where="validation"``, at the first
    validation batch) or at its end (``where="epoch_end"``, in on_train_epoch_end)."""

    def __init__(self, epoch: int, where: str = "validation", signum: str = "SIGTERM"):
        if where not in ("validation", "epoch_end"):
            raise ValueError(f"where={where!r}")
        self.epoch, self.where, self.signum = epoch, where, getattr(signal, signum)

    def _maybe(self, trainer, where):
        if (where == self.where and trainer.current_epoch == self.epoch and trainer.global_rank == 0
                and not trainer.sanity_checking):
            os.kill(os.getpid(), self.signum)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            self._maybe(trainer, "validation")

    def on_train_epoch_end(self, trainer, pl_module):
        self._maybe(trainer, "epoch_end")


class DieOnRank(pl.Callback):
    """Rank ``rank`` (SLURM_PROCID) dies: by SIGKILL (``how="SIGKILL"``, as `kill -9` would) or by
    raising (``how="raise"``); at startup, before the DDP rendezvous (``at="init"``: when the CLI
    builds the callbacks) or after it (``at="setup"``: the callbacks' setup, before the first
    step), or at the start of global step ``step`` (``at="step"``, mid-run).

    ``array_task``: only in that task of a job array (SLURM_ARRAY_TASK_ID), e.g. one seed of
    `cnnrepro submit --seeds N`; None: in every job.

    It prints ``test: rank R dies (HOW) at <time.time()>`` to its log first, for the test's clock.
    """

    def __init__(self, rank: int, at: str = "step", how: str = "SIGKILL", step: int = 2,
                 array_task: int | None = None):
        if at not in ("init", "setup", "step") or how not in ("SIGKILL", "raise"):
            raise ValueError(f"at={at!r} how={how!r}")
        self.rank, self.at, self.how, self.step, self.array_task = rank, at, how, step, array_task
        if at == "init":
            self._die()

    def _die(self):
        if int(os.environ.get("SLURM_PROCID", "0")) != self.rank:
            return
        if self.array_task is not None and os.environ.get("SLURM_ARRAY_TASK_ID") != str(self.array_task):
            return
        print(f"test: rank {self.rank} dies ({self.how}) at {time.time():.3f}", file=sys.stderr, flush=True)
        if self.how == "raise":
            raise RuntimeError(f"injected failure on rank {self.rank}")
        os.kill(os.getpid(), signal.SIGKILL)

    def setup(self, trainer, pl_module, stage):
        if self.at == "setup":
            self._die()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.at == "step" and trainer.global_step == self.step:
            self._die()


class StepClock(pl.Callback):
    """Rank 0 prints ``test: step N done at <time.time()>`` after every training step."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_rank == 0:
            print(f"test: step {trainer.global_step} done at {time.time():.3f}", file=sys.stderr, flush=True)


class HangOnRank(pl.Callback):
    """Rank ``rank`` stops answering for ``seconds`` at the start of global step ``step`` (a hung
    rank: alive, so srun --kill-on-bad-exit cannot see it; only the DDP timeout can)."""

    def __init__(self, rank: int = 1, step: int = 1, seconds: float = 120.0):
        self.rank, self.step, self.seconds = rank, step, seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            print(f"test: rank {self.rank} hangs at {time.time():.3f}", file=sys.stderr, flush=True)
            parent, end = os.getppid(), time.time() + self.seconds
            # Lightning's launcher started this rank from rank 0: once rank 0 is gone, go too (the
            # test reads their shared stderr to its end)
            while time.time() < end and os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)
