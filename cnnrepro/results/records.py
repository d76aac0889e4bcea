"""Run records: one JSON per fit/validate/test, the only source of reproduced numbers.

``RunRecord`` is the record's schema; ``build_record`` is the one place a record is assembled
(from the finished trainer, module, DataModule and run folder); ``load_records`` checks every
record it reads against the schema, so `cnnrepro table` never guesses a missing field.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from cnnrepro.errors import UserError, unwritable

__all__ = ["RunRecord", "build_record", "recipe_sha256", "git_commit", "hardware", "write_record",
           "load_records", "RECORD_KEYS"]

RECORD_KEYS = (
    "model", "recipe", "recipe_sha256", "git_commit", "data", "num_classes", "samples", "protocol",
    "top1", "top5", "epochs", "wall_seconds", "hardware",
)


_NUM = (int, float)
# the types `cnnrepro table` computes with: a record holding another type is damaged
_TYPES = {
    "model": (str,), "recipe": (str, type(None)), "recipe_sha256": (str, type(None)),
    "git_commit": (str, type(None)), "data": (str,), "num_classes": (int,), "samples": (int,),
    "protocol": (str,), "top1": _NUM, "top5": _NUM, "epochs": (*_NUM, type(None)), "wall_seconds": _NUM,
    "hardware": (dict,), "protocol_params": (dict, type(None)), "arch_kwargs": (dict, type(None)),
    "samples_expected": (int, type(None)), "split": (str, type(None)), "command": (str, type(None)),
    "seed": (int, type(None)), "attempts": (list, type(None)), "weights": (dict, type(None)),
    "real_top1": (*_NUM, type(None)), "real_samples": (int, type(None)), "real_labels": (dict, type(None)),
}


def recipe_sha256(paths: list[str | Path]) -> str:
    """sha256 over the recipe chain (bases first, then the leaf), each file's bytes in order."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()


def git_commit(path: str | Path | None = None) -> str | None:
    """HEAD of the checkout holding the cnnrepro source, with '-dirty' if it has local edits."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(trainer=None) -> dict:
    hw = {
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "torch": torch.__version__,
        "host": platform.node(),
    }
    if trainer is not None:
        hw.update(
            device=str(trainer.strategy.root_device),
            devices_per_node=trainer.num_devices,
            nodes=trainer.num_nodes,
            world_size=trainer.world_size,
            precision=str(trainer.precision),
        )
    return hw


@dataclass
class RunRecord:
    """One fit/validate/test: what ran, on what, under which protocol, and what it measured.

    Keys and their order are the record.json format. Errors in the table are 100 - top-k.
    """

    model: str
    recipe: str | None
    recipe_sha256: str | None
    git_commit: str | None
    data: str
    num_classes: int
    samples: int
    protocol: str
    top1: float
    top5: float
    epochs: float | None
    wall_seconds: float
    hardware: dict
    recipe_chain: list[str] = field(default_factory=list)
    command: str | None = None
    split: str | None = None
    arch_kwargs: dict = field(default_factory=dict)
    samples_expected: int | None = None
    protocol_params: dict = field(default_factory=dict)
    ckpt_path: str | None = None
    # validate/test --weights (lit/weights.py): {spec, source, sha256, converter, preprocessing, check}
    # with preprocessing "library:<desc>" or "protocol:<name>"; None for a run of the project's own
    # training. `cnnrepro table` puts the two in separate columns.
    weights: dict | None = None
    # model settings in which ckpt_path differs from the run's: [{key, checkpoint, used, from}]
    ckpt_hparams_overridden: list = field(default_factory=list)
    seed: int | None = None
    # --data.real_labels (data/real.py): top-1 accuracy (%) against the ReaL labels over the
    # real_samples images that have at least one, and real.json's {path, sha256, images_labelled, source}
    real_top1: float | None = None
    real_samples: int | None = None
    real_labels: dict | None = None
    val_loss: float | None = None
    best: dict = field(default_factory=dict)
    global_step: int | None = None
    global_batch: int | None = None
    batch_plan: dict | None = None  # paper batch, scaling rule, effective lr and warmup (lit/batch.py)
    throughput: dict = field(default_factory=dict)
    fast_paths: dict = field(default_factory=dict)
    run_dir: str | None = None
    wandb_id: str | None = None
    wandb_mode: str | None = None
    wandb_project: str | None = None
    wandb_entity: str | None = None
    # a fit resumed N times has N + 1 attempts (lit/callbacks.py RunHistory); wall_seconds and
    # throughput are their totals, wall_seconds_attempt this process's own
    attempts: list = field(default_factory=list)
    wall_seconds_attempt: float | None = None

    _ORDER = ("model", "recipe", "recipe_chain", "recipe_sha256", "git_commit", "command", "data", "split",
              "num_classes", "arch_kwargs", "samples", "samples_expected", "protocol", "protocol_params",
              "ckpt_path", "weights", "ckpt_hparams_overridden", "seed", "top1", "top5", "real_top1", "real_samples", "real_labels", "val_loss", "best", "epochs", "global_step", "global_batch",
              "batch_plan", "wall_seconds", "hardware", "throughput", "fast_paths", "run_dir", "wandb_id",
              "wandb_mode", "wandb_project", "wandb_entity", "attempts", "wall_seconds_attempt")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: d[k] for k in self._ORDER}

    def summary(self) -> dict[str, Any]:
        """The figures a run's W&B summary carries (flat keys)."""
        out = {"record/top1": self.top1, "record/top5": self.top5, "record/top1_err": round(100 - self.top1, 4),
               "record/top5_err": round(100 - self.top5, 4), "record/samples": self.samples,
               "record/protocol": self.protocol, "record/epochs": self.epochs,
               "record/wall_seconds": self.wall_seconds}
        if self.real_top1 is not None:
            out.update({"record/real_top1": self.real_top1, "record/real_samples": self.real_samples})
        out.update({f"record/throughput/{k}": v for k, v in (self.throughput or {}).items()})
        return out

    @classmethod
    def from_dict(cls, d: dict, source: str = "record") -> "RunRecord":
        if not isinstance(d, dict):
            raise UserError(f"{source}: not a cnnrepro run record (a JSON {type(d).__name__}, not an object)")
        missing = [k for k in RECORD_KEYS if k not in d]
        if missing:
            raise UserError(f"{source}: not a cnnrepro run record (lacks {', '.join(missing)}); "
                            f"records are written by `cnnrepro fit/validate/test`")
        for key, types in _TYPES.items():
            v = d.get(key)
            if key in d and not (v is None and type(None) in types) and \
                    (not isinstance(v, tuple(t for t in types if t is not type(None))) or isinstance(v, bool)):
                names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
                raise UserError(f"{source}: key {key!r} is {json.dumps(v)[:40]}, not {names}; "
                                f"the record is damaged: rerun the command that wrote it")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known and v is not None or k in RECORD_KEYS})


def build_record(trainer, module, datamodule, *, run, command: str, recipe_files: list[Path], protocol,
                 ckpt_path: str | None, seed: int | None, wandb_project: str | None, wandb_entity: str | None,
                 throughput: dict, t_start: float, history=None, weights: dict | None = None,
                 val: dict | None = None) -> RunRecord | None:
    """The record of a finished fit/validate/test (None when no evaluation ran).

    ``run`` is the run's ``lit.runs.RunFolder``; ``protocol`` the ``eval.Protocol`` evaluated (None:
    the DataModule's centre crop); ``throughput`` the ``Throughput`` callback's summary (over
    every attempt); ``history`` the fit's ``lit.callbacks.RunHistory`` (None: one attempt, this one);
    ``weights`` what validate/test --weights evaluated (``lit.weights.LoadedWeights.record``);
    ``val`` the results of ``protocol`` when they are not the module's ``last_val`` (``--protocol all``).
    """
    m, dm = module, datamodule
    val = m.last_val if val is None else val
    if not val:
        return None
    expected = dm.manifest["val"]["samples"]
    mine = round(time.time() - t_start, 1)
    attempts = [dict(a) for a in history.attempts] if history is not None else []
    wall = history.totals()["wall_seconds"] if attempts else mine
    return RunRecord(
        model=m.hparams.arch,
        recipe=str(recipe_files[-1]) if recipe_files else None,
        recipe_chain=[str(p) for p in recipe_files],
        recipe_sha256=recipe_sha256(recipe_files) if recipe_files else None,
        git_commit=git_commit(),
        command=command,
        data=dm.data_name,
        split=dm.split_name("val"),
        num_classes=m.hparams.num_classes,
        arch_kwargs=m.hparams.arch_kwargs or {},
        samples=val["samples"],
        samples_expected=expected,
        protocol=protocol.name if protocol else "center",
        protocol_params=protocol.params if protocol
        else getattr(dm.eval_transform, "params", None)
        or {"resize": dm.hparams.resize, "crop": dm.hparams.crop, "scales": [dm.hparams.resize]},
        ckpt_path=ckpt_path,
        weights=weights,
        seed=seed,
        top1=round(val["top1"], 4),
        top5=round(val["top5"], 4),
        real_top1=None if val.get("real_top1") is None else round(val["real_top1"], 4),
        real_samples=val.get("real_samples"),
        real_labels=dm.real.record() if getattr(dm, "real", None) is not None else None,
        val_loss=round(val["loss"], 6),
        best={k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.best_val.items()},
        epochs=m.epochs_trained() if command == "fit" else m.ckpt_epochs,
        global_step=trainer.global_step,
        global_batch=dm.batch_size * trainer.world_size * trainer.accumulate_grad_batches,
        batch_plan=m.batch_plan.as_dict() if m.batch_plan is not None else None,
        wall_seconds=wall,
        wall_seconds_attempt=mine,
        attempts=attempts,
        hardware=hardware(trainer),
        throughput=throughput,
        fast_paths={"precision": str(trainer.precision), "channels_last": bool(m.hparams.get("channels_last", False)),
                    "compile": bool(m.hparams.get("compile", False))},
        run_dir=str(run.path),
        wandb_id=run.wandb_id,
        wandb_mode=run.wandb_mode,
        wandb_project=wandb_project,
        wandb_entity=wandb_entity,
    )


def write_record(record: RunRecord | dict, path: str | Path) -> Path:
    if isinstance(record, RunRecord):
        record = record.as_dict()
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise ValueError(f"run record lacks {missing}")
    path = Path(path)
    record = {"written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}
    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(record, indent=1, sort_keys=False))
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)  # a partial record on a full disk
        except OSError:
            pass
        raise unwritable(path, "run record", e) from None
    return path


def load_records(paths: list[str | Path], skipped: list[tuple[str, str]] | None = None) -> list[dict]:
    """Records from files, or from every ``record.json`` below folders.

    A damaged record (bad JSON, a missing key, a wrong type) is an error, or, when ``skipped`` is
    given, left out and appended to it as (path, one-line reason).
    """
    out = []
    for p in paths:
        p = Path(p)
        files = sorted(p.rglob("record.json")) if p.is_dir() else [p]
        for f in files:
            try:
                try:
                    rec = json.loads(f.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise UserError(f"{f}: not valid JSON ({e}); delete it or rerun the command that wrote it") from None
                except OSError as e:
                    raise UserError(f"{f}: unreadable ({e.strerror})") from None
                RunRecord.from_dict(rec, str(f))  # the schema: a missing key is an error, not a blank cell
            except UserError as e:
                if skipped is None:
                    raise
                skipped.append((str(f), str(e)))
                continue
            rec.setdefault("record_path", str(f))
            out.append(rec)
    return out
