"""Exact resume: a run restarted from ``last.ckpt`` continues as if it had never stopped.

Lightning restores weights, optimizer, schedulers and loop counters; three things it does not,
and this callback adds:
  - every rank's RNG state (dropout and drop-path masks), carried in the checkpoint;
  - the position of the training stream inside the epoch: the DataModule is told the restored
    epoch and batch (``resume_at``), so the first batch after a mid-epoch resume is the one the
    uninterrupted run would have trained on next;
  - the epoch-interval scheduler steps Lightning skips around a resume (below).
It also carries the run's W&B id in the checkpoint (given by ``lit.runs.RunFolder``), so a
resumed job logs to the same W&B run even when the folder's ``wandb_id.txt`` is lost.
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar

__all__ = ["ExactResume", "ResumedProgressBar", "resume_batch"]


def resume_batch(trainer: pl.Trainer | None, batches_per_epoch: int) -> int:
    """Training batches of the current epoch that the restored checkpoint already trained on.

    Read from Lightning's restored loop progress in ``on_train_start`` (after the checkpoint's
    loops are restored, before the epoch loop resets them). 0 for a fresh run and for a
    checkpoint written at an epoch boundary.
    """
    if trainer is None or trainer.fit_loop is None or not trainer.fit_loop.restarting:
        return 0
    progress = trainer.fit_loop.epoch_loop.batch_progress.current
    done = progress.processed  # a save in on_train_batch_end counts its batch as processed
    return done if 0 < done < batches_per_epoch else 0


def _step_epoch_schedulers(trainer: pl.Trainer) -> None:
    # the epoch-interval schedulers, plateau ones included (they read the monitored metric)
    loop = trainer.fit_loop.epoch_loop
    loop.update_lr_schedulers("epoch", update_plateau_schedulers=False)
    loop.update_lr_schedulers("epoch", update_plateau_schedulers=True)


def _rng_state() -> dict[str, Any]:
    # plain tensors, ints and tuples only: checkpoints must load with torch.load(weights_only=True)
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    st = {"torch": torch.get_rng_state(), "python": random.getstate(),
          "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    kind, keys, pos, has_gauss, gauss = st["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["cuda"])


class ExactResume(pl.Callback):
    """RNG states, stream position and skipped scheduler steps across a resume.

    Args:
        wandb_id: the run's W&B id, stored in every checkpoint (``lit.runs.wandb_id_in_checkpoint``).
    """

    def __init__(self, wandb_id: str | None = None):
        self.wandb_id = wandb_id
        self._trainer: pl.Trainer | None = None
        self._restored_rng: list | None = None
        self._pending_epoch_end = False
        self._pending_metrics: dict[str, float] = {}

    def setup(self, trainer, pl_module, stage):
        self._trainer = trainer

    # -- what rides in the checkpoint --------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # Lightning checkpoints hold no RNG state; without it dropout / drop-path masks after a
        # resume differ from the uninterrupted run's. Every rank calls state_dict at the same
        # point (dump_checkpoint runs on all ranks), so gathering here is safe.
        mine = _rng_state()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            states: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(states, mine)
        else:
            states = [mine]
        # An end-of-epoch checkpoint (last.ckpt, written in on_train_epoch_end) precedes that
        # epoch's scheduler step, and Lightning does not redo the step on resume: keep what the
        # step needs (the monitored metrics) so on_train_start can redo it.
        trainer = self._trainer
        progress = trainer.fit_loop.epoch_progress if trainer is not None else None
        pending = progress is not None and progress.current.processed > progress.current.completed
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if isinstance(v, (int, float, torch.Tensor)) and torch.as_tensor(v).numel() == 1} \
            if pending else {}
        return {"wandb_id": self.wandb_id, "rng": states, "epoch_end_pending": pending, "metrics": metrics}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_rng = state_dict.get("rng")
        self._pending_epoch_end = state_dict.get("epoch_end_pending", False)
        self._pending_metrics = state_dict.get("metrics") or {}

    # -- restore -----------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module):
        if trainer.ckpt_path is not None:
            batch = resume_batch(trainer, trainer.num_training_batches)
            dm = trainer.datamodule
            if dm is not None and hasattr(dm, "resume_at"):
                dm.resume_at(trainer.current_epoch, batch)
                # The train loader's iterator may have been created before the checkpoint was
                # restored (Lightning builds it in setup_data, which `trainer.estimated_stepping_batches`
                # calls from a module's setup): restart it so that it reads the new position
                # (persistent workers re-enter TrainStream.__iter__). Lightning has no public way.
                fetcher = trainer.fit_loop._data_fetcher
                if fetcher is not None:
                    iter(fetcher)
            if trainer.is_global_zero:
                print(f"cnnrepro: resumed at step {trainer.global_step} (epoch {trainer.current_epoch}, "
                      f"batch {resume_batch(trainer, 1 << 62)}) from {trainer.ckpt_path}", file=sys.stderr, flush=True)
            if self._pending_epoch_end:
                # redo the scheduler step the checkpointed epoch had not yet taken
                for k, v in self._pending_metrics.items():
                    trainer.callback_metrics.setdefault(k, torch.tensor(v))
                _step_epoch_schedulers(trainer)
                self._pending_epoch_end = False
        states = self._restored_rng
        if states:
            if len(states) != trainer.world_size:
                print(f"cnnrepro: checkpoint written by {len(states)} ranks, resumed on {trainer.world_size}: "
                      f"RNG streams (dropout masks) restart from the per-rank seed", file=sys.stderr)
            else:
                _set_rng_state(states[trainer.global_rank])
                return
        # per-rank seed: seed_everything gave every rank the same torch seed, which would give all
        # ranks the same dropout masks; the data streams are seeded per rank already
        if trainer.world_size > 1:
            base = int(os.environ.get("PL_GLOBAL_SEED", "0"))
            torch.manual_seed(base + 1_000_003 * trainer.global_rank)

    def on_train_epoch_end(self, trainer, pl_module):
        loop = trainer.fit_loop
        if loop.restarting and loop.epoch_loop._num_ready_batches_reached():
            # Lightning (2.6, FitLoop.on_advance_end) skips every epoch-interval scheduler step at
            # the end of an epoch it resumed mid-way ("metrics are not saved in the checkpoint").
            # Validation has run in this epoch, so the metrics exist: step them here, or the
            # resumed run's LR schedule lags the uninterrupted one by one epoch.
            _step_epoch_schedulers(trainer)


class ResumedProgressBar(TQDMProgressBar):
    """Lightning's progress bar, started at the batch where a mid-epoch resume continues.

    Lightning (2.6) does not call ``on_train_epoch_start`` for an epoch it resumes mid-way, so its
    ``TQDMProgressBar`` showed that epoch as "Training", of unknown length, from 0, jumping to the
    resumed batch at the first refresh: the batches trained before the resume counted as trained in
    this attempt in its it/s and remaining time. Here the bar of a resumed epoch is set up as a
    fresh epoch's, starting at the resumed batch (tqdm's ``initial``, which its rate leaves out).
    """

    def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_start(trainer, *args)
        bar = self.train_progress_bar
        total = trainer.num_training_batches
        if bar is None or bar.disable or total == float("inf"):
            return
        done = resume_batch(trainer, int(total))  # 0 unless this epoch resumes mid-way
        if done:
            bar.total = int(self.total_train_batches)
            bar.initial = bar.n = bar.last_print_n = done
            bar.set_description(f"Epoch {trainer.current_epoch}")  # draws the bar
