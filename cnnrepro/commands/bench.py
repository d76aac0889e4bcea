"""``cnnrepro bench data`` (loader images/s per core, ours vs torchvision) and
``cnnrepro bench train RECIPE [overrides]`` (the Lightning training path vs a plain PyTorch loop)."""

from __future__ import annotations

import argparse
import json

from cnnrepro.data.bench import BENCH_VERSION, bench_data
from cnnrepro.lit.bench import bench_train, render
from cnnrepro.lit.cli import instantiate_model_and_data

from .fit import split_recipe

__all__ = ["main"]


def _data(args: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cnnrepro bench data", description="loader throughput per core")
    p.add_argument("--images", type=int, default=640, help="JPEGs in the benchmark set")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--rounds", type=int, default=3, help="alternating timed rounds per loader")
    p.add_argument("--noise", type=float, default=3.0,
                   help="std of the sensor-like noise added to the photos: more noise, larger and slower JPEGs "
                        "(3: ~52 KB per 500x375 image; ImageNet's average file is ~110 KB)")
    p.add_argument("--dir", default=None,
                   help=f"where the JPEGs and shards go (default $CNNREPRO_CACHE/bench-v{BENCH_VERSION})")
    a = p.parse_args(args)
    return bench_data(images=a.images, batch_size=a.batch_size, crop=a.crop, rounds=a.rounds, noise=a.noise,
                      folder=a.dir)


def _train(args: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cnnrepro bench train",
                                description="Lightning path vs a plain PyTorch loop, same model and batches. "
                                            "Other arguments: RECIPE [fit overrides], as for `cnnrepro fit`.")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on CPU)")
    p.add_argument("--no-fast-paths", action="store_true")
    p.add_argument("--json", action="store_true")
    ours, rest = p.parse_known_args(args)
    if ours.steps <= ours.warmup:
        p.error("--steps must exceed --warmup")
    module, dm = instantiate_model_and_data(*split_recipe(rest))
    res = bench_train(module, dm, steps=ours.steps, warmup=ours.warmup, rounds=ours.rounds,
                      fast_paths=not ours.no_fast_paths, compile=ours.compile)
    if ours.json:
        print(json.dumps(res, indent=1))
    else:
        render(res)
    return 0


def main(verb: str, args: list[str]) -> int:
    what = args[0] if args else None
    if what == "train":
        return _train(args[1:])
    if what == "data":
        return _data(args[1:])
    argparse.ArgumentParser(prog="cnnrepro bench").error("choose `bench data` or `bench train RECIPE ...`")
    return 2
