"""``cnnrepro shards SRC DST``: ImageNet (tree, ILSVRC2012 archives or Kaggle layout) -> WebDataset shards."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnnrepro.data.ilsvrc import detect_source
from cnnrepro.data.shards import write_shards
from cnnrepro.data.verify import verify_command
from cnnrepro.errors import UserError

__all__ = ["main"]


def main(verb: str, args: list[str]) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="cnnrepro shards", description="ImageNet (tree, ILSVRC2012 archives or Kaggle "
                                "layout) -> WebDataset shards + manifest")
    p.add_argument("src", help="SRC/train/<wnid>/* (+ SRC/val/<wnid>/*); or a folder with ILSVRC2012_img_train.tar, "
                               "ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz (or LOC_val_solution.csv); "
                               "or the Kaggle layout SRC/ILSVRC/Data/CLS-LOC + SRC/LOC_val_solution.csv",
                   nargs="?")
    p.add_argument("dst", help="output folder for the shards and manifest.json, or an object store root "
                               "(s3://bucket/prefix, gs://bucket/prefix): each shard is uploaded as it is finished, "
                               "the manifest last", nargs="?")
    p.add_argument("--verify", metavar="DST", default=None,
                   help="check every shard of DST (a folder or a remote root) against its manifest (size, sha256; "
                        "cached for local folders) and exit")
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
        return verify_command(a.verify)
    if a.dst is None:
        p.error("SRC and DST are required (or --verify DST)")
    try:  # a SourceError (a UserError) passes through; these are the shard writer's other refusals
        source = detect_source(a.src)
        print(f"found: {source.description}", flush=True)
        m = write_shards(a.src, a.dst, samples_per_shard=a.samples_per_shard, workers=a.workers,
                         resize_shorter=a.resize_shorter, alexnet256=a.alexnet256, seed=a.seed, source=source)
    except UserError:
        raise
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    except KeyboardInterrupt:
        print(f"cnnrepro: interrupted; the complete shards in {a.dst} are kept: rerun the same command to finish",
              file=sys.stderr)
        return 130
    for split in ("train", "val"):
        if split in m:
            s = m[split]
            print(f"{split}: {s['samples']} samples in {len(s['shards'])} shards; "
                  f"{len(s['repaired'])} repaired, {len(s['rejected'])} rejected (of {s['inputs']} files)")
    from cnnrepro.data.remote import is_remote, join

    print(f"manifest: {join(a.dst, 'manifest.json') if is_remote(a.dst) else Path(a.dst) / 'manifest.json'}")
    return 0
