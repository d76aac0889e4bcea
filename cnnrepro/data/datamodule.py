"""The LightningDataModule: WebDataset shards in, uint8 batches out, normalised on the device."""

from __future__ import annotations

import inspect
import os
import signal
import warnings
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from cnnrepro.errors import UserError

from .demo import ensure_demo_shards
from .ilsvrc import SourceError
from .imagefolder import folder_manifest
from .mnist import ensure_mnist_shards, is_idx_dir
from .shards import read_manifest_or_info, resolution_error
from .stream import EvalStream, ShardInfo, TrainStream
from .transforms import TRAIN_TRANSFORMS, BatchNormalize, CenterCrop
from .verify import check_sizes, raise_problems, verify_shards

__all__ = ["ImageNetDataModule", "DataConfigError", "DATA_ENV"]

DATA_ENV = "CNNREPRO_DATA"

# Our streams' __len__ is exact for every worker count (they yield whole batches with per-worker
# quotas), which is the case Lightning's generic warning cannot know about.
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
# A mid-epoch resume: Lightning warns unless the DataLoader implements state_dict/load_state_dict,
# but this DataModule resumes its own stream at the checkpoint's batch (resume_at, called by
# lit/resume.py's ExactResume), so the epoch continues exactly; the warning would say the opposite.
warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended "
                                          r"and your dataloader is not resumable")


class DataConfigError(UserError):
    """Bad data configuration: the message names the flag / variable and the fix."""


def resolve_root(root: str | None) -> Path | str:
    """The data root: a local folder (Path), or a remote root's URL / pipe (str, data/remote.py)."""
    root = root or os.environ.get(DATA_ENV)
    if not root:
        raise DataConfigError(
            f"no data configured: pass --data.root PATH (a folder of shards written by "
            f"`cnnrepro shards SRC DST`) or set the {DATA_ENV} environment variable; "
            f"`--data.root demo` uses the built-in demo dataset"
        )
    from .remote import RemoteError, check_root, is_remote

    if is_remote(root):
        try:
            return check_root(root)
        except RemoteError as e:
            raise DataConfigError(str(e)) from None
    if root == "demo":
        return ensure_demo_shards()
    if root == "mnist" or is_idx_dir(Path(root).expanduser()):
        # the MNIST track: the packaged 5k subset, or a folder of the four IDX files
        return ensure_mnist_shards(root)  # a MnistError is a UserError: printed as it is
    path = Path(root).expanduser()
    if not path.exists():
        raise DataConfigError(
            f"data path {root!r} (from --data.root or {DATA_ENV}) does not exist: point it at a "
            f"folder of shards written by `cnnrepro shards SRC DST`"
        )
    return path


def _build_train_transform(name: str, **opts):
    """The per-paper train transform; an option set for a transform that does not use it is an error."""
    cls = TRAIN_TRANSFORMS[name]
    accepted = inspect.signature(cls).parameters
    unused = [k for k, v in opts.items() if v is not None and k not in accepted and k not in ("resize", "crop")]
    if unused:
        raise DataConfigError(
            f"--data.{unused[0]} is not used by --data.train_transform {name}: remove it or choose a transform "
            f"that uses it (" + ", ".join(n for n, c in TRAIN_TRANSFORMS.items()
                                           if unused[0] in inspect.signature(c).parameters) + ")"
        )
    try:
        return cls(**{k: v for k, v in opts.items() if k in accepted and (v is not None or k in ("resize", "crop"))})
    except ValueError as e:
        raise DataConfigError(str(e)) from None


def _read_folder(root: Path, fmt: str, seed: int):
    """(manifest, {split: file groups}) of an unconverted tree read in place (data/imagefolder.py)."""
    try:
        return folder_manifest(root, seed=seed)
    except SourceError as e:
        why = "" if fmt == "imagefolder" else (
            f"{root} has no manifest.json, so it is not a folder of shards written by `cnnrepro shards SRC DST`; "
            f"read as an unconverted ImageNet (--data.format auto): ")
        raise DataConfigError(f"--data.root: {why}{e}") from None


def _ignore_requeue_signal(worker_id: int) -> None:
    # SLURM signals every process of a job step, loader workers included, and a worker inherits
    # the handler its parent had when it forked (submitit's, which would requeue the job from
    # inside the worker). The training process alone acts on them (cnnrepro/lit/preemption.py):
    # on SIGTERM it still needs its workers for the batch that ends at the checkpoint. Workers
    # still end with their parent (PyTorch's watchdog) or on SIGKILL.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class ImageNetDataModule(pl.LightningDataModule):
    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 128,
        num_workers: int = 2,
        train_transform: Literal["alexnet", "scale_jitter", "inception_crop", "mnist"] = "alexnet",
        resize: int = 256,
        crop: int = 227,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        lighting_std: float = 0.0,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        scale_range: list[int] | None = None,
        area_range: list[float] | None = None,
        aspect_range: list[float] | None = None,
        photometric: float | None = None,
        format: Literal["auto", "shards", "imagefolder"] = "auto",
        real_labels: str | None = None,
    ):
        """
        Args:
            root: folder of shards with a manifest.json (`cnnrepro shards`), or "demo"; default
                from the CNNREPRO_DATA environment variable.
            batch_size: per-device batch size.
            num_workers: loader processes per device.
            train_transform: the paper's per-sample training augmentation.
            resize: shorter side the image is resized to before cropping.
            crop: training and centre-crop evaluation size.
            mean: per-channel mean in 0..255 units subtracted from the input; default: the
                training set's mean RGB from the manifest.
            std: per-channel divisor in 0..255 units; default 1 (raw pixels minus the mean).
            lighting_std: std of AlexNet's PCA lighting coefficients (0 disables).
            shuffle_buffer: samples held by each worker's shuffle buffer.
            seed: seeds shard order, shuffling and augmentation with (epoch, rank, worker).
            scale_range: [S_min, S_max] of the shorter side sampled per image (train_transform
                scale_jitter: VGG [256, 512], ResNet [256, 480]); default fixed S = resize.
            area_range: crop area fraction range of inception_crop (GoogLeNet: [0.08, 1]).
            aspect_range: crop aspect-ratio range of inception_crop (GoogLeNet: [3/4, 4/3]).
            photometric: strength of inception_crop's brightness/contrast/colour jitter (0: off).
            format: "shards" (a folder with manifest.json), "imagefolder" (an unconverted tree,
                Kaggle layout or archives, read in place: data/imagefolder.py), or "auto" (shards
                if root holds a manifest.json, else imagefolder). An ImageNetV2 folder (class
                folders 0..999, data/ilsvrc.py) is read as its validation split, labels = int(folder).
            real_labels: ReaL's real.json (Beyer et al. 2020, data/real.py): validate/test also score
                each top-1 prediction against the ReaL labels of its ILSVRC-2012 val image.
        """
        super().__init__()
        self.save_hyperparameters()
        if batch_size < 1:
            # checked before anything derives from it (lit/batch.py scales the lr by the batch)
            raise DataConfigError(f"--data.batch_size {batch_size}: the per-device batch must be at least 1")
        self.root = resolve_root(root)
        self._file_groups = None  # imagefolder: {split: groups of files}, read by the same streams
        if isinstance(self.root, str):  # a remote root (data/remote.py): shards only
            if format == "imagefolder":
                raise DataConfigError(f"--data.format imagefolder reads a local tree; {self.root} is remote: "
                                      f"write shards with `cnnrepro shards SRC DST`, upload DST, and read that")
            self.manifest = read_manifest_or_info(self.root)  # a ManifestError is a UserError
        elif format == "imagefolder" or (format == "auto" and not (self.root / "manifest.json").exists()
                                         and not (self.root / "_info.json").exists()):
            self.manifest, self._file_groups = _read_folder(self.root, format, seed)
        else:
            self.manifest = read_manifest_or_info(self.root)  # a ManifestError is a UserError
        # shards written at a reduced size cannot feed a recipe that needs more pixels (e.g. VGG's
        # scale jitter to 512 on --alexnet256 shards): refuse rather than upsample silently
        for flag, needed in (("--data.resize", resize), ("--data.scale_range", max(scale_range or [0]))):
            msg = resolution_error(self.manifest, needed, flag)
            if msg:
                raise DataConfigError(msg)
        if "val" not in self.manifest:
            raise DataConfigError(f"{self.root}/manifest.json has no val split: write shards from a tree with SRC/val")
        self.real = self._real_labels(real_labels)
        classes = self.manifest["classes"]
        if len(classes) < 2:
            raise DataConfigError(
                f"{self.root}: the class list holds {len(classes)} class(es) "
                f"({', '.join(c['wnid'] for c in classes) or 'none'}): a classifier needs at least 2; point "
                f"--data.root at a dataset with one folder per class (SRC/train/<class>/)")
        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_transform = _build_train_transform(
            train_transform, resize=resize, crop=crop, scale_range=scale_range, area_range=area_range,
            aspect_range=aspect_range, photometric=photometric,
        )
        # MNIST: the same fixed padding in evaluation (cnnrepro.data.mnist); else the centre crop
        self.eval_transform = (self.train_transform if train_transform == "mnist"
                               else CenterCrop(resize=resize, crop=crop))
        stats = self.manifest.get("rgb_stats", {})
        # a test set without training images (ImageNetV2), or timm's _info.json, has no mean to take:
        # the error is raised at setup, so that `--weights` (whose own mean/std replace this
        # normalisation, lit/cli.py) needs no --data.mean
        self._no_mean: DataConfigError | None = None
        if mean is None and "mean" not in stats:
            what = ("_info.json (no manifest.json) holds no RGB statistics"
                    if self.manifest.get("format") == "timm-info" else "manifest.json has no rgb_stats")
            if self.manifest.get("eval_set"):
                what = f"{self.manifest['eval_set']} is a test set with no training images to take a mean from"
            self._no_mean = DataConfigError(f"{self.root}: {what}: pass --data.mean (the mean RGB the weights were "
                                            f"trained with: the training manifest's rgb_stats.mean)")
        # DEVIATION(AlexNet): Sec. 2 subtracts "the mean activity over the training set from
        # each pixel", which may mean a per-pixel mean image; we subtract the per-channel mean.
        # Under random crops the mean image is nearly flat, so the two differ little.
        self.normalize = None if self._no_mean else BatchNormalize(
            mean=stats["mean"] if mean is None else mean,
            std=std or [1.0, 1.0, 1.0],
            lighting_std=lighting_std,
            eigval=stats.get("eigval"),
            eigvec=stats.get("eigvec"),
        )
        self._train: TrainStream | None = None
        self._position = (0, 0)  # (epoch, batch) the training stream starts at: resume_at()
        # set by `cnnrepro validate --protocol` (cnnrepro.eval): the views each validation image
        # is expanded into; None is the single centre crop of eval_transform
        self.protocol = None

    def _real_labels(self, path: str | None):
        """``--data.real_labels``: real.json loaded and checked, once the data is known to be (a part of)
        ILSVRC-2012 val: ReaL labels those 50,000 images and no others (data/real.py)."""
        if path is None:
            return None
        from .real import REAL_CLASSES, REAL_IMAGES, load_real_labels

        why = None
        if self.manifest.get("eval_set"):
            why = f"it is {self.manifest['eval_set']}, not ILSVRC-2012 val"
        elif self.hparams.root == "demo":
            why = "it is the demo data, not ILSVRC-2012 val"
        elif self.num_classes != REAL_CLASSES:
            why = f"it has {self.num_classes} classes, not ILSVRC-2012's {REAL_CLASSES}"
        elif self.manifest["val"]["samples"] > REAL_IMAGES:
            why = f"its val split holds {self.manifest['val']['samples']} images, more than ILSVRC-2012's {REAL_IMAGES}"
        if why:
            raise DataConfigError(f"--data.real_labels: ReaL labels the ILSVRC-2012 validation images only; "
                                  f"--data.root {self.data_name}: {why}; drop --data.real_labels for this data")
        return load_real_labels(path)  # a RealLabelsError is a UserError: one line

    def check_normalize(self) -> None:
        """Refuse (one line) data with no mean to subtract: no --data.mean, none in the data, and no
        --weights whose own mean/std replaced the normalisation."""
        if self.normalize is None:
            raise self._no_mean

    def setup(self, stage: str) -> None:
        """Check the shards before the first step (on every rank): every shard this stage reads has
        its manifest size, and the validation shards their sha256 (cached once verified, data/verify.py)."""
        self.check_normalize()
        if stage == "fit" and "train" not in self.manifest:
            what = self.manifest.get("eval_set") or "this data"
            raise DataConfigError(f"--data.root {self.data_name}: {what} has no training split, only a test set: "
                                  f"use it with `cnnrepro validate` or `cnnrepro test`")
        if stage == "fit" and self.real is not None:
            raise DataConfigError("--data.real_labels applies to `cnnrepro validate` and `cnnrepro test`; fit "
                                  "validates every epoch against the original labels")
        if self._file_groups is not None:
            return  # an unconverted tree: files are checked as they are read
        if isinstance(self.root, str):
            self._setup_remote(stage)
            return
        splits = ("train", "val") if stage == "fit" else ("val",)
        problems = check_sizes(self.root, self.manifest, splits)
        if not problems and self.manifest.get("format") != "timm-info":  # _info.json holds no sha256
            # a flipped label or pixel in validation changes the reported top-1 with no other sign
            problems = verify_shards(self.root, self.manifest, ("val",))
        raise_problems(self.root, self.manifest, problems)
        if stage == "fit":
            self._check_global_batch()

    def _setup_remote(self, stage: str) -> None:
        """A remote root: every shard this stage reads exists with its manifest size (one listing or a
        HEAD per shard); sha256 is checked as each shard streams, validation shards included, so
        validation is not downloaded twice (every shard is read to its end by the loader worker
        that holds its last sample, which fails the run before any metric is computed)."""
        from .remote import size_problems
        from .verify import ShardCheckError, rewrite_hint

        splits = ("train", "val") if stage == "fit" else ("val",)
        shards = [sh for split in splits if split in self.manifest for sh in self.manifest[split]["shards"]]
        problems = list(size_problems(self.root, self.manifest, shards).values())
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise ShardCheckError(f"{len(problems)} shard(s) disagree with {self.root}/manifest.json: "
                                  + "; ".join(problems[:5]) + more + f"; {rewrite_hint('DST', self.manifest)}, "
                                  f"then upload them to {self.root}")
        if stage == "fit":
            self._check_global_batch()

    def _check_global_batch(self) -> None:
        _, world = self._rank_world()
        n = self.manifest["train"]["samples"]
        if n < self.batch_size * world:
            raise DataConfigError(
                f"--data.batch_size {self.batch_size} x {world} device(s) is larger than the {n} training samples "
                f"of {self.root}: lower --data.batch_size to at most {n // world} (an epoch needs one full batch "
                f"per device)")

    @property
    def num_classes(self) -> int:
        return len(self.manifest["classes"])

    @property
    def data_name(self) -> str:
        return "demo" if self.hparams.root == "demo" else str(self.root)

    def split_name(self, split: str) -> str:
        """A name for the evaluation set that the results tables can match against the papers'."""
        if self.hparams.root == "demo":
            return f"demo_{split}"
        if self.manifest.get("eval_set"):  # ImageNetV2: named by its set, never taken for ILSVRC-2012 val
            return self.manifest["eval_set"]
        if self.num_classes == 1000 and split == "val" and self.manifest["val"]["samples"] == 50_000:
            return "ilsvrc2012_val"
        if isinstance(self.root, str):
            from .remote import basename

            return f"{basename(self.root)}_{split}"
        return f"{self.root.name}_{split}"

    def _shards(self, split: str) -> list[ShardInfo]:
        if self._file_groups is not None:
            return self._file_groups[split]
        if isinstance(self.root, str):
            from .remote import join

            return [ShardInfo(join(self.root, s["name"]), s["count"], sha256=s.get("sha256"), bytes=s.get("bytes"))
                    for s in self.manifest[split]["shards"]]
        return [ShardInfo(str(self.root / s["name"]), s["count"]) for s in self.manifest[split]["shards"]]

    def _rank_world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _loader(self, ds, persistent: bool) -> DataLoader:
        pin = torch.cuda.is_available()  # pinned host memory lets the uint8 copy overlap compute
        return DataLoader(
            ds,
            batch_size=None,  # the streams yield whole batches
            num_workers=self.num_workers,
            pin_memory=pin,
            persistent_workers=persistent and self.num_workers > 0,
            prefetch_factor=2 if self.num_workers > 0 else None,
            # the streams seed their own RNGs; a loader's own generator keeps its worker-seed draw
            # out of the global torch RNG that dropout uses, so a resumed run (which creates its
            # loaders at other moments) draws the same dropout masks as an uninterrupted one
            generator=torch.Generator().manual_seed(self.hparams.seed),
            worker_init_fn=_ignore_requeue_signal if self.num_workers > 0 else None,
        )

    def resume_at(self, epoch: int, batch: int = 0) -> None:
        """The training stream's position: the next iteration yields epoch ``epoch`` from batch
        ``batch`` on (exact resume, cnnrepro/lit/resume.py). The one setter of the stream's epoch."""
        self._position = (epoch, batch)
        if self._train is not None:
            self._train.set_epoch(epoch)
            self._train.set_start_batch(batch)

    def set_epoch(self, epoch: int) -> None:
        """A new epoch starts (ClassifierModule.on_train_epoch_start): keep a resume's batch only
        within the epoch it resumed."""
        self.resume_at(epoch, self._position[1] if epoch == self._position[0] else 0)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        self._train = TrainStream(
            self._shards("train"),
            batch_size=self.batch_size,
            transform=self.train_transform,
            seed=self.hparams.seed,
            rank=rank,
            world_size=world,
            shuffle_buffer=self.hparams.shuffle_buffer,
        )
        epoch = self.trainer.current_epoch if self.trainer is not None else self._position[0]
        self.set_epoch(epoch)
        return self._loader(self._train, persistent=True)

    def val_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        if self.protocol is not None:
            ds = self.protocol.stream(self._shards("val"), batch_size=self.batch_size, rank=rank, world_size=world,
                                      num_workers=self.num_workers, sources=self.real is not None)
            return self._loader(ds, persistent=True)
        ds = EvalStream(
            self._shards("val"),
            batch_size=self.batch_size,
            transform=self.eval_transform,
            rank=rank,
            world_size=world,
            num_workers=self.num_workers,
            sources=self.real is not None,
        )
        return self._loader(ds, persistent=True)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        # uint8 crossed to the device; float conversion, lighting and normalisation happen here
        x, *rest = batch
        if isinstance(x, (list, tuple)):
            # dense protocol: one tensor per test scale; `--protocol all`: one entry per protocol
            def norm(v):
                if isinstance(v, (list, tuple)):
                    return [norm(u) for u in v]
                self.normalize.to(v.device)
                return self.normalize(v, train=False)

            return (norm(x), *rest)
        self.normalize.to(x.device)
        training = self.trainer is not None and self.trainer.training
        return (self.normalize(x, train=training), *rest)
