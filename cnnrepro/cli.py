"""The ``cnnrepro`` command.

    cnnrepro fit RECIPE [--key.sub value ...]        train (LightningCLI; RECIPE = --config)
    cnnrepro validate RECIPE --ckpt_path CKPT [--protocol P]   evaluate a checkpoint under a paper's protocol
    cnnrepro table [RECORDS_OR_DIRS ...] [--csv] [--out DIR] [--plot STEM]   reproduced beside paper numbers
    cnnrepro plot [RECORDS_OR_DIRS ...] --out STEM    top-1 against GMACs (PNG + SVG)
    cnnrepro profile MODEL|all [--batch-sizes 1,2,4]  params, MACs, memory, latency (results/profile/)
    cnnrepro models [--json]                          the model zoo
    cnnrepro submit RECIPE [overrides] [--nodes N ...] [--wait]   the same fit as a SLURM job (slurm/README.md)
    cnnrepro shards SRC DST [--alexnet256]            ImageNet (tree/archives/Kaggle) -> WebDataset shards
    cnnrepro bench data                               loader images/s per core: ours vs torchvision

A recipe may name a base recipe with ``extends: base.yaml`` (relative to the recipe); the
chain is given to LightningCLI as successive ``--config`` files, bases first, so a leaf names
only what differs and unknown keys anywhere in the chain are errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Literal, Optional

import yaml

from cnnrepro.errors import UserError

__all__ = ["main", "recipe_chain"]

LIGHTNING_COMMANDS = ("fit", "validate", "test")


class CliError(Exception):
    """A user error: printed as one line, no traceback, exit status 2."""


def recipe_chain(recipe: str | Path) -> list[Path]:
    """[base, ..., recipe] following ``extends`` keys; cycles and missing files are errors."""
    chain: list[Path] = []
    path = Path(recipe)
    while True:
        if not path.is_file():
            raise CliError(f"recipe {str(path)!r} not found" + (f" (extended by {chain[0]})" if chain else ""))
        path = path.resolve()
        if path in chain:
            raise CliError(f"recipe {path} extends itself (cycle: {' -> '.join(map(str, chain))})")
        chain.insert(0, path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise CliError(f"recipe {path} is not valid YAML: {e}") from None
        base = data.get("extends") if isinstance(data, dict) else None
        if not base:
            return chain
        path = path.parent / base


def _next_run_dir(parent: Path, prefix: str) -> Path:
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


def _latest_resumable(parent: Path) -> Path | None:
    runs = sorted((p for p in parent.glob("fit-*") if (p / "checkpoints" / "last.ckpt").exists()), key=lambda p: p.name)
    return runs[-1] if runs else None


def _wandb_mode(choice: str) -> str | None:
    if choice == "disabled":
        return None
    if choice in ("online", "offline"):
        return choice
    # auto: online only when credentials exist; offline never touches the network
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        return None if os.environ["WANDB_MODE"] == "disabled" else "offline"
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    if netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


def _build_cli_class():
    # imported lazily: `cnnrepro table` and `cnnrepro models --json` should not pay for Lightning
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
    from pytorch_lightning.cli import LightningCLI
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    from cnnrepro.data.datamodule import ImageNetDataModule
    from cnnrepro.lit.callbacks import Throughput
    from cnnrepro.lit.module import ClassifierModule
    from cnnrepro.results import records

    class CnnreproCLI(LightningCLI):
        def __init__(self, *args, recipe_files: list[Path], **kwargs):
            self.recipe_files = recipe_files
            self.t_start = time.time()
            self.eval_protocol = None  # cnnrepro.eval.Protocol of `validate --protocol`
            self.wandb_mode = None
            super().__init__(*args, **kwargs)

        def add_arguments_to_parser(self, parser):
            parser.add_argument("--extends", type=Optional[str], default=None,
                                help="base recipe this recipe extends (resolved by cnnrepro before parsing)")
            parser.add_argument("--run.dir", type=str, default="runs", help="folder holding every run's folder")
            parser.add_argument("--run.name", type=Optional[str], default=None,
                                help="run group name; default the recipe's file name")
            parser.add_argument("--run.wandb", type=Literal["auto", "online", "offline", "disabled"], default="auto",
                                help="auto: online if a W&B API key is set, else offline (files under the run folder)")
            parser.add_argument("--run.wandb_project", type=str, default="cnnrepro")
            parser.add_argument("--run.wandb_entity", type=Optional[str], default=None)
            # cluster runs (cnnrepro.launch): a job pins its run folder, so a requeued job resumes
            # its own run from <folder>/checkpoints/last.ckpt (if any) instead of the newest one
            parser.add_argument("--run.folder", type=Optional[str], default=None,
                                help="exact run folder; resumed from its checkpoints/last.ckpt when that exists")
            parser.add_argument("--run.ckpt_every_n_steps", type=int, default=0,
                                help="also write last.ckpt every n steps (bounds what a SIGKILL loses; 0: off)")
            # evaluation protocol of `validate` (cnnrepro/eval/protocols.py); `fit` validates with the centre crop
            from cnnrepro.eval.protocols import PROTOCOLS, TENCROP_VARIANTS

            parser.add_argument("--protocol", type=Literal[PROTOCOLS],
                                default="center", help="validate: the paper's test protocol")
            parser.add_argument("--protocol_tencrop_variant", type=Optional[Literal[TENCROP_VARIANTS]], default=None,
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
            parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")

        # -- run folder, loggers, checkpoints -------------------------------------------------
        def instantiate_trainer(self, **kwargs):
            cfg = self.config_init[self.subcommand]
            run = cfg["run"]
            name = run["name"] or (self.recipe_files[-1].stem if self.recipe_files else cfg["model"].arch)
            parent = Path(run["dir"]) / name
            ckpt = cfg.get("ckpt_path")
            if self.subcommand == "fit" and run.get("folder"):
                self.run_dir = Path(run["folder"])
                self.run_dir.mkdir(parents=True, exist_ok=True)
                if ckpt is None and (self.run_dir / "checkpoints" / "last.ckpt").is_file():
                    cfg["ckpt_path"] = str(self.run_dir / "checkpoints" / "last.ckpt")  # requeued: resume
                elif ckpt is not None and ckpt != "last" and not Path(ckpt).is_file():
                    raise CliError(f"--ckpt_path {ckpt}: no such checkpoint file")
                elif ckpt == "last":
                    cfg["ckpt_path"] = str(self.run_dir / "checkpoints" / "last.ckpt") \
                        if (self.run_dir / "checkpoints" / "last.ckpt").is_file() else None
            elif self.subcommand == "fit" and ckpt == "last":
                found = _latest_resumable(parent)
                if found is None:
                    raise CliError(
                        f"--ckpt_path last: no {parent}/fit-*/checkpoints/last.ckpt to resume; "
                        f"start without --ckpt_path (or pass a checkpoint file)"
                    )
                self.run_dir = found
                cfg["ckpt_path"] = str(found / "checkpoints" / "last.ckpt")
            elif ckpt is not None and not Path(ckpt).is_file():
                raise CliError(f"--ckpt_path {ckpt}: no such checkpoint file")
            else:
                self.run_dir = _next_run_dir(parent, self.subcommand)
            self.run_name = f"{name}/{self.run_dir.name}"
            id_file = self.run_dir / "wandb_id.txt"
            if self.subcommand == "fit" and cfg.get("ckpt_path") and not id_file.exists():
                # resuming into a folder without its id file: the checkpoint carries the W&B run id
                from cnnrepro.lit.preemption import wandb_id_in_checkpoint

                saved = wandb_id_in_checkpoint(cfg["ckpt_path"])
                if saved:
                    id_file.write_text(saved)

            trainer_cfg = cfg["trainer"]
            loggers = []
            if trainer_cfg.get("logger") in (None, True):
                # CSV first: trainer.log_dir (where the resolved config is saved) is the run folder
                loggers.append(CSVLogger(save_dir=str(self.run_dir), name="", version=""))
                mode = _wandb_mode(run["wandb"])
                if mode is not None:
                    loggers.append(self._wandb_logger(WandbLogger, mode, run))
                kwargs["logger"] = loggers
            kwargs.setdefault("default_root_dir", str(self.run_dir))
            callbacks = [Throughput(), LearningRateMonitor(logging_interval="epoch")]
            if self.subcommand == "fit":
                callbacks.append(
                    ModelCheckpoint(
                        dirpath=str(self.run_dir / "checkpoints"),
                        filename="best-epoch{epoch:03d}",
                        auto_insert_metric_name=False,
                        monitor="val/top1_err",
                        mode="min",
                    )
                )
                # last.ckpt after every epoch. Not ModelCheckpoint(save_last=True) above: Lightning 2.6
                # writes "last" only at steps where a top-k file was written, so it would stay at the
                # best epoch and `--ckpt_path last` would silently retrain the epochs since then.
                callbacks.append(ModelCheckpoint(dirpath=str(self.run_dir / "checkpoints"), filename="last",
                                                 monitor=None, save_top_k=1, enable_version_counter=False))
            if self.subcommand == "fit":
                # preemption: signal -> checkpoint at the next step boundary (cnnrepro/lit/preemption.py)
                from cnnrepro.lit.preemption import Preemption, slurm_plugins

                id_file = self.run_dir / "wandb_id.txt"
                callbacks.append(Preemption(self.run_dir / "checkpoints",
                                            wandb_id=id_file.read_text().strip() if id_file.exists() else None,
                                            every_n_steps=run.get("ckpt_every_n_steps") or 0))
                if trainer_cfg.get("plugins") is None:
                    kwargs["plugins"] = slurm_plugins()  # atomic checkpoint writes; no Lightning requeue
            self.trainer_defaults = {**self.trainer_defaults, "callbacks": callbacks}
            return super().instantiate_trainer(**kwargs)

        def _wandb_logger(self, WandbLogger, mode: str, run: dict):
            id_file = self.run_dir / "wandb_id.txt"
            if id_file.exists():
                run_id = id_file.read_text().strip()
            else:
                import uuid

                run_id = uuid.uuid4().hex[:12]  # W&B run ids: lowercase letters and digits
                id_file.write_text(run_id)
            logger = WandbLogger(
                project=run["wandb_project"], entity=run["wandb_entity"], name=self.run_name, id=run_id,
                save_dir=str(self.run_dir), offline=(mode == "offline"), resume="allow",
            )
            self.wandb_mode = mode
            if mode == "online":
                try:
                    logger.experiment  # noqa: B018  (start now so a network failure shows here)
                except Exception as e:  # the run must never fail because W&B is unreachable
                    print(f"cnnrepro: W&B online init failed ({e}); logging offline instead", file=sys.stderr)
                    logger = WandbLogger(
                        project=run["wandb_project"], entity=run["wandb_entity"], name=self.run_name, id=run_id,
                        save_dir=str(self.run_dir), offline=True, resume="allow",
                    )
                    self.wandb_mode = "offline"
            return logger

        # -- run records ----------------------------------------------------------------------
        def _record(self, epochs: int | None) -> None:
            if not self.trainer.is_global_zero:
                return
            m, dm = self.model, self.datamodule
            val = m.last_val
            if not val:
                print("cnnrepro: no validation ran, so no run record was written", file=sys.stderr)
                return
            expected = dm.manifest["val"]["samples"]
            if val["samples"] != expected:
                print(f"cnnrepro: WARNING validation saw {val['samples']} samples, the manifest lists {expected}",
                      file=sys.stderr)
            rec = {
                "model": m.hparams.arch,
                "recipe": str(self.recipe_files[-1]) if self.recipe_files else None,
                "recipe_chain": [str(p) for p in self.recipe_files],
                "recipe_sha256": records.recipe_sha256(self.recipe_files) if self.recipe_files else None,
                "git_commit": records.git_commit(),
                "command": self.subcommand,
                "data": dm.data_name,
                "split": dm.split_name("val"),
                "num_classes": m.hparams.num_classes,
                "arch_kwargs": m.hparams.arch_kwargs or {},
                "samples": val["samples"],
                "samples_expected": expected,
                "protocol": self.eval_protocol.name if self.eval_protocol else "center",
                "protocol_params": self.eval_protocol.params if self.eval_protocol
                else getattr(dm.eval_transform, "params", None)
                or {"resize": dm.hparams.resize, "crop": dm.hparams.crop, "scales": [dm.hparams.resize]},
                "ckpt_path": self.config_init[self.subcommand].get("ckpt_path"),
                "seed": self.config_init[self.subcommand].get("seed_everything"),
                "top1": round(val["top1"], 4),
                "top5": round(val["top5"], 4),
                "val_loss": round(val["loss"], 6),
                "best": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.best_val.items()},
                "epochs": epochs,
                "global_step": self.trainer.global_step,
                "global_batch": dm.batch_size * self.trainer.world_size * self.trainer.accumulate_grad_batches,
                # paper batch, scaling rule, effective lr and warmup (cnnrepro.lit.batch)
                "batch_plan": m.batch_plan.as_dict() if getattr(m, "batch_plan", None) is not None else None,
                "wall_seconds": round(time.time() - self.t_start, 1),
                "hardware": records.hardware(self.trainer),
                "throughput": next((c.summary(self.trainer.world_size) for c in self.trainer.callbacks
                                    if isinstance(c, Throughput)), {}),
                "fast_paths": {"precision": str(self.trainer.precision),
                               "channels_last": bool(m.hparams.get("channels_last", False)),
                               "compile": bool(m.hparams.get("compile", False))},
                "run_dir": str(self.run_dir),
                "wandb_id": (self.run_dir / "wandb_id.txt").read_text().strip()
                if (self.run_dir / "wandb_id.txt").exists() else None,
                "wandb_mode": self.wandb_mode,
                "wandb_project": self.config_init[self.subcommand]["run"]["wandb_project"],
                "wandb_entity": self.config_init[self.subcommand]["run"]["wandb_entity"],
            }
            path = records.write_record(rec, self.run_dir / "record.json")
            from cnnrepro.results.table import load_paper_numbers, render_markdown, table_rows

            print(f"\nrun record: {path}")
            print(render_markdown(table_rows([{**rec, "record_path": str(path)}], load_paper_numbers())))

        def _protocol_args(self) -> tuple[str, list[int] | None, float | None, str | None, bool]:
            cfg = self.config_init[self.subcommand]
            return (cfg.get("protocol") or "center", cfg.get("protocol_scales"), cfg.get("protocol_crop_ratio"),
                    cfg.get("protocol_tencrop_variant"), bool(cfg.get("protocol_reduced_decode")))

        def before_fit(self):
            name, scales, ratio, variant, reduced = self._protocol_args()
            if name != "center" or scales is not None or ratio is not None or variant is not None or reduced:
                raise CliError("--protocol/--protocol_scales/--protocol_crop_ratio/--protocol_tencrop_variant/"
                               "--protocol_reduced_decode apply to `cnnrepro validate`; fit validates every epoch "
                               "with the recipe's centre crop (data.resize, data.crop)")

        def before_validate(self):
            from cnnrepro.eval import ProtocolError, build_protocol

            name, scales, ratio, variant, reduced = self._protocol_args()
            dm = self.datamodule
            try:
                self.eval_protocol = build_protocol(name, crop=dm.hparams.crop, resize=dm.hparams.resize,
                                                    scales=scales, crop_ratio=ratio, tencrop_variant=variant,
                                                    reduced_decode=reduced)
            except ProtocolError as e:
                raise CliError(str(e)) from None
            dm.protocol = self.model.eval_protocol = self.eval_protocol

        def after_fit(self):
            self._record(epochs=self.model.epochs_trained())

        def after_validate(self):
            # None: no checkpoint given, the recipe's freshly initialised weights were evaluated
            self._record(epochs=self.model.ckpt_epochs)

    return CnnreproCLI, ClassifierModule, ImageNetDataModule


def _lightning(cmd: str, args: list[str]) -> int:
    recipe_files: list[Path] = []
    if args and not args[0].startswith("-"):
        recipe_files = recipe_chain(args[0])
        args = args[1:]
    config_args = [a for p in recipe_files for a in ("--config", str(p))]
    CnnreproCLI, Module, DataModule = _build_cli_class()
    from cnnrepro.data.datamodule import DataConfigError

    try:
        CnnreproCLI(
            Module,
            DataModule,
            args=[cmd, *config_args, *args],
            recipe_files=recipe_files,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"default_env": False},
        )
    except DataConfigError as e:
        raise CliError(str(e)) from None
    return 0


def _models(args: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cnnrepro models", description="the model zoo with parameters and MACs")
    p.add_argument("pattern", nargs="?", default=None, help="glob over registry names, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-macs", action="store_true", help="skip counting MACs (faster)")
    a = p.parse_args(args)
    import torch

    from cnnrepro.models import count_macs, count_params, create_model, list_models, model_info

    rows = []
    for name in list_models(a.pattern):
        info = model_info(name)
        with torch.device("meta"):  # shapes only: no memory, no arithmetic, same counts
            model = create_model(name)
        row = {**info.as_dict(), "params": count_params(model)}
        row["gmacs"] = None if a.no_macs else round(count_macs(model, info.input_size) / 1e9, 4)
        rows.append(row)
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("MACs: multiply-accumulates of conv and FC layers for one image at the paper's input size,")
    print("counted with torch.utils.flop_counter (FLOPs / 2); the papers' 'FLOPs' mean the same.\n")
    print(f"{'name':28s} {'year':>4s} {'params':>13s} {'GMACs':>8s} {'input':>11s}  implementation")
    for r in rows:
        size = "x".join(map(str, r["input_size"]))
        g = "" if r["gmacs"] is None else f"{r['gmacs']:.4f}"
        print(f"{r['name']:28s} {r['year']:>4d} {r['params']:>13,d} {g:>8s} {size:>11s}  {r['implementation']}")
    return 0


def _shards(args: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cnnrepro shards", description="ImageNet (tree, ILSVRC2012 archives or Kaggle "
                                "layout) -> WebDataset shards + manifest")
    p.add_argument("src", help="SRC/train/<wnid>/* (+ SRC/val/<wnid>/*); or a folder with ILSVRC2012_img_train.tar, "
                               "ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz (or LOC_val_solution.csv); "
                               "or the Kaggle layout SRC/ILSVRC/Data/CLS-LOC + SRC/LOC_val_solution.csv",
                   nargs="?")
    p.add_argument("dst", help="output folder for the shards and manifest.json", nargs="?")
    p.add_argument("--verify", metavar="DST", default=None,
                   help="check every shard of DST against its manifest (size, sha256; cached) and exit")
    p.add_argument("--samples-per-shard", type=int, default=1000)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    pre = p.add_mutually_exclusive_group()
    pre.add_argument("--resize-shorter", type=int, default=None, metavar="N",
                     help="re-encode every image with shorter side N (default: keep the original bytes)")
    pre.add_argument("--alexnet256", action="store_true",
                     help="AlexNet Sec. 2: shorter side 256, then the central 256x256 patch")
    p.add_argument("--seed", type=int, default=0, help="seed of the training-set shuffle across shards")
    a = p.parse_args(args)
    if a.verify is not None:
        from cnnrepro.data.verify import verify_command

        return verify_command(a.verify)
    if a.dst is None:
        p.error("SRC and DST are required (or --verify DST)")
    from cnnrepro.data.ilsvrc import detect_source
    from cnnrepro.data.shards import write_shards

    try:
        source = detect_source(a.src)
        print(f"found: {source.description}", flush=True)
        m = write_shards(a.src, a.dst, samples_per_shard=a.samples_per_shard, workers=a.workers,
                         resize_shorter=a.resize_shorter, alexnet256=a.alexnet256, seed=a.seed, source=source)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    except KeyboardInterrupt:
        print(f"cnnrepro: interrupted; the complete shards in {a.dst} are kept: rerun the same command to finish",
              file=sys.stderr)
        return 130
    for split in ("train", "val"):
        if split in m:
            s = m[split]
            print(f"{split}: {s['samples']} samples in {len(s['shards'])} shards; "
                  f"{len(s['repaired'])} repaired, {len(s['rejected'])} rejected (of {s['inputs']} files)")
    print(f"manifest: {Path(a.dst) / 'manifest.json'}")
    return 0


def _bench(args: list[str]) -> int:
    # `cnnrepro bench train RECIPE ...` (training path vs a plain loop); other forms: data bench
    if args and args[0] == "train":
        from cnnrepro.lit.bench import main as bench_train_main

        return bench_train_main(args[1:])
    from cnnrepro.data.bench import bench_command

    return bench_command(args)


def _submit(args: list[str]) -> int:
    from cnnrepro.launch.submit import SubmitError, submit_main

    try:
        return submit_main(args)
    except SubmitError as e:
        raise CliError(str(e)) from None


def _recipes(args: list[str]) -> int:
    from cnnrepro.recipes import recipes_command  # `cnnrepro recipes check`: every recipe parsed and checked

    return recipes_command(args)


USAGE = __doc__.split("\n\n")[1]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage:\n" + USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    from cnnrepro.results.commands import plot_command, profile_command, table_command

    handlers = {"table": table_command, "models": _models, "shards": _shards, "plot": plot_command,
                "profile": profile_command, "bench": _bench, "submit": _submit,
                "recipes": _recipes}
    try:
        if cmd in LIGHTNING_COMMANDS:
            return _lightning(cmd, rest)
        if cmd in handlers:
            return handlers[cmd](rest)
        raise CliError(f"unknown command {cmd!r}; commands: {', '.join([*LIGHTNING_COMMANDS, *handlers])}")
    except (CliError, UserError) as e:
        print(f"cnnrepro: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
