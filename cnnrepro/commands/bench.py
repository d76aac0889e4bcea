"""``cnnrepro bench data`` (loader images/s per core, ours vs torchvision; a remote root's streaming
rate against the same shards read locally), ``cnnrepro bench shards`` (shard writing, epoch start
and streaming memory at 10k and 100k images) and
``cnnrepro bench train RECIPE [overrides]`` (the Lightning training path vs a plain PyTorch loop)."""

from __future__ import annotations

import argparse
import json

from cnnrepro.data.bench import BENCH_VERSION, PRESETS, bench_data, bench_remote, render_data, render_remote
from cnnrepro.lit.bench import bench_lrn_random, bench_train, render
from cnnrepro.lit.bench_lrn import format_lrn
from cnnrepro.lit.cli import instantiate_model_and_data, parse_only

from .fit import split_recipe

__all__ = ["main"]


def _data(args: list[str]) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="cnnrepro bench data", description="loader throughput per core")
    p.add_argument("--root", default=None,
                   help="benchmark your own JPEGs: an ImageFolder tree (DIR/train/<class>/ or DIR/<class>/) or a "
                        "folder of shards (DIR/manifest.json); default: a generated set of photo JPEGs. A remote "
                        "root (s3://, gs://, http(s)://, pipe:) measures its streaming rate against the same shards "
                        "read locally instead")
    p.add_argument("--local", default=None,
                   help="with a remote --root: a local copy of its shards (default: downloaded to --dir, "
                        "sha256-checked)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="the generated set: default (quality 90, ~52 KB per 500x375 file) or imagenet (~110 KB, "
                        "ImageNet's mean file size at its mean ~470x390 resolution)")
    p.add_argument("--images", type=int, default=640, help="JPEGs in the benchmark set (the first of --root's, spread)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--crop", type=int, default=224, help="torchvision's RandomResizedCrop size")
    p.add_argument("--rounds", type=int, default=3, help="alternating timed rounds per loader")
    p.add_argument("--noise", type=float, default=None,
                   help="std of the sensor-like noise of the generated set (overrides the preset's): more noise, "
                        "larger and slower JPEGs")
    p.add_argument("--reduced-decode", action="store_true",
                   help="add rows for the opt-in DCT-scaled decoding of each family (other pixels: see "
                        "data/transforms.py crop_resized_uint8)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--dir", default=None,
                   help=f"where the JPEGs and shards go (default $CNNREPRO_CACHE/bench-v{BENCH_VERSION})")
    a = p.parse_args(args)
    from cnnrepro.data.remote import is_remote

    if a.root and is_remote(a.root):
        result = bench_remote(a.root, local=a.local, rounds=a.rounds, folder=a.dir, batch_size=a.batch_size)
        if a.json:
            print(json.dumps(result, indent=1))
        else:
            render_remote(result)
        return 0
    if a.local:
        p.error("--local goes with a remote --root (s3://, gs://, http(s)://, pipe:)")
    result = bench_data(root=a.root, preset=a.preset, images=a.images, batch_size=a.batch_size, crop=a.crop,
                        rounds=a.rounds, noise=a.noise, reduced_decode=a.reduced_decode, folder=a.dir)
    if a.json:
        print(json.dumps(result, indent=1))
    else:
        render_data(result)
    return 0


def _shards(args: list[str]) -> int:
    from pathlib import Path

    from cnnrepro.data.bench_scale import bench_shards, render_shards
    from cnnrepro.data.cache import cache_dir

    p = argparse.ArgumentParser(allow_abbrev=False, prog="cnnrepro bench shards",
                                description="shard writing, epoch start and streaming memory on synthetic "
                                            "ImageNet-shaped trees, at several sizes")
    p.add_argument("--images", default="10000,100000", help="comma-separated training-set sizes")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--samples-per-shard", type=int, default=1000)
    p.add_argument("--workers", type=int, default=1, help="shard-writing processes")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--shuffle-buffer", type=int, default=1000)
    p.add_argument("--no-stream", action="store_true", help="skip the full-epoch streaming step")
    p.add_argument("--dir", default=None, help="where the trees and shards go (default $CNNREPRO_CACHE/bench-scale)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(args)
    try:
        sizes = [int(x) for x in a.images.split(",")]
    except ValueError:
        p.error(f"--images {a.images!r}: give comma-separated integers, e.g. 10000,100000")
    if any(n < a.classes for n in sizes) or a.classes < 2:
        p.error(f"--images: every size must be at least --classes {a.classes} (one image per class folder)")
    res = bench_shards(sizes=sizes, classes=a.classes, folder=Path(a.dir) if a.dir else cache_dir() / "bench-scale",
                       samples_per_shard=a.samples_per_shard, workers=a.workers, batch_size=a.batch_size,
                       shuffle_buffer=a.shuffle_buffer, stream=not a.no_stream)
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        render_shards(res)
    return 0


def _train(args: list[str]) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="cnnrepro bench train",
                                description="Lightning, bare and with the callbacks `cnnrepro fit` installs, vs a "
                                            "plain PyTorch loop, same model and batches; for a model with LRN, "
                                            "torch's LocalResponseNorm vs cnnrepro's. "
                                            "Other arguments: RECIPE [fit overrides], as for `cnnrepro fit`.")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on CPU)")
    p.add_argument("--no-fast-paths", action="store_true")
    p.add_argument("--ckpt-dir", default=None,
                   help="where the callbacks leg writes its throwaway checkpoints (default: the system's temporary "
                        "folder); point it at your runs' file system to time their checkpoint writes")
    p.add_argument("--json", action="store_true")
    ours, rest = p.parse_known_args(args)
    if ours.steps <= ours.warmup:
        p.error("--steps must exceed --warmup")
    recipe = split_recipe(rest)
    fit_cfg = parse_only("fit", *recipe)  # what `cnnrepro fit` would log and checkpoint with
    module, dm = instantiate_model_and_data(*recipe)
    res = bench_train(module, dm, steps=ours.steps, warmup=ours.warmup, rounds=ours.rounds,
                      fast_paths=not ours.no_fast_paths, compile=ours.compile,
                      log_every_n_steps=fit_cfg["trainer"]["log_every_n_steps"],
                      ckpt_every_n_steps=fit_cfg["run"]["ckpt_every_n_steps"] or 0, ckpt_dir=ours.ckpt_dir)
    if ours.json:
        print(json.dumps(res, indent=1))
    else:
        render(res)
    return 0


def _lrn(args: list[str]) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="cnnrepro bench lrn",
                                description="torch's LocalResponseNorm vs cnnrepro's, layer and training step, "
                                            "on random batches (no data needed)")
    p.add_argument("--model", default="alexnet")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=227)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(args)
    if a.steps <= a.warmup:
        p.error("--steps must exceed --warmup")
    res = bench_lrn_random(a.model, batch_size=a.batch_size, image_size=a.image_size, steps=a.steps,
                           warmup=a.warmup, rounds=a.rounds)
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        print(f"{a.model} on {res['device']} ({res['threads']} threads), batch {a.batch_size} x "
              f"{a.image_size}px, {a.steps - a.warmup} timed steps, median of {a.rounds} alternating rounds")
        print(format_lrn(res))
    return 0


def main(verb: str, args: list[str]) -> int:
    what = args[0] if args else None
    if what == "train":
        return _train(args[1:])
    if what == "data":
        return _data(args[1:])
    if what == "lrn":
        return _lrn(args[1:])
    if what == "shards":
        return _shards(args[1:])
    argparse.ArgumentParser(allow_abbrev=False, prog="cnnrepro bench").error(
        "choose `bench data`, `bench shards`, `bench train RECIPE ...` or `bench lrn`")
    return 2
