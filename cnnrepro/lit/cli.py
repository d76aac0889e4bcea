"""``CnnreproCLI``: LightningCLI with cnnrepro's run folder, callbacks, protocols and run record.

A recipe chain (``recipes.recipe_chain``: bases first) is given to the parser as successive
``--config`` files, so a leaf names only what differs and unknown keys anywhere in the chain
are errors. What the class adds to LightningCLI, in the order a command meets it:
  - parser: ``--run.*`` (where the run goes, W&B) and ``--protocol*`` (the paper's test protocol
    of validate/test); ``extends`` is accepted in recipes and never dumped, so a saved
    ``config.yaml`` or ``--print_config`` output replays as ``cnnrepro fit CONFIG``;
  - trainer: the run folder (``lit.runs.RunFolder``: new, resumed or pinned by a cluster job),
    its CSV and W&B loggers, checkpoints, preemption and exact resume;
  - before validate/test: the protocol's views wired into the DataModule and the module;
  - after fit/validate/test: the run record (``results.records.build_record``), its table row,
    and its summary in the W&B run.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Literal, Optional

from pytorch_lightning import seed_everything
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.strategies import DDPStrategy, StrategyRegistry

from cnnrepro.data.datamodule import ImageNetDataModule
from cnnrepro.errors import WRITE_ERRNOS, UserError, unwritable
from cnnrepro.eval import PROTOCOLS, build_protocol
from cnnrepro.eval.protocols import TENCROP_VARIANTS, Protocol, ProtocolSet, paper_protocols
from cnnrepro.results import records
from cnnrepro.results.table import load_paper_numbers, protocol_label, render_markdown, table_rows

from .callbacks import EpochMetricsResume, RunHistory, Throughput
from .checkpoint_io import read_checkpoint_hparams
from .module import ClassifierModule
from .preemption import Preemption, slurm_plugins
from .resume import ExactResume, ResumedProgressBar
from .runs import RunFolder
from .weights import LibraryEvalViews, WeightsNormalize, library_preprocessing, load_weights

__all__ = ["COMMANDS", "CnnreproCLI", "instantiate_model_and_data", "parse_only", "run_callbacks", "run_command"]

COMMANDS = ("fit", "validate", "test")
# LightningCLI's own optimizer/scheduler arguments would replace the recipe's paper optimizer and
# schedule (ClassifierModule.configure_optimizers) without a trace in the record
OPTIMIZER_FLAGS = ("--optimizer", "--lr_scheduler")
RECIPE_OPTIMIZER_KEYS = ("model.optimizer", "model.lr", "model.momentum", "model.weight_decay", "model.lr_schedule",
                         "model.lr_milestones", "model.warmup_epochs")


# --run.ddp_timeout_s default: a few minutes. Long enough for a rank to wait out another's
# checkpoint write or its last uneven validation batches; short enough that a hung peer fails the
# job well before its time limit. A peer that *dies* is caught sooner: srun --kill-on-bad-exit
# (cnnrepro submit, slurm/fit.sbatch) ends every task of the step at once.
DDP_TIMEOUT_S = 300


def _ddp_with_timeout(strategy, timeout_s: int):
    """The DDPStrategy that a registered name ("ddp", "ddp_find_unused_parameters_true", ...)
    stands for, with ``timeout`` set; None for anything else (a strategy object the user built
    keeps its own settings; "auto" on one device is no DDP at all).

    The timeout bounds the rendezvous (torch's TCPStore waits that long for the other ranks) and
    every collective.
    """
    if not isinstance(strategy, str) or strategy not in StrategyRegistry:
        return None
    entry = StrategyRegistry[strategy]
    if entry["strategy"] is not DDPStrategy:
        return None
    return DDPStrategy(**{**entry["init_params"], "timeout": timedelta(seconds=timeout_s)})


class _Parser(LightningArgumentParser):
    def __init__(self, *args, **kwargs):
        # argparse would read `--trainer.max_epoch 3` as --trainer.max_epochs (any unique prefix):
        # a typo must be refused, not silently taken for the key it happens to prefix
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def dump(self, cfg, *args, **kwargs):
        # `extends` is resolved by cnnrepro before parsing (the chain becomes --config files): a
        # dumped config is the whole resolved recipe, so it must not point at a base again
        if "extends" in cfg:
            cfg = cfg.clone()
            del cfg["extends"]
        return super().dump(cfg, *args, **kwargs)


def run_callbacks(subcommand: str, run: RunFolder, *, ckpt_every_n_steps: int, t_start: float,
                  ddp_timeout_s: int = DDP_TIMEOUT_S) -> list:
    """The callbacks `cnnrepro SUBCOMMAND` installs in its trainer, for the run folder ``run``.

    One function so that `cnnrepro bench train` times exactly the set a real fit pays for.
    """
    callbacks = [Throughput(), LearningRateMonitor(logging_interval="epoch")]
    if subcommand == "fit":
        ckpts = str(run.checkpoints)
        callbacks += [
            ModelCheckpoint(dirpath=ckpts, filename="best-epoch{epoch:03d}", auto_insert_metric_name=False,
                            monitor="val/top1_err", mode="min"),
            # last.ckpt after every epoch. Not ModelCheckpoint(save_last=True) above: Lightning 2.6
            # writes "last" only at steps where a top-k file was written, so it would stay at the
            # best epoch and `--ckpt_path last` would silently retrain the epochs since then.
            ModelCheckpoint(dirpath=ckpts, filename="last", monitor=None, save_top_k=1,
                            enable_version_counter=False),
            # signal -> checkpoint at the next step boundary (lit/preemption.py), exact resume (lit/resume.py)
            Preemption(run.checkpoints, every_n_steps=ckpt_every_n_steps, vote_timeout_s=ddp_timeout_s),
            ExactResume(wandb_id=run.wandb_id),
            RunHistory(run.attempts_path, t_start),
            EpochMetricsResume(),
        ]
    return callbacks


def refuse_optimizer_flags(args: list[str]) -> None:
    for a in args:
        if a.split("=", 1)[0].split(".", 1)[0] in OPTIMIZER_FLAGS:
            raise UserError(f"{a.split('=', 1)[0]}: cnnrepro builds the paper's optimizer and schedule from the "
                            f"recipe; set {', '.join(RECIPE_OPTIMIZER_KEYS)} (see `cnnrepro fit RECIPE --help`)")


class CnnreproCLI(LightningCLI):
    """LightningCLI of ``ClassifierModule`` and ``ImageNetDataModule`` (see the module docstring).

    Args:
        recipe_files: the recipe chain given as ``--config`` files (bases first): its leaf names
            the run group and the record's recipe.
    """

    def __init__(self, *args, recipe_files: list[Path], **kwargs):
        self.recipe_files = list(recipe_files)
        self.cli_args = [str(a) for a in (kwargs.get("args") or [])]
        # model settings in which the checkpoint differs from the values used (recipe, command line
        # or default): [{key, checkpoint, used, from}], in the run record
        self.ckpt_hparams_overridden: list[dict] = []
        self._ckpt_hparams: tuple[str | None, dict] = (None, {})  # (--ckpt_path file, its hparams)
        self.t_start = time.time()
        self.eval_protocol = None  # cnnrepro.eval.Protocol of validate/test --protocol
        self.weights = None  # lit.weights.LoadedWeights of validate/test --weights
        self.weights_preprocessing: str | None = None  # "library:<desc>" or "protocol:<name>"
        self.run: RunFolder | None = None
        self.history: RunHistory | None = None  # fit: every attempt of the run (lit/callbacks.py)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"default_env": False})
        kwargs.setdefault("parser_class", _Parser)
        super().__init__(ClassifierModule, ImageNetDataModule, *args, **kwargs)

    def parse_arguments(self, parser, args) -> None:
        # LightningCLI warns when `args` is given while sys.argv has arguments; ours are always the
        # command line itself, re-assembled by cnnrepro.commands.fit with the recipe chain
        self.config = parser.parse_args(args)

    def add_arguments_to_parser(self, parser):
        parser.add_argument("--extends", type=Optional[str], default=None,
                            help="base recipe this recipe extends (resolved by cnnrepro before parsing; never saved)")
        parser.add_argument("--run.dir", type=str, default="runs", help="folder holding every run's folder")
        parser.add_argument("--run.name", type=Optional[str],
                            default=self.recipe_files[-1].stem if self.recipe_files else None,
                            help="run group name (W&B group); default the recipe's file name, else model.arch")
        parser.add_argument("--run.wandb", type=Literal["auto", "online", "offline", "disabled"], default="auto",
                            help="auto: online if W&B credentials exist for the W&B host in use (WANDB_API_KEY, "
                                 "or a netrc entry for WANDB_BASE_URL's host), else offline (under the run folder)")
        parser.add_argument("--run.wandb_project", type=str, default="cnnrepro")
        parser.add_argument("--run.wandb_entity", type=Optional[str], default=None)
        parser.add_argument("--run.wandb_tags", type=list[str], default=[],
                            help="extra W&B tags (the model, command and protocol are always tags)")
        # cluster runs (cnnrepro.launch): a job pins its run folder, so a requeued job resumes
        # its own run from <folder>/checkpoints/last.ckpt (if any) instead of the newest one
        parser.add_argument("--run.folder", type=Optional[str], default=None,
                            help="exact run folder; resumed from its checkpoints/last.ckpt when that exists")
        parser.add_argument("--run.ckpt_every_n_steps", type=int, default=0,
                            help="also write last.ckpt every n steps (bounds what a SIGKILL loses; 0: off)")
        # torch's own default is 30 min (gloo) / 10 min (NCCL): a rank that hangs, or a peer that
        # dies where srun --kill-on-bad-exit cannot see it, would hold the whole job that long
        parser.add_argument("--run.ddp_timeout_s", type=int, default=DDP_TIMEOUT_S,
                            help="DDP: seconds a rank waits in the rendezvous or in any collective for the "
                                 "others before the run fails; raise it if one rank legitimately works alone "
                                 "longer (e.g. a slow checkpoint write)")
        # evaluation protocol of validate/test (cnnrepro/eval/protocols.py); fit validates with the centre crop
        parser.add_argument("--protocol", type=Literal[(*PROTOCOLS, "all")], default="center",
                            help="validate/test: the paper's test protocol; all: every protocol "
                                 "results/paper_numbers.yaml lists for the model, in one pass, one record each")
        parser.add_argument("--protocol_tencrop_variant", type=Optional[Literal[tuple(TENCROP_VARIANTS)]],
                            default=None,
                            help="tencrop: alexnet (corners of the central square, softmax averaged; default), "
                                 "torchvision (TenCrop of the whole image), fb (fb.resnet.torch: whole image, "
                                 "bicubic, logits summed)")
        parser.add_argument("--protocol_reduced_decode", type=bool, default=False,
                            help="decode large JPEGs at a reduced DCT scale (faster, other pixels); default off")
        parser.add_argument("--protocol_scales", type=Optional[list[int]], default=None,
                            help="shorter side(s): one for center/flip/tencrop, the Qs of dense and multiscale_fc "
                                 "(default 224,256,384,480,640), the 4 scales of multicrop144 (default "
                                 "256,288,320,352), the 3 of multicrop150[+dense] (default 256,384,512)")
        parser.add_argument("--protocol_crop_ratio", type=Optional[float], default=None,
                            help="center/flip/tencrop: crop / shorter side (e.g. 0.875); default data.crop/data.resize")
        # released or saved weights evaluated under a protocol (cnnrepro/lit/weights.py)
        parser.add_argument("--weights", type=Optional[str], default=None,
                            help="validate/test these weights instead of a checkpoint: torchvision:NAME[:ENUM], "
                                 "timm:NAME[.TAG], or a .pth/.safetensors/.ckpt file; library weights are read "
                                 "from the library's cache only (see --allow-download)")
        parser.add_argument("--allow-download", type=bool, default=False, nargs="?", const=True,
                            help="--weights: let torchvision/timm download weights missing from their cache")
        parser.add_argument("--weights_preprocessing", type=Optional[str], default=None,
                            help="--weights: 'library' (the weights' own resize/crop/interpolation/mean/std; the "
                                 "default for library weights under --protocol center), 'protocol' (the "
                                 "protocol's pixels, the weights' mean/std), or a library SPEC whose preprocessing "
                                 "a weight file gets (a file carries none)")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI merges a --ckpt_path file's hyperparameters over the parsed config, so the
        # recipe's and the command line's model settings were silently replaced by the checkpoint's
        # (and `--ckpt_path last`, resolved later, did not do it). Here the parsed config always
        # wins; the checkpoint is only read and compared (_check_checkpoint).
        pass

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        arch = cfg.get("model", {}).get("arch") if cfg.get("model") is not None else None
        if self.subcommand == "fit" and cfg.get("data") is not None and cfg.get("data").get("real_labels"):
            # refused before the run folder is made (the DataModule refuses it too, for Python callers)
            raise UserError("--data.real_labels applies to `cnnrepro validate` and `cnnrepro test`; fit "
                            "validates every epoch against the original labels")
        if arch is not None:
            from cnnrepro.models import list_models

            if arch not in list_models():
                import difflib

                close = difflib.get_close_matches(arch, list_models(), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise UserError(f"--model.arch {arch!r}: no such model{hint}; `cnnrepro models` lists the names")
        if self.subcommand:
            ckpt = cfg.get("ckpt_path")
            if ckpt is not None and ckpt != "last" and Path(ckpt).is_file():
                # before any folder is made or model built: a damaged file or another model is one line
                self._ckpt_hparams = (ckpt, read_checkpoint_hparams(ckpt))

    def _value_source(self, key: str) -> str:
        flag = f"--model.{key}"
        if any(a == flag or a.startswith((flag + "=", flag + ".")) for a in self.cli_args):
            return "command line"
        import yaml

        for p in reversed(self.recipe_files):
            model = (yaml.safe_load(Path(p).read_text()) or {}).get("model") or {}
            if key in model:
                return f"recipe {p.name}"
        return "default"

    def _check_checkpoint(self, ckpt_path: str, hparams: dict) -> None:
        """Refuse a checkpoint of another model; list the settings in which it differs from the run's."""
        used = dict(self.model.hparams)
        for key in ("arch", "num_classes"):
            if key in hparams and hparams[key] != used.get(key):
                what = f"--model.arch, {self._value_source(key)}" if key == "arch" else "the data's class list"
                raise UserError(f"--ckpt_path {ckpt_path}: the checkpoint's {key} is {hparams[key]!r}, this run's "
                                f"({what}) is {used.get(key)!r}; use the recipe and data the checkpoint was "
                                f"trained with, or another checkpoint")
        self.ckpt_hparams_overridden = [
            {"key": f"model.{k}", "checkpoint": hparams[k], "used": used[k], "from": self._value_source(k)}
            for k in sorted(hparams) if k in used and not k.startswith("_") and hparams[k] != used[k]]
        if self.ckpt_hparams_overridden:
            print(f"cnnrepro: {ckpt_path} was trained with other model settings; this run uses its own: " + "; ".join(
                f"{d['key']} {d['used']!r} ({d['from']}) instead of the checkpoint's {d['checkpoint']!r}"
                for d in self.ckpt_hparams_overridden), file=sys.stderr)

    # -- the run: folder, loggers, callbacks ------------------------------------------------------
    def _cfg(self):
        return self.config_init[self.subcommand]

    def resolved_config(self) -> dict:
        """The command's whole resolved config as plain data (W&B run config)."""
        cfg = self.config[self.subcommand].clone()
        if "extends" in cfg:
            del cfg["extends"]
        return json.loads(json.dumps(cfg.as_dict(), default=str))  # paths as strings

    def instantiate_trainer(self, **kwargs):
        cfg = self._cfg()
        run_cfg = cfg["run"]
        if run_cfg["ddp_timeout_s"] <= 0:
            raise UserError(f"--run.ddp_timeout_s {run_cfg['ddp_timeout_s']}: must be a positive number of seconds "
                            f"(default {DDP_TIMEOUT_S})")
        given, hparams = self._ckpt_hparams
        if given is not None:
            self._check_checkpoint(given, hparams)  # before a run folder is made for it
        self.run = RunFolder.open(self.subcommand, runs_dir=run_cfg["dir"],
                                  group=run_cfg["name"] or cfg["model"].arch,
                                  folder=run_cfg["folder"], ckpt_path=cfg.get("ckpt_path"))
        cfg["ckpt_path"] = self.run.ckpt_path
        resolved = self.run.ckpt_path
        if resolved is not None and (given is None or Path(given).resolve() != Path(resolved).resolve()):
            # the same refusal and the same precedence whichever way the checkpoint was named
            # (a file, `last`, or a pinned folder's last.ckpt)
            self._check_checkpoint(resolved, read_checkpoint_hparams(resolved))
        trainer_cfg = cfg["trainer"]
        if trainer_cfg.get("logger") in (None, True):
            # CSV first: trainer.log_dir (where the resolved config is saved) is the run folder
            loggers = [self.run.csv_logger()]  # appends across resumes (lit/runs.py)
            tags = [self.model.hparams.arch, self.subcommand, f"protocol:{cfg.get('protocol') or 'center'}",
                    *run_cfg["wandb_tags"]]
            wandb = self.run.wandb_logger(run_cfg["wandb"], project=run_cfg["wandb_project"],
                                          entity=run_cfg["wandb_entity"], config=self.resolved_config(), tags=tags)
            if wandb is not None:
                loggers.append(wandb)
            kwargs["logger"] = loggers
        kwargs.setdefault("default_root_dir", str(self.run.path))
        callbacks = run_callbacks(self.subcommand, self.run, ckpt_every_n_steps=run_cfg["ckpt_every_n_steps"] or 0,
                                  t_start=self.t_start, ddp_timeout_s=run_cfg["ddp_timeout_s"])
        if self.subcommand == "fit":
            self.history = next(c for c in callbacks if isinstance(c, RunHistory))
            if trainer_cfg.get("enable_progress_bar") is not False and not any(
                    isinstance(c, ProgressBar) for c in trainer_cfg.get("callbacks") or []):
                callbacks.append(ResumedProgressBar())  # Lightning's bar, right after a mid-epoch resume
            if trainer_cfg.get("plugins") is None:
                kwargs["plugins"] = slurm_plugins()  # atomic checkpoint writes; no Lightning requeue
        strategy = _ddp_with_timeout(trainer_cfg.get("strategy"), run_cfg["ddp_timeout_s"])
        if strategy is not None:
            kwargs["strategy"] = strategy
        self.trainer_defaults = {**self.trainer_defaults, "callbacks": callbacks}
        return super().instantiate_trainer(**kwargs)

    # -- protocols ----------------------------------------------------------------------------
    def _protocol_args(self) -> tuple[str, list[int] | None, float | None, str | None, bool]:
        cfg = self._cfg()
        return (cfg.get("protocol") or "center", cfg.get("protocol_scales"), cfg.get("protocol_crop_ratio"),
                cfg.get("protocol_tencrop_variant"), bool(cfg.get("protocol_reduced_decode")))

    def before_fit(self):
        name, scales, ratio, variant, reduced = self._protocol_args()
        if name != "center" or scales is not None or ratio is not None or variant is not None or reduced:
            raise UserError("--protocol/--protocol_scales/--protocol_crop_ratio/--protocol_tencrop_variant/"
                            "--protocol_reduced_decode apply to `cnnrepro validate` and `cnnrepro test`; fit "
                            "validates every epoch with the recipe's centre crop (data.resize, data.crop)")
        self._weights_args(None)

    def _weights_args(self, name: str | None) -> tuple[str | None, bool, str | None]:
        cfg = self._cfg()
        spec, download, pre = cfg.get("weights"), bool(cfg.get("allow_download")), cfg.get("weights_preprocessing")
        if name is None and (spec is not None or download or pre is not None):
            raise UserError("--weights/--allow-download/--weights_preprocessing apply to `cnnrepro validate` and "
                            "`cnnrepro test` (evaluating given weights); fit trains from the recipe's initialisation")
        if spec is None and (download or pre is not None):
            raise UserError("--allow-download/--weights_preprocessing go with --weights SPEC")
        if spec is not None and cfg.get("ckpt_path") is not None:
            raise UserError("give --weights or --ckpt_path, not both (a cnnrepro checkpoint also works as --weights)")
        return spec, download, pre

    def _wire_protocol(self):
        name, scales, ratio, variant, reduced = self._protocol_args()
        dm = self.datamodule
        spec, download, pre = self._weights_args(name)
        self.weights = None
        if spec is not None:
            self.weights = load_weights(self.model.model, self.model.hparams.arch, spec, allow_download=download)
            if self._wire_weights(self.weights, pre, (name, scales, ratio, variant, reduced)):
                return
        if name == "all":
            self.eval_protocol = self._paper_protocols(scales, ratio, variant, reduced)
        else:
            self.eval_protocol = build_protocol(name, crop=dm.hparams.crop, resize=dm.hparams.resize,
                                                scales=scales, crop_ratio=ratio, tencrop_variant=variant,
                                                reduced_decode=reduced)
        dm.protocol = self.eval_protocol
        self.model.set_eval_protocol(self.eval_protocol)

    def _paper_protocols(self, scales, ratio, variant, reduced):
        """``--protocol all``: the paper's protocols for this model with the paper's settings."""
        given = [f for f, v in (("--protocol_scales", scales), ("--protocol_crop_ratio", ratio),
                                ("--protocol_tencrop_variant", variant), ("--protocol_reduced_decode", reduced)) if v]
        if given:
            # each protocol takes the paper entry's own settings; reduced decoding is per protocol
            # (each its own smallest side), so it cannot share one decode between them
            raise UserError(f"{', '.join(given)}: --protocol all evaluates each protocol with the settings "
                            f"results/paper_numbers.yaml gives it; name one protocol with --protocol to change them")
        dm, hp = self.datamodule, self.model.hparams
        pset, skipped = paper_protocols(hp.arch, paper=load_paper_numbers(), crop=dm.hparams.crop,
                                        resize=dm.hparams.resize,
                                        arch_kwargs=hp.arch_kwargs or {})
        for why in skipped:
            print(f"cnnrepro: --protocol all: {hp.arch}: skipped {why}", file=sys.stderr)
        print(f"cnnrepro: --protocol all: {hp.arch}: " + "; ".join(
            protocol_label(p.name, p.params) for p in pset.protocols) + " (one pass, one record each)", file=sys.stderr)
        return pset

    def _wire_weights(self, loaded, pre: str | None, protocol_args) -> bool:
        """Preprocessing of --weights: True if the library's own (one centre view) was wired, False
        if the protocol's pixels are to be built (normalised with the weights' mean/std if known)."""
        name, scales, ratio, _variant, reduced = protocol_args
        lib = loaded.preprocessing
        if pre not in (None, "library", "protocol"):
            lib = library_preprocessing(pre)  # a file's: the metadata of the library weights named
        plain_center = name == "center" and scales is None and ratio is None and not reduced
        if pre == "library" and lib is None:
            raise UserError(f"--weights_preprocessing library: {loaded.spec} carries no library metadata; name the "
                            f"library weights whose preprocessing it uses (--weights_preprocessing "
                            f"torchvision:NAME[:ENUM] or timm:NAME[.TAG])")
        if pre == "library" and not plain_center:
            raise UserError(f"--weights_preprocessing library: the library's preprocessing is one centre crop; "
                            f"--protocol {name} (and its --protocol_* settings) prescribes its own pixels: use "
                            f"--weights_preprocessing protocol")
        # a paper protocol prescribes its own pixels; the weights keep their own mean/std either way
        use_library = pre != "protocol" and lib is not None and plain_center
        dm = self.datamodule
        if lib is not None:
            dm.normalize = WeightsNormalize(lib.params["mean"], lib.params["std"])
        else:
            print(f"cnnrepro: {loaded.spec} carries no preprocessing metadata: the recipe's data.mean/data.std "
                  f"normalise it (--weights_preprocessing torchvision:NAME[:ENUM] or timm:NAME[.TAG] uses a "
                  f"library's)", file=sys.stderr)
        if not use_library:
            self.weights_preprocessing = f"protocol:{name}"
            return False
        self.weights_preprocessing = f"library:{lib.desc}"
        p = lib.params
        self.eval_protocol = Protocol(
            "center", LibraryEvalViews(lib.transform),
            {"resize": p["resize"], "crop": p["crop"], "scales": [p["resize"]],
             "preprocessing": {"library": lib.desc, "decode": "full (PIL)", "transform": repr(lib.transform)}}, 1)
        dm.protocol = self.eval_protocol
        self.model.set_eval_protocol(self.eval_protocol)
        return True

    before_validate = before_test = _wire_protocol

    # -- the run record -------------------------------------------------------------------------
    def _record(self) -> None:
        if not self.trainer.is_global_zero:
            return
        if isinstance(self.eval_protocol, ProtocolSet):
            return self._protocol_set_records()
        cfg = self._cfg()
        rec = records.build_record(
            self.trainer, self.model, self.datamodule, run=self.run, command=self.subcommand,
            recipe_files=self.recipe_files, protocol=self.eval_protocol, ckpt_path=cfg.get("ckpt_path"),
            seed=cfg.get("seed_everything"), wandb_project=cfg["run"]["wandb_project"],
            wandb_entity=cfg["run"]["wandb_entity"],
            throughput=next((c.summary(self.trainer.world_size,
                                       self.history.totals()["throughput_totals"] if self.history else None)
                              for c in self.trainer.callbacks if isinstance(c, Throughput)), {}),
            t_start=self.t_start, history=self.history,
            weights=self.weights.record(self.weights_preprocessing) if self.weights is not None else None,
        )
        if rec is None:
            print("cnnrepro: no validation ran, so no run record was written", file=sys.stderr)
            return
        rec.ckpt_hparams_overridden = self.ckpt_hparams_overridden
        if rec.samples != rec.samples_expected:
            print(f"cnnrepro: WARNING validation saw {rec.samples} samples, the manifest lists {rec.samples_expected}",
                  file=sys.stderr)
        path = records.write_record(rec, self.run.record_path)
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update(rec.summary())
        print(f"\nrun record: {path}")
        print(render_markdown(table_rows([{**rec.as_dict(), "record_path": str(path)}], load_paper_numbers())))

    after_fit = after_validate = after_test = _record

    def _set_seed(self) -> None:
        # LightningCLI's own seeding, without its "Seed set to N" log line: it was printed before any
        # one-line error (a missing data path, a wrong flag) and the seed is in the record and config
        seed = self._get(self.config, "seed_everything")
        if seed is False:
            return
        seed = seed_everything(None if seed is True else seed, workers=True, verbose=False)
        if self.subcommand:
            self.config[self.subcommand]["seed_everything"] = seed
        else:
            self.config["seed_everything"] = seed

    def _protocol_set_records(self) -> None:
        """``--protocol all``: one record per protocol, ``<run>/protocols/<i>_<name>/record.json``
        (``cnnrepro table`` reads every record.json below a folder)."""
        cfg = self._cfg()
        results = self.model.last_val_protocols
        if not results:
            print("cnnrepro: no validation ran, so no run record was written", file=sys.stderr)
            return
        throughput = next((c.summary(self.trainer.world_size) for c in self.trainer.callbacks
                           if isinstance(c, Throughput)), {})
        rows, summary = [], {}
        for i, (p, val) in enumerate(zip(self.eval_protocol.protocols, results)):
            rec = records.build_record(
                self.trainer, self.model, self.datamodule, run=self.run, command=self.subcommand,
                recipe_files=self.recipe_files, protocol=p, ckpt_path=cfg.get("ckpt_path"),
                seed=cfg.get("seed_everything"), wandb_project=cfg["run"]["wandb_project"],
                wandb_entity=cfg["run"]["wandb_entity"], throughput=throughput, t_start=self.t_start, val=val,
                # with --protocol all the weights' pixels are each protocol's own
                weights=self.weights.record(f"protocol:{p.name}") if self.weights is not None else None)
            rec.ckpt_hparams_overridden = self.ckpt_hparams_overridden
            if rec.samples != rec.samples_expected:
                print(f"cnnrepro: WARNING {p.name}: validation saw {rec.samples} samples, the manifest lists "
                      f"{rec.samples_expected}", file=sys.stderr)
            path = records.write_record(rec, self.run.path / "protocols" / f"{i}_{p.name}" / "record.json")
            print(f"run record: {path}")
            rows.append({**rec.as_dict(), "record_path": str(path)})
            summary.update({k.replace("record/", f"record/{i}_{p.name}/", 1): v for k, v in rec.summary().items()})
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update(summary)
        print("\n" + render_markdown(table_rows(rows, load_paper_numbers())))


class _NoRun(CnnreproCLI):
    """The recipe's parser without a run: parse (and optionally build model and data), nothing else."""

    def __init__(self, *args, build: bool = False, **kwargs):
        self._build = build
        super().__init__(*args, **kwargs)

    def _set_seed(self):  # nothing is run: no seeding (and no "Seed set" line per recipe)
        pass

    def instantiate_classes(self):
        if self._build:  # model and DataModule only: no run folder, loggers or trainer
            self.config_init = self.parser.instantiate_classes(self.config)
            self.datamodule = self._get(self.config_init, "data")
            self.model = self._get(self.config_init, "model")

    def _run_subcommand(self, subcommand):
        pass


def _config_args(recipe_files: list[Path]) -> list[str]:
    return [a for p in recipe_files for a in ("--config", str(p))]


def run_command(command: str, recipe_files: list[Path], args: list[str]) -> None:
    """``cnnrepro fit|validate|test [RECIPE] [args]``: parse, build, run, record."""
    refuse_optimizer_flags(args)
    try:
        CnnreproCLI(args=[command, *_config_args(recipe_files), *args], recipe_files=recipe_files)
    except OSError as e:
        # the run folder, config.yaml, metrics.csv, ... on a full or read-only file system
        # (checkpoints and the record say so themselves: lit/checkpoint_io.py, results/records.py)
        if e.errno not in WRITE_ERRNOS:
            raise
        raise unwritable(e.filename or "run folder", "file", e) from None


def parse_only(command: str, recipe_files: list[Path], args: list[str] = ()):
    """The resolved config (jsonargparse Namespace) of ``cnnrepro COMMAND RECIPE ARGS``, nothing run.

    A bad key, type or value is a UserError carrying jsonargparse's one-line reason.
    """
    refuse_optimizer_flags(list(args))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            cli = _NoRun(args=[command, *_config_args(recipe_files), *args], recipe_files=recipe_files,
                         save_config_callback=None)
    except SystemExit as e:
        if not e.code:
            raise
        # jsonargparse printed its usage and then "error: <reason>": keep the reason
        reason = next((ln for ln in reversed(err.getvalue().splitlines()) if ln.startswith("error:")),
                      err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "invalid arguments")
        raise UserError(f"`cnnrepro {command}` would refuse these arguments: {reason.removeprefix('error:').strip()}")
    return cli.config[command]


def instantiate_model_and_data(recipe_files: list[Path], args: list[str] = ()):
    """The recipe's (ClassifierModule, ImageNetDataModule), built by the real parser (no run)."""
    refuse_optimizer_flags(list(args))
    cli = _NoRun(args=[*_config_args(recipe_files), *args], recipe_files=recipe_files, run=False,
                 save_config_callback=None, build=True)
    return cli.model, cli.datamodule
