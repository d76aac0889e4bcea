"""What "a run" is on disk: its folder, the resume decision, its W&B identity and its loggers.

A run lives in ``<run.dir>/<run.name>/<command>-NNN/`` (``run.name`` defaults to the recipe's file
name), holding ``config.yaml`` (the resolved recipe), ``metrics.csv``, ``checkpoints/``
(``last.ckpt``, ``best-epochNNN.ckpt``), ``wandb_id.txt`` and ``wandb/``, and ``record.json``.
``RunFolder.open`` is the one place that decides which folder a command writes into and which
checkpoint a ``fit`` resumes from; everything else (``lit/cli.py``, ``launch/submit.py``,
``results/records.py``) asks the ``RunFolder``.
"""

from __future__ import annotations

import configparser
import netrc
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pytorch_lightning.loggers import WandbLogger

from cnnrepro.errors import UserError

__all__ = ["RunFolder", "next_run_dir", "latest_resumable", "wandb_mode", "wandb_id_in_checkpoint"]

WANDB_PUBLIC_HOST = "api.wandb.ai"


def next_run_dir(parent: Path, prefix: str) -> Path:
    """Create and return ``parent/<prefix>-NNN`` with the next free number (race-free: mkdir)."""
    parent.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name.rsplit("-", 1)[1]) for p in parent.glob(f"{prefix}-*") if p.name.rsplit("-", 1)[1].isdigit()]
    n = max(taken, default=-1) + 1
    while True:
        d = parent / f"{prefix}-{n:03d}"
        try:
            d.mkdir()
            return d
        except FileExistsError:
            n += 1


def latest_resumable(parent: Path) -> Path | None:
    """The newest ``parent/fit-*`` folder holding ``checkpoints/last.ckpt``."""
    runs = sorted((p for p in parent.glob("fit-*") if (p / "checkpoints" / "last.ckpt").exists()), key=lambda p: p.name)
    return runs[-1] if runs else None


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
        fit with ``ckpt_path="last"``: the newest resumable ``fit-*`` run of the group, resumed in place;
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
