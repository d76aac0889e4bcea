"""What "a run" is on disk: its folder, the resume decision, its W&B identity and its loggers.

A run lives in ``<run.dir>/<run.name>/<command>-NNN/`` (``run.name`` defaults to the recipe's file
name), holding ``config.yaml`` (the resolved recipe), ``metrics.csv`` (kept across resumes:
``RunCSVLogger``; ``metrics.repeated.csv``), ``attempts.json`` (``lit.callbacks.RunHistory``), ``checkpoints/``
(``last.ckpt``, ``best-epochNNN.ckpt``), ``wandb_id.txt`` and ``wandb/``, and ``record.json``.
``RunFolder.open`` is the one place that decides which folder a command writes into and which
checkpoint a ``fit`` resumes from; everything else (``lit/cli.py``, ``launch/submit.py``,
``results/records.py``) asks the ``RunFolder``.
"""

from __future__ import annotations

import configparser
import csv
import netrc
import os
import re
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from cnnrepro.errors import UserError

__all__ = ["RunFolder", "RunCSVLogger", "next_run_dir", "latest_resumable", "wandb_mode", "wandb_id_in_checkpoint",
           "checkpoint_step"]

WANDB_PUBLIC_HOST = "api.wandb.ai"


def next_run_dir(parent: Path, prefix: str) -> Path:
    """Create and return ``parent/<prefix>-NNN`` with the next free number (race-free: mkdir).

    Only ``<prefix>-<digits>`` folders count: ``fit-slurm-<jobid>`` (slurm/fit.sbatch) is another
    scheme, and reading its job id as a run number made every later run ``fit-<jobid+1>``.
    """
    parent.mkdir(parents=True, exist_ok=True)
    numbered = re.compile(rf"{re.escape(prefix)}-(\d+)")
    taken = [int(m.group(1)) for p in parent.iterdir() if (m := numbered.fullmatch(p.name))]
    n = max(taken, default=-1) + 1
    while True:
        d = parent / f"{prefix}-{n:03d}"
        try:
            d.mkdir()
            return d
        except FileExistsError:
            n += 1


def latest_resumable(parent: Path) -> Path | None:
    """The ``parent/fit-*`` folder whose ``checkpoints/last.ckpt`` was written last.

    Ordered by that file's modification time, not by name: ``fit-NNN`` (cnnrepro fit / submit) and
    ``fit-slurm-<jobid>`` (slurm/fit.sbatch) sort by name in no useful order (``fit-slurm-*`` after
    every ``fit-NNN``), while the newest checkpoint is the run that trained last, whatever made it.
    """
    found = [(ckpt.stat().st_mtime_ns, p.name, p) for p in parent.glob("fit-*")
             if (ckpt := p / "checkpoints" / "last.ckpt").is_file()]
    return max(found)[2] if found else None


def _wandb_host() -> str:
    # WANDB_BASE_URL is how wandb itself is pointed at a self-hosted server (`wandb login --host`
    # writes the same URL into its settings file, read below)
    url = os.environ.get("WANDB_BASE_URL") or _wandb_settings_base_url() or f"https://{WANDB_PUBLIC_HOST}"
    return url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]


def _wandb_settings_base_url() -> str | None:
    # `wandb login --host URL` stores base_url in the [default] section of wandb's global settings
    # file ($WANDB_CONFIG_DIR/settings, default ~/.config/wandb/settings)
    folder = Path(os.environ.get("WANDB_CONFIG_DIR") or Path.home() / ".config" / "wandb")
    cp = configparser.ConfigParser()
    try:
        cp.read(folder / "settings")
        return cp.get("default", "base_url", fallback=None)
    except configparser.Error:
        return None


def _netrc_has(host: str) -> bool:
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    if not path.is_file():
        return False
    try:
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (netrc.NetrcParseError, OSError):
        return False


def wandb_mode(choice: str) -> str | None:
    """``--run.wandb`` -> "online", "offline" or None (no W&B logger).

    auto: online when credentials for the W&B host in use exist (WANDB_API_KEY, or a netrc entry
    for the host of WANDB_BASE_URL / `wandb login --host`, the public api.wandb.ai otherwise);
    offline otherwise, which never touches the network.
    """
    if choice == "disabled":
        return None
    if choice in ("online", "offline"):
        return choice
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        return None if os.environ["WANDB_MODE"] == "disabled" else "offline"
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    return "online" if _netrc_has(_wandb_host()) else "offline"


def wandb_id_in_checkpoint(path: str | Path) -> str | None:
    """The W&B run id a checkpoint was written under (None if it holds none)."""
    ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    for key, state in (ckpt.get("callbacks") or {}).items():
        # "Preemption": checkpoints written before the id moved to ExactResume
        if str(key).startswith(("ExactResume", "Preemption")) and isinstance(state, dict) and state.get("wandb_id"):
            return state["wandb_id"]
    return None


def checkpoint_step(path: str | Path) -> int:
    """The ``step`` (metrics.csv's column) a run resumed from this checkpoint logs its next metrics at.

    That is the checkpoint's ``global_step``: cnnrepro trains with one optimizer, so Lightning's
    logging step (``_batches_that_stepped``) equals it once restored (Lightning adds the step the
    checkpoint was written in when it was written at a batch end, so the stored counter is not used).
    """
    ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    return int(ckpt.get("global_step", 0))


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, appending to a run's existing ``metrics.csv`` instead of deleting it.

    Lightning (2.6, ``_ExperimentWriter._check_log_dir_exists``) removes ``metrics.csv`` whenever
    the folder is not empty, so every resume lost the rows of the earlier attempts. Here the rows
    logged at steps before ``resume_step`` (the checkpoint's) are kept; rows at or after it belong
    to steps the resumed run repeats (logged after the checkpoint by an attempt that was then
    killed) and are moved to ``metrics.repeated.csv``, so the file equals an uninterrupted run's.
    """

    REPEATED_FILE = "metrics.repeated.csv"

    def __init__(self, log_dir: str, resume_step: int):
        self._resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            keys, rows = list(reader.fieldnames or []), list(reader)
        keep = [r for r in rows if r.get("step") not in (None, "") and int(float(r["step"])) < self._resume_step]
        repeated = [r for r in rows if r not in keep]
        if repeated:
            extra = Path(self.log_dir) / self.REPEATED_FILE
            new = not extra.is_file()
            with open(extra, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
                if new:
                    w.writeheader()
                w.writerows(repeated)
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                w.writerows(keep)
            os.replace(tmp, path)
        self.metrics_keys = keys  # a new key later rewrites the header over every old row


class RunCSVLogger(CSVLogger):
    """The run folder's ``metrics.csv``, kept across resumes (see ``_AppendingWriter``).

    Args:
        resume_step: the step the run resumes at (``checkpoint_step``; 0 for a fresh start).
    """

    def __init__(self, save_dir: str, resume_step: int = 0):
        super().__init__(save_dir=save_dir, name="", version="")
        self._resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir, resume_step=self._resume_step)
        return self._experiment


@dataclass
class RunFolder:
    """One run's folder and identity.

    Attributes:
        path: the run folder.
        name: ``<run.name>/<folder name>``, the run's display name (W&B run name).
        group: ``run.name`` (default the recipe's file name): the W&B group of every run of a recipe.
        command: fit, validate or test (the W&B job type).
        ckpt_path: the checkpoint this command starts from (None: fresh weights).
        wandb_mode: "online", "offline" or None, set when the W&B logger is made.
    """

    path: Path
    group: str
    command: str
    ckpt_path: str | None = None
    wandb_mode: str | None = None
    name: str = field(init=False)

    def __post_init__(self):
        self.name = f"{self.group}/{self.path.name}"

    @classmethod
    def open(cls, command: str, *, runs_dir: str | Path, group: str, folder: str | None = None,
             ckpt_path: str | None = None) -> "RunFolder":
        """The folder ``command`` writes into and the checkpoint it starts from.

        fit with ``folder`` (a cluster job, `cnnrepro submit`): that folder, resumed from its
        ``last.ckpt`` when there is one (a requeued job) unless ``ckpt_path`` names another file;
        fit with ``ckpt_path="last"``: the ``fit-*`` run of the group whose ``last.ckpt`` is the newest
        (``latest_resumable``), resumed in place;
        otherwise a new ``<command>-NNN`` folder (``ckpt_path`` must then be an existing file or None).
        """
        parent = Path(runs_dir) / group
        if command == "fit" and folder:
            path = Path(folder)
            path.mkdir(parents=True, exist_ok=True)
            last = path / "checkpoints" / "last.ckpt"
            if ckpt_path in (None, "last"):
                ckpt_path = str(last) if last.is_file() else None  # requeued: resume
            elif not Path(ckpt_path).is_file():
                raise UserError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
        elif command == "fit" and ckpt_path == "last":
            found = latest_resumable(parent)
            if found is None:
                raise UserError(f"--ckpt_path last: no {parent}/fit-*/checkpoints/last.ckpt to resume; "
                                f"start without --ckpt_path (or pass a checkpoint file)")
            path, ckpt_path = found, str(found / "checkpoints" / "last.ckpt")
            # say which run "last" is: several schemes of folder names share the group
            print(f"cnnrepro: --ckpt_path last: resuming {path} (the newest last.ckpt of {parent}/fit-*)",
                  file=sys.stderr, flush=True)
        elif ckpt_path is not None and not Path(ckpt_path).is_file():
            raise UserError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
        else:
            path = next_run_dir(parent, command)
        run = cls(path=path, group=group, command=command, ckpt_path=ckpt_path)
        if command == "fit" and ckpt_path and not run.id_file.exists():
            # resuming into a folder without its id file: the checkpoint carries the W&B run id
            saved = wandb_id_in_checkpoint(ckpt_path)
            if saved:
                run.id_file.write_text(saved)
        return run

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def id_file(self) -> Path:
        return self.path / "wandb_id.txt"

    @property
    def record_path(self) -> Path:
        return self.path / "record.json"

    @property
    def attempts_path(self) -> Path:
        return self.path / "attempts.json"

    def csv_logger(self) -> RunCSVLogger:
        """``metrics.csv``: a fit resumed from a checkpoint keeps the rows of the steps before it."""
        step = checkpoint_step(self.ckpt_path) if self.command == "fit" and self.ckpt_path else 0
        return RunCSVLogger(str(self.path), resume_step=step)

    @property
    def wandb_id(self) -> str | None:
        return self.id_file.read_text().strip() if self.id_file.exists() else None

    def ensure_wandb_id(self) -> str:
        if self.wandb_id is None:
            self.id_file.write_text(uuid.uuid4().hex[:12])  # W&B run ids: lowercase letters and digits
        return self.wandb_id

    def wandb_logger(self, choice: str, *, project: str, entity: str | None, config: dict | None = None,
                     tags: list[str] | None = None):
        """The run's WandbLogger (None when W&B is disabled); online falls back to offline.

        Every command of a recipe shares the W&B group (``group``); the job type is the command,
        so a project's fit and validate runs can be told apart and compared; the whole resolved
        config goes into the W&B run config.
        """
        mode = wandb_mode(choice)
        if mode is None:
            return None
        kwargs = dict(project=project, entity=entity, name=self.name, id=self.ensure_wandb_id(),
                      save_dir=str(self.path), resume="allow", group=self.group, job_type=self.command,
                      tags=sorted(set(tags or [])), config=config or {})
        logger = WandbLogger(offline=(mode == "offline"), **kwargs)
        self.wandb_mode = mode
        if mode == "online":
            try:
                logger.experiment  # noqa: B018  (start now so a network failure shows here)
            except Exception as e:  # the run must never fail because W&B is unreachable
                print(f"cnnrepro: W&B online init failed ({e}); logging offline instead", file=sys.stderr)
                logger = WandbLogger(offline=True, **kwargs)
                self.wandb_mode = "offline"
        return logger
