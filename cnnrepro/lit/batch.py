"""Batch-size rules: the run's global batch against the paper's.

The run's global batch is ``devices x nodes x per-device batch x accumulate_grad_batches`` (one
optimizer step sees that many images). When it differs from the paper's batch by a factor
``k = global / paper``, the recipe's declared rule sets the learning rate:

  - ``linear``: ``lr * k``, reached by a linear warmup (Goyal et al. 2017, arXiv:1706.02677,
    Sec. 2.1 "Linear Scaling Rule" and Sec. 2.2 "gradual warmup": from the unscaled lr to
    ``k * lr`` over the first 5 epochs) when ``k > 1``;
  - ``sqrt``: ``lr * sqrt(k)`` (Krizhevsky 2014, arXiv:1404.5997, Sec. 5, argues for it; no warmup);
  - ``none``: the recipe was only tested at the paper's batch: another batch is refused, with
    the fix (gradient accumulation, or a rule) in the message.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from cnnrepro.errors import UserError

__all__ = ["BatchPlan", "BatchRuleError", "resolve_batch", "check_resume_layout", "BATCH_RULES",
           "GOYAL_WARMUP_EPOCHS"]

BATCH_RULES = ("none", "linear", "sqrt")
GOYAL_WARMUP_EPOCHS = 5.0  # Goyal et al. 2017, Sec. 2.2: "reaching eta_hat = k eta after 5 epochs"


class BatchRuleError(UserError):
    """The run's global batch is not the paper's and the recipe has no rule for that (the message
    names --data.batch_size and the fix)."""


@dataclass(frozen=True)
class BatchPlan:
    paper_batch: int | None
    global_batch: int
    per_device_batch: int
    world_size: int
    accumulate: int
    rule: str
    k: float            # global_batch / paper_batch
    lr_paper: float
    lr: float           # the effective lr at the end of any warmup
    warmup_epochs: float
    warmup_start_factor: float

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_batch(*, paper_batch: int | None, per_device_batch: int, world_size: int, accumulate: int,
                  rule: str, lr: float, warmup_epochs: float | None = None) -> BatchPlan:
    """The effective batch, learning rate and warmup of a run (see module docstring).

    ``warmup_epochs`` None: the rule's own default (Goyal's 5 epochs for ``linear`` with k > 1).
    """
    if rule not in BATCH_RULES:
        raise BatchRuleError(f"--model.batch_rule {rule!r}: choose one of {', '.join(BATCH_RULES)}")
    g = per_device_batch * world_size * accumulate
    if paper_batch is None:
        return BatchPlan(None, g, per_device_batch, world_size, accumulate, rule, 1.0, lr, lr,
                         warmup_epochs or 0.0, 0.0)
    k = g / paper_batch
    if k == 1.0 or rule == "none":
        if k != 1.0:
            raise BatchRuleError(_refusal(paper_batch, per_device_batch, world_size, accumulate))
        return BatchPlan(paper_batch, g, per_device_batch, world_size, accumulate, rule, 1.0, lr, lr,
                         warmup_epochs or 0.0, 0.0)
    if rule == "linear":
        w = GOYAL_WARMUP_EPOCHS if (warmup_epochs is None and k > 1) else (warmup_epochs or 0.0)
        # Goyal Sec. 2.2: the warmup starts from the paper's (unscaled) lr
        return BatchPlan(paper_batch, g, per_device_batch, world_size, accumulate, rule, k, lr, lr * k, w,
                         min(1.0, 1.0 / k))
    return BatchPlan(paper_batch, g, per_device_batch, world_size, accumulate, rule, k, lr, lr * math.sqrt(k),
                     warmup_epochs or 0.0, 0.0)


def _refusal(paper: int, per_device: int, world: int, accum: int) -> str:
    g = per_device * world * accum
    msg = (f"global batch {g} (= {world} device(s) x --data.batch_size {per_device} x "
           f"--trainer.accumulate_grad_batches {accum}) is not the paper's batch {paper}, and this recipe's "
           f"--model.batch_rule is 'none'. ")
    fixes = []
    per_step = per_device * world
    if paper % per_step == 0:
        fixes.append(f"reach the paper's batch with --trainer.accumulate_grad_batches {paper // per_step}")
    if paper % world == 0:
        fixes.append(f"use --data.batch_size {paper // world} on {world} device(s)")
    fixes.append("or choose a scaling rule: --model.batch_rule linear (Goyal et al. 2017, with warmup) "
                 "or --model.batch_rule sqrt")
    return msg + "Fix: " + "; ".join(fixes)


def check_resume_layout(saved: dict | None, plan: BatchPlan, ckpt_path: str | None) -> str | None:
    """Compare the batch layout a checkpoint was trained with (``saved``: its ``BatchPlan.as_dict()``,
    None for checkpoints written before it was stored) with this run's ``plan``.

    A different global batch or gradient accumulation is refused (BatchRuleError, one line with both
    layouts and the fix): the restored state counts in the checkpoint's units. The LR schedule's
    position is a count of optimizer steps over steps-per-epoch (both restored from the checkpoint:
    torch's LambdaLR restores the schedule object's attributes), the epoch's resume point is a count
    of per-device batches (Lightning's loop progress), and the restored optimizer carries the
    checkpoint's learning rate, not the one the batch rule would give the new batch. Silently
    continuing is what issue 16.6 saw (a resume on 1 device instead of 2 trained on at half the lr).

    Another world size at the same global batch and accumulation (e.g. 2 devices x 64 resumed as 1
    x 128) keeps the lr, the schedule and the step counts; only the data order from here on and the
    dropout masks differ from an uninterrupted run's. Returns that notice (None when nothing changed).
    """
    if not saved:
        return None
    old = (saved.get("global_batch"), saved.get("accumulate"), saved.get("world_size"), saved.get("per_device_batch"))
    new = (plan.global_batch, plan.accumulate, plan.world_size, plan.per_device_batch)
    if old == new:
        return None

    def layout(g, acc, world, per):
        return f"global batch {g} = {world} device(s) x --data.batch_size {per} x --trainer.accumulate_grad_batches {acc}"

    if old[:2] != new[:2]:
        g, acc, world, per = old
        if g % (acc * plan.world_size) == 0:  # the checkpoint's global batch on this run's devices
            fix = (f"--data.batch_size {g // (acc * plan.world_size)} --trainer.accumulate_grad_batches {acc} "
                   f"on these {plan.world_size} device(s)")
        else:
            fix = f"{world} device(s) with --data.batch_size {per} --trainer.accumulate_grad_batches {acc}"
        raise BatchRuleError(
            f"--ckpt_path {ckpt_path}: the checkpoint was trained with {layout(*old)}, this run has {layout(*new)}; "
            f"a resume keeps the checkpoint's global batch and accumulation (its lr, LR-schedule position and "
            f"epoch position are counted in them): use {fix}")
    return (f"cnnrepro: resuming a checkpoint trained with {layout(*old)} on {layout(*new)}: the same global batch, "
            f"lr {plan.lr:g} and LR schedule; the data order and dropout masks from here on differ from an "
            f"uninterrupted run's")
