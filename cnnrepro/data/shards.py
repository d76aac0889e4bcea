"""Writing ImageNet (a tree, the official archives, the Kaggle layout) to WebDataset shards.

    DST/train-000000.tar ...   samples  <key>.jpg (RGB JPEG bytes), <key>.cls (class index),
    DST/val-000000.tar ...              <key>.json (source path, wnid)
    DST/manifest.json          per split: counts, shards (count, sha256), rejected and
                               repaired files with reasons; the class list; the
                               preprocessing; RGB statistics of the training split

The input forms are read by ``ilsvrc.detect_source``. Preprocessing (recorded in the manifest):
the original bytes (default; only files that must be repaired are re-encoded), the shorter side
resized to N (``resize_shorter``), or AlexNet's 256x256 (``alexnet256``: shorter side 256, then
the central 256x256 patch, Krizhevsky et al. 2012 Sec. 2). The manifest's
``preprocessing.shorter_side`` is the shorter side every sample then has (None: the originals'),
so a recipe needing more resolution than the shards hold can be refused (``resolution_error``).

Nothing is dropped silently: every input file is either written (as it was, or repaired and
listed) or rejected and listed, and ``manifest[split]["inputs"]`` equals written + rejected.
Shards are written under a temporary name and renamed when complete, with a record under
``DST/.parts/``; a rerun keeps complete shards and redoes the rest.

webdataset's ``TarWriter`` writes the tar members; the check/repair logic, the manifest and
the resumable parallel driver are ours because webdataset has no notion of them.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from cnnrepro.errors import UserError

from .ilsvrc import Source, detect_source, read_item

__all__ = ["write_shards", "check_image", "RejectedImage", "read_manifest", "ManifestError", "resolution_error",
           "preprocessing_spec"]

IMAGE_EXTENSIONS = {".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp", ".gif"}
MANIFEST_VERSION = 1


class RejectedImage(Exception):
    """An input file that cannot become a training sample; the message is the reason."""


class ManifestError(UserError):
    """manifest.json is missing, unreadable or of another version; the message names the file."""


def check_image(
    data: bytes, *, resize_shorter: int | None = None, square: bool = False
) -> tuple[bytes, str | None, tuple[int, int]]:
    """Validate one image file. Returns (jpeg bytes, repair reason or None, (w, h) as written).

    The original bytes are kept unless the file must be repaired (not a JPEG, not RGB) or the
    preprocessing resizes it (``square``: then keep the central square, AlexNet Sec. 2).
    Raises RejectedImage for empty, truncated or non-image files.
    """
    if len(data) == 0:
        raise RejectedImage("empty file")
    try:
        img = Image.open(io.BytesIO(data))
        fmt = img.format
        img.load()  # decodes every pixel: a truncated JPEG fails here
    except Exception as e:  # PIL raises many types for corrupt data
        raise RejectedImage(f"not a readable image ({type(e).__name__}: {e})") from None
    reasons = []
    if fmt != "JPEG":
        reasons.append(f"{fmt} file re-encoded as JPEG")
    if img.mode != "RGB":
        reasons.append(f"{img.mode} converted to RGB")
        img = img.convert("RGB")
    resized = False
    if resize_shorter is not None and min(img.size) != resize_shorter:
        s = resize_shorter / min(img.size)
        img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.BICUBIC)
        resized = True
    if square and img.width != img.height:
        side = min(img.size)
        x0, y0 = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((x0, y0, x0 + side, y0 + side))
        resized = True
    if reasons or resized:
        # DEVIATION(AlexNet): Sec. 2 does not say how its 256x256 images were resampled or stored;
        # we resize bicubic and store JPEG quality 95 (one more lossy step) to keep shards small.
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=95)
        data = buf.getvalue()
    return data, ("; ".join(reasons) or None), img.size


def rgb_stats_from_moments(s1: np.ndarray, s2: np.ndarray, n: int) -> dict:
    """Mean, std and the PCA of the RGB covariance (0..255 units) from summed moments."""
    mean = s1 / n
    cov = s2 / n - np.outer(mean, mean)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    return {
        "scale": "0..255",
        "mean": mean.round(4).tolist(),
        "std": np.sqrt(np.diag(cov)).round(4).tolist(),
        "eigval": eigval[order].round(4).tolist(),  # variances along the principal axes
        "eigvec": eigvec[:, order].round(6).tolist(),  # columns are the axes
        "pixels": int(n),
    }


def _rgb_moments(jpeg: bytes) -> tuple[np.ndarray, np.ndarray, int]:
    """Sum and outer-product sum of RGB values (0..255) of a <=64 px thumbnail."""
    img = Image.open(io.BytesIO(jpeg))
    img.draft("RGB", (64, 64))
    img = img.convert("RGB")
    img.thumbnail((64, 64))
    px = np.asarray(img, dtype=np.float64).reshape(-1, 3)
    return px.sum(0), px.T @ px, px.shape[0]


@dataclass
class _ShardJob:
    split: str
    index: int
    items: list  # [(global_index, Item, class index)]
    src: str
    dst: str
    resize_shorter: int | None
    square: bool
    stats: bool


def _shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def _job_key(job: _ShardJob) -> str:
    """A digest of what a shard is made from: its inputs (paths, labels) and the preprocessing."""
    h = hashlib.sha256(repr((job.resize_shorter, job.square)).encode())
    for gidx, item, cls in job.items:
        h.update(f"{gidx}\t{item.path}\t{cls}\n".encode())
    return h.hexdigest()[:16]


def _write_shard(job: _ShardJob) -> dict:
    dst = Path(job.dst)
    name = _shard_name(job.split, job.index)
    tmp = dst / (name + ".tmp")
    rec = {"name": name, "count": 0, "inputs": len(job.items), "rejected": [], "repaired": [], "shorter_side": None}
    short_min, short_max = None, None
    s1, s2, npx = np.zeros(3), np.zeros((3, 3)), 0
    # a fixed member mtime makes a shard's bytes (and sha256) a function of its inputs alone
    with wds.TarWriter(str(tmp), mtime=0.0) as sink:
        for gidx, item, cls in job.items:
            rel = item.path
            try:
                raw = read_item(job.src, item)
                data, repair, size = check_image(raw, resize_shorter=job.resize_shorter, square=job.square)
            except RejectedImage as e:
                rec["rejected"].append({"path": rel, "reason": str(e)})
                continue
            if repair:
                rec["repaired"].append({"path": rel, "reason": repair})
            short = min(size)
            short_min = short if short_min is None else min(short_min, short)
            short_max = short if short_max is None else max(short_max, short)
            meta = {"path": rel, "wnid": item.wnid}
            sink.write({"__key__": f"{job.split}{gidx:08d}", "jpg": data, "cls": str(cls), "json": json.dumps(meta)})
            rec["count"] += 1
            if job.stats:
                a, b, n = _rgb_moments(data)
                s1 += a
                s2 += b
                npx += n
    h = hashlib.sha256()
    with open(tmp, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    rec["sha256"] = h.hexdigest()
    rec["shorter_side"] = None if short_min is None else [short_min, short_max]
    rec["job"] = _job_key(job)
    if job.stats:
        rec["rgb_moments"] = {"sum": s1.tolist(), "outer": s2.tolist(), "pixels": npx}
    os.replace(tmp, dst / name)  # atomic: a shard is either complete or absent
    part = dst / ".parts" / (name + ".json")
    part_tmp = part.with_suffix(".tmp")
    part_tmp.write_text(json.dumps(rec))
    os.replace(part_tmp, part)
    return rec


def preprocessing_spec(resize_shorter: int | None, alexnet256: bool) -> dict:
    """The manifest's record of what was done to the pixels, and the command-line flag that did it."""
    if alexnet256 and resize_shorter is not None:
        raise ValueError("--alexnet256 already sets the shorter side to 256: do not pass --resize-shorter with it")
    if resize_shorter is not None and resize_shorter < 1:
        raise ValueError(f"--resize-shorter {resize_shorter}: must be a positive number of pixels")
    if alexnet256:
        return {"mode": "alexnet256", "flag": "--alexnet256", "shorter_side": 256, "square": True,
                "bytes": "every image re-encoded (JPEG quality 95, bicubic): shorter side 256, central 256x256",
                "source": "Krizhevsky et al. 2012, Sec. 2"}
    if resize_shorter is not None:
        return {"mode": "resize_shorter", "flag": f"--resize-shorter {resize_shorter}", "shorter_side": resize_shorter,
                "square": False, "bytes": f"every image re-encoded (JPEG quality 95, bicubic) with shorter side "
                                          f"{resize_shorter}"}
    return {"mode": "original", "flag": None, "shorter_side": None, "square": False,
            "bytes": "original bytes kept; only repaired files re-encoded (JPEG quality 95)"}


def resolution_error(manifest: dict, needed: int, flag: str) -> str | None:
    """A message if ``flag`` asks for a shorter side of ``needed`` px that the shards cannot give.

    Shards written with --resize-shorter N or --alexnet256 hold N (256) px on the shorter side:
    asking for more would upsample every image, which no paper did (e.g. VGG's scale jitter to
    512 on 256-pixel shards). Original-byte shards have no such limit.
    """
    pre = manifest.get("preprocessing", {})
    held = pre.get("shorter_side")
    if held is None or needed <= held:
        return None
    return (
        f"{flag} {needed} needs images with a shorter side of at least {needed} px, but these shards were "
        f"written with `cnnrepro shards ... {pre.get('flag')}` and hold {held} px: lower {flag} to {held} or "
        f"less, or rewrite the shards from the originals without {pre.get('flag')} (or with a larger "
        f"--resize-shorter)"
    )


def write_shards(
    src: str | Path,
    dst: str | Path,
    *,
    samples_per_shard: int = 1000,
    workers: int | None = None,
    seed: int = 0,
    resize_shorter: int | None = None,
    alexnet256: bool = False,
    progress: bool = True,
    source: Source | None = None,
) -> dict:
    """Convert SRC (a tree, the ILSVRC2012 archives or the Kaggle layout) to shards in ``dst``.

    Training samples are shuffled (seeded) across shards, so that every shard mixes classes and
    streaming with a modest shuffle buffer sees a well-mixed stream; validation keeps sorted order.
    ``source``: the result of ``detect_source(src)`` if the caller already has it.
    """
    pre = preprocessing_spec(resize_shorter, alexnet256)
    src, dst = Path(src), Path(dst)
    if source is None:
        source = detect_source(src)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / ".parts").mkdir(exist_ok=True)
    t0 = time.time()
    wnids = source.wnids
    cls_of = source.class_index()
    splits = source.splits

    jobs: list[_ShardJob] = []
    for split, files in splits.items():
        items = [(i, it, cls_of[it.wnid]) for i, it in enumerate(files)]
        if split == "train":
            random.Random(seed).shuffle(items)
        for k in range(0, len(items), samples_per_shard):
            jobs.append(
                _ShardJob(split, k // samples_per_shard, items[k : k + samples_per_shard], str(src), str(dst),
                          pre["shorter_side"], pre["square"], stats=(split == "train"))
            )

    def done(job: _ShardJob) -> dict | None:
        name = _shard_name(job.split, job.index)
        part = dst / ".parts" / (name + ".json")
        if part.exists() and (dst / name).exists():
            rec = json.loads(part.read_text())
            # a record from another preprocessing or input list is not this shard
            if rec.get("inputs") == len(job.items) and rec.get("job") == _job_key(job):
                return rec
        return None

    records: dict[tuple[str, int], dict] = {}
    todo = []
    for job in jobs:
        rec = done(job)
        if rec is None:
            todo.append(job)
        else:
            records[(job.split, job.index)] = rec
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="shard", desc=f"shards -> {dst}")
    if workers == 1:
        results = map(_write_shard, todo)
    else:
        pool = mp.get_context("fork" if os.name == "posix" else "spawn").Pool(workers)
        results = pool.imap_unordered(_write_shard, todo)
    try:
        by_name = {_shard_name(j.split, j.index): j for j in todo}
        for rec in results:
            j = by_name[rec["name"]]
            records[(j.split, j.index)] = rec
            if bar:
                bar.update(1)
    finally:
        if workers > 1:
            pool.close()
            pool.join()
        if bar:
            bar.close()

    manifest: dict = {
        "version": MANIFEST_VERSION,
        "source": str(src.resolve()),
        "source_form": source.form,
        "source_description": source.description,
        "classes": [{"index": i, "wnid": w, "name": source.names.get(w, w)} for i, w in enumerate(wnids)],
        "preprocessing": {**pre, "train_order": f"shuffled across shards with seed {seed}"},
        "samples_per_shard": samples_per_shard,
        "wall_seconds": round(time.time() - t0, 2),
    }
    for split, files in splits.items():
        recs = [records[(split, j.index)] for j in jobs if j.split == split]
        entry = {
            "inputs": len(files),
            "samples": sum(r["count"] for r in recs),
            "shards": [{"name": r["name"], "count": r["count"], "sha256": r["sha256"]} for r in recs],
            "rejected": [x for r in recs for x in r["rejected"]],
            "repaired": [x for r in recs for x in r["repaired"]],
        }
        sides = [r["shorter_side"] for r in recs if r.get("shorter_side")]
        # the range of shorter sides actually written (for the originals: ImageNet's own spread)
        entry["shorter_side"] = {"min": min(a for a, _ in sides), "max": max(b for _, b in sides)} if sides else None
        assert entry["samples"] + len(entry["rejected"]) == entry["inputs"], "lost a file"
        manifest[split] = entry
    # RGB statistics of the training split (on <=64 px thumbnails): the mean that AlexNet-era
    # papers subtract and the covariance whose PCA drives AlexNet's lighting augmentation.
    train_recs = [records[("train", j.index)] for j in jobs if j.split == "train"]
    s1 = sum((np.array(r["rgb_moments"]["sum"]) for r in train_recs), np.zeros(3))
    s2 = sum((np.array(r["rgb_moments"]["outer"]) for r in train_recs), np.zeros((3, 3)))
    n = sum(r["rgb_moments"]["pixels"] for r in train_recs)
    if n:
        manifest["rgb_stats"] = rgb_stats_from_moments(s1, s2, n)
    tmp = dst / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, dst / "manifest.json")
    return manifest


def read_manifest(root: str | Path) -> dict:
    path = Path(root) / "manifest.json"
    if not path.exists():
        raise ManifestError(
            f"{path} not found: --data.root must be a folder of shards written by "
            f"`cnnrepro shards SRC DST` (or `demo` for the built-in demo data)"
        )
    return json.loads(path.read_text())
