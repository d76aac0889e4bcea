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
listed) or rejected and listed (an unreadable one with its errno), and
``manifest[split]["inputs"]`` equals written + rejected. A class with no input file keeps its
index (the class list comes from the folders or the devkit) and is listed under
``manifest["empty_classes"]`` with a warning.

Shards are written under a temporary name and renamed when complete, with a record under
``DST/.parts/`` holding the shard's size, sha256 and a key of everything its bytes depend on:
the source root, each input's path, label, size and mtime, and the preprocessing. A rerun reuses
a shard only if that key is unchanged and the shard still has its recorded size and sha256;
everything else is rewritten, and shards left over from an earlier, larger conversion are
removed: a rerun gives the shards and manifest a fresh conversion would. The manifest is
removed while a conversion runs, so no reader sees a manifest that does not match the shards.

webdataset's ``TarWriter`` writes the tar members; the check/repair logic, the manifest and
the resumable parallel driver are ours because webdataset has no notion of them.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import multiprocessing as mp
import os
import random
import re
import signal
import warnings
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from cnnrepro.errors import UserError

from .cache import remember_verified
from .ilsvrc import Source, detect_source, read_item

__all__ = ["write_shards", "check_image", "RejectedImage", "read_manifest", "ManifestError", "resolution_error",
           "preprocessing_spec", "ShardWriteError", "sha256_file", "read_manifest_or_info", "TimmInfoWarning",
           "timm_info", "ManifestMissing"]

MANIFEST_VERSION = 2  # 2: shards carry their size in bytes; empty classes are listed
# Bump when the bytes written for the same inputs change: part records of another version are
# not reused.
WRITER_VERSION = 2
SHARD_NAME = re.compile(r"^(train|val)-\d{6}\.tar(\.tmp)?$")


class RejectedImage(Exception):
    """An input file that cannot become a training sample; the message is the reason."""


class ManifestError(UserError):
    """manifest.json is missing, unreadable or not the shard writer's; the message names it and the fix."""


class ManifestMissing(ManifestError):
    """There is no manifest.json (a folder may still have timm's _info.json: ``read_manifest_or_info``)."""


class ShardWriteError(UserError):
    """The output folder cannot take the shards (full, read-only, not a folder)."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    # an object store root (data/remote.py): ``dst`` is then a local staging folder, and each
    # shard is uploaded as soon as it is written
    store: str | None = None


def _shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def _job_key(job: _ShardJob) -> str:
    """A digest of everything a shard's bytes depend on: the writer, the source root, each input's
    place, label, size and mtime, and the preprocessing.

    Size and mtime (not a content hash, which would cost a second read of every input) catch an
    image replaced, edited in place or restored from elsewhere; an edit that keeps both the size
    and the nanosecond mtime is not seen."""
    h = hashlib.sha256(repr((WRITER_VERSION, job.src, job.split, job.resize_shorter, job.square,
                             job.stats)).encode())
    stats: dict[str, str] = {}  # the archive form reads every item from one tar: stat it once
    for gidx, item, cls in job.items:
        if item.file not in stats:
            try:
                st = os.stat(Path(job.src) / item.file)
                stats[item.file] = f"{st.st_size}:{st.st_mtime_ns}:{st.st_mode}"
            except OSError as e:
                stats[item.file] = f"errno {e.errno}"
        h.update(f"{gidx}\t{item.path}\t{item.file}\t{item.offset}\t{item.size}\t{item.wnid}\t{cls}\t"
                 f"{stats[item.file]}\n".encode())
    return h.hexdigest()


def _unreadable(e: OSError) -> str:
    """The rejection reason of an input that cannot be read, naming its errno where there is one."""
    if e.errno is None:
        return f"unreadable: {e}"
    return f"unreadable: {errno.errorcode.get(e.errno, e.errno)} ({e.strerror})"


def _reusable(job: _ShardJob, key: str) -> dict | None:
    """The part record of this job's shard if the shard on disk is exactly what the job would write."""
    name = _shard_name(job.split, job.index)
    dst = Path(job.dst)
    part, shard = dst / ".parts" / (name + ".json"), dst / name
    try:
        rec = json.loads(part.read_text())
        if rec.get("job") != key or rec.get("bytes") != shard.stat().st_size:
            return None
    except (OSError, ValueError):  # no record, no shard, or a record cut short: write it anew
        return None
    # the size alone does not see a flipped bit: hash the shard (cheaper than rewriting it)
    return rec if sha256_file(shard) == rec.get("sha256") else None


def _run_job(job: _ShardJob) -> dict:
    key = _job_key(job)
    if job.store is not None:
        return _uploaded(job, key) or _upload(job, _write_shard(job, key))
    return _reusable(job, key) or _write_shard(job, key)


def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _uploaded(job: _ShardJob, key: str) -> dict | None:
    """The part record of this job's shard if the store already holds exactly what the job would
    write: the record (uploaded only after its shard) has this job's key, the object has the
    record's size and, where the store reports one, the record's MD5. Without an MD5 from the
    store, a bit flipped on the store is not seen here: `cnnrepro shards --verify DST` hashes the
    objects (and readers check sha256 as they stream)."""
    from .remote import join, store_cat, store_list, store_md5

    name = _shard_name(job.split, job.index)
    raw = store_cat(join(join(job.store, ".parts"), name + ".json"))
    try:
        rec = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    if not isinstance(rec, dict) or rec.get("job") != key:
        return None
    listing = _LISTING.get(job.store)
    info = (listing if listing is not None else store_list(job.store)).get(name)
    if info is None or info.get("size") != rec.get("bytes"):
        return None
    md5 = store_md5(info)
    return rec if md5 is None or md5 == rec.get("md5") else None


# the store's listing taken at the start of a conversion (inherited by forked workers): one
# listing, not one request per shard, tells a rerun which shards are already there
_LISTING: dict[str, dict] = {}


def _upload(job: _ShardJob, rec: dict) -> dict:
    """Upload a shard written to the staging folder, then its part record (so a record on the store
    always means its shard is there whole), and remove both local files."""
    from .remote import join, store_put

    name = rec["name"]
    local, part = Path(job.dst) / name, Path(job.dst) / ".parts" / (name + ".json")
    rec = {**rec, "md5": _md5_file(local)}
    part.write_text(json.dumps(rec))
    store_put(str(local), join(job.store, name))
    store_put(str(part), join(join(job.store, ".parts"), name + ".json"))
    local.unlink()
    part.unlink()
    return rec


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole foreground process group: the parent alone handles it (it
    # terminates the pool); a worker that died of it would leave its task unfinished and
    # `imap_unordered` waiting for its result for good.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _write_shard(job: _ShardJob, key: str) -> dict:
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
            except OSError as e:  # gone since the scan, a folder, a FIFO, an I/O error
                rec["rejected"].append({"path": rel, "reason": _unreadable(e)})
                continue
            try:
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
    rec["sha256"] = sha256_file(tmp)
    rec["bytes"] = tmp.stat().st_size
    rec["shorter_side"] = None if short_min is None else [short_min, short_max]
    rec["job"] = key
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


class EmptyClassWarning(UserWarning):
    """A class of the class list has no input file in a split: it keeps its index, but no sample."""


def _write_error(e: OSError, dst: Path) -> ShardWriteError:
    where = e.filename or dst
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = (f"free space on the file system of {dst} (or write to a larger one) and rerun the same command: "
               f"complete shards are kept")
    elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "DST must be a folder you can write to: choose another DST"
    elif e.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a file stands where DST or a folder above it should be: choose another DST"
    else:
        fix = "check that DST is a writable folder on a healthy file system"
    code = errno.errorcode.get(e.errno, e.errno) if e.errno is not None else "error"
    return ShardWriteError(f"cannot write the shards to {dst}: {where}: {code} ({e.strerror or e}); {fix}")


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
    Raises ShardWriteError if ``dst`` cannot take the shards (full, read-only, not a folder);
    KeyboardInterrupt ends the worker processes first.
    """
    if samples_per_shard < 1:
        raise ValueError(f"--samples-per-shard {samples_per_shard}: must be at least 1")
    pre = preprocessing_spec(resize_shorter, alexnet256)
    src = Path(src).resolve()
    if source is None:
        source = detect_source(src)
    from .remote import check_store, is_remote

    if isinstance(dst, str) and is_remote(dst):
        return _write_to_store(src, check_store(dst), source, pre, samples_per_shard=samples_per_shard,
                               workers=workers, seed=seed, progress=progress)
    dst = Path(dst)
    try:
        return _write_all(src, dst, source, pre, samples_per_shard=samples_per_shard, workers=workers, seed=seed,
                          progress=progress)
    except OSError as e:  # reading inputs never raises here (an unreadable input is rejected): DST failed
        raise _write_error(e, dst) from None


def _write_to_store(src: Path, store: str, source: Source, pre: dict, **kw) -> dict:
    """Shards written one by one to a local staging folder (``TMPDIR``; it holds at most one shard
    per worker at a time) and each uploaded as soon as it is complete; then _info.json, then the
    manifest, last. Resumable like the local writer: the part records live on the store."""
    import shutil
    import tempfile

    staging = Path(tempfile.mkdtemp(prefix="cnnrepro-shards-"))
    try:
        return _write_all(src, staging, source, pre, store=store, **kw)
    except OSError as e:  # the staging folder failed (the store's errors are RemoteErrors)
        raise _write_error(e, staging) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _LISTING.pop(store, None)


def _write_all(src: Path, dst: Path, source: Source, pre: dict, *, samples_per_shard: int, workers: int | None,
               seed: int, progress: bool, store: str | None = None) -> dict:
    from .remote import join, store_list, store_put, store_rm

    dst.mkdir(parents=True, exist_ok=True)
    (dst / ".parts").mkdir(exist_ok=True)
    # no manifest while the shards change: a reader sees either a finished conversion or none
    (dst / "manifest.json").unlink(missing_ok=True)
    if store is not None:
        store_rm(join(store, "manifest.json"))
    wnids = source.wnids
    cls_of = source.class_index()
    splits = source.splits
    empty = source.empty_classes()
    for split, missing in empty.items():
        warnings.warn(
            f"{len(missing)} class(es) of the class list have no {split} input in {src}: "
            + ", ".join(f"{w} (index {cls_of[w]})" for w in missing[:10])
            + ("..." if len(missing) > 10 else "")
            + "; they keep their index, and manifest.json lists them under empty_classes",
            EmptyClassWarning, stacklevel=3)

    # A shard's job (its inputs as Items) is made when a process is about to take it, from the
    # split's compact input list (ilsvrc.Items) and one permutation array: the driver never holds
    # per-file objects for the whole tree, so its memory stays flat with the tree's size (issue 13).
    orders: dict[str, array] = {}
    for split, files in splits.items():
        order = array("I" if len(files) < 2**32 else "q", range(len(files)))
        if split == "train":
            # the permutation random.shuffle gives a list of this length (it depends on the length
            # alone): the same shards as when the (index, item, class) tuples themselves were shuffled
            random.Random(seed).shuffle(order)
        orders[split] = order
    specs = [(split, k // samples_per_shard, k) for split in splits
             for k in range(0, len(splits[split]), samples_per_shard)]  # one per shard: (split, index, start)

    def make_job(spec) -> _ShardJob:
        split, index, start = spec
        files = splits[split]
        items = [(i, it, cls_of[it.wnid]) for i in orders[split][start:start + samples_per_shard] for it in (files[i],)]
        return _ShardJob(split, index, items, str(src), str(dst), pre["shorter_side"], pre["square"],
                         stats=(split == "train"), store=store)

    # shards, part records and temporary files that this conversion does not write (an earlier,
    # larger one did, or an interrupted one left them) would be mistaken for its own
    names = {_shard_name(split, index) for split, index, _ in specs}
    if store is not None:
        listing = _LISTING[store] = store_list(store)
        for name in listing:
            if SHARD_NAME.match(name) and name not in names:
                store_rm(join(store, name))
        for name in store_list(join(store, ".parts")):
            if name.removesuffix(".json") not in names:
                store_rm(join(join(store, ".parts"), name))
    for f in dst.iterdir():
        if SHARD_NAME.match(f.name) and f.name not in names:
            f.unlink()
    for f in (dst / ".parts").iterdir():
        if f.name.removesuffix(".json") not in names:
            f.unlink()

    records: dict[tuple[str, int], dict] = {}
    workers = max(1, min(workers or os.cpu_count() or 1, len(specs) or 1))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(specs), unit="shard", desc=f"shards -> {store or dst}")
    pool = None
    jobs = map(make_job, specs)  # lazy: the pool's task feeder makes each just before sending it
    if workers == 1:
        results = map(_run_job, jobs)
    else:
        pool = mp.get_context("fork" if os.name == "posix" else "spawn").Pool(workers, initializer=_ignore_sigint)
        results = pool.imap_unordered(_run_job, jobs)
    try:
        by_name = {_shard_name(split, index): (split, index) for split, index, _ in specs}
        for rec in results:
            records[by_name[rec["name"]]] = rec
            if bar:
                bar.update(1)
    except BaseException:
        if pool is not None:  # Ctrl-C or a failed write: stop the workers now, not after their queue
            pool.terminate()
            pool.join()
        raise
    finally:
        if bar:
            bar.close()
    if pool is not None:
        pool.close()
        pool.join()

    # nothing time- or place-dependent (no wall time, no DST): a rerun writes the same bytes as a
    # fresh conversion
    manifest: dict = {
        "version": MANIFEST_VERSION,
        "source": str(src),
        "source_form": source.form,
        "source_description": source.description,
        "classes": [{"index": i, "wnid": w, "name": source.names.get(w, w)} for i, w in enumerate(wnids)],
        "empty_classes": {split: [{"index": cls_of[w], "wnid": w} for w in ws] for split, ws in empty.items()},
        "preprocessing": {**pre, "train_order": f"shuffled across shards with seed {seed}"},
        "seed": seed,
        "samples_per_shard": samples_per_shard,
    }
    if source.eval_set:  # an ImageNetV2 test set (ilsvrc.py): the records name it, never ILSVRC-2012 val
        manifest["eval_set"] = source.eval_set  # (absent otherwise: ImageNet manifests are unchanged)
    for split, files in splits.items():
        recs = [records[(sp, index)] for sp, index, _ in specs if sp == split]
        entry = {
            "inputs": len(files),
            "samples": sum(r["count"] for r in recs),
            "shards": [{"name": r["name"], "count": r["count"], "bytes": r["bytes"], "sha256": r["sha256"]}
                       for r in recs],
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
    train_recs = [records[("train", index)] for sp, index, _ in specs if sp == "train"]
    s1 = sum((np.array(r["rgb_moments"]["sum"]) for r in train_recs), np.zeros(3))
    s2 = sum((np.array(r["rgb_moments"]["outer"]) for r in train_recs), np.zeros((3, 3)))
    n = sum(r["rgb_moments"]["pixels"] for r in train_recs)
    if n:
        manifest["rgb_stats"] = rgb_stats_from_moments(s1, s2, n)
    if store is not None:
        (dst / "manifest.json").write_text(json.dumps(manifest, indent=1))
        (dst / "_info.json").write_text(json.dumps(timm_info(manifest, store.rstrip("/").rpartition("/")[2]),
                                                   indent=1))
        store_put(str(dst / "_info.json"), join(store, "_info.json"))
        store_put(str(dst / "manifest.json"), join(store, "manifest.json"))  # last: the conversion is complete
        return manifest
    # every shard was hashed just now (written or reused): a reader need not hash them again
    remember_verified(dst, manifest)
    _write_timm_info(dst, manifest)
    tmp = dst / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, dst / "manifest.json")
    return manifest


# our split names -> timm's (train.py's defaults: --train-split train, --val-split validation)
TIMM_SPLITS = {"train": "train", "val": "validation"}


def timm_info(manifest: dict, name: str) -> dict:
    """timm's _info.json for a manifest; ``num_classes`` is ours (timm ignores keys it does not read):
    it lets a folder that has lost its manifest still be read (``info_manifest``)."""
    info = {"name": name, "num_classes": len(manifest["classes"]), "splits": {}}
    for ours, theirs in TIMM_SPLITS.items():
        if ours in manifest:
            shards = manifest[ours]["shards"]
            info["splits"][theirs] = {"name": theirs, "num_samples": manifest[ours]["samples"],
                                      "filenames": [sh["name"] for sh in shards],
                                      "shard_lengths": [sh["count"] for sh in shards]}
    return info


def _write_timm_info(dst: Path, manifest: dict) -> None:
    """timm's ``_info.json`` beside the manifest (written before it, so the manifest stays last), for
    timm's WebDataset reader (timm/data/readers/reader_wds.py, ``--dataset wds/NAME --data-dir DST``):
    per split its shard files, their sample counts and the total. timm reads the class from each
    sample's ``.cls``, as we do; it checks neither sha256 nor counts."""
    info = timm_info(manifest, dst.name)
    tmp = dst / "_info.json.tmp"
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, dst / "_info.json")


def read_manifest(root: str | Path) -> dict:
    """The manifest of a shard folder; ManifestError names the file and the fix if it is missing,
    unreadable or not shaped as the shard writer writes it. A remote root's (data/remote.py) is read
    through the same route as its shards."""
    from .remote import is_remote

    if is_remote(root):
        return _read_remote_manifest(root)
    path = Path(root) / "manifest.json"
    if not path.exists():
        raise ManifestMissing(
            f"{path} not found: --data.root must be a folder of shards written by "
            f"`cnnrepro shards SRC DST` (or `demo` for the built-in demo data); a conversion still "
            f"running (or interrupted) has no manifest yet: let it finish (rerun the same command)"
        )
    rewrite = f"rewrite it with `cnnrepro shards SRC {Path(root)}` (complete, intact shards are kept)"
    try:
        m = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ManifestError(f"{path} is not readable JSON ({type(e).__name__}: {e}); {rewrite}") from None
    problem = _manifest_problem(m)
    if problem:
        raise ManifestError(f"{path}: {problem}: it is damaged or not written by `cnnrepro shards`; {rewrite}")
    return m


def _read_remote_manifest(root: str) -> dict:
    from .remote import RemoteError, join, read_bytes
    from .stream import CorruptSampleError

    url = join(root, "manifest.json")
    try:
        data = read_bytes(url)
    except CorruptSampleError as e:  # a missing object, or the transfer failed after its retries
        if "no such object" in str(e):
            raise ManifestMissing(f"{url} not found: --data.root must hold shards written by `cnnrepro shards SRC DST` "
                                  f"with their manifest.json (upload the whole DST; the manifest last)") from None
        raise ManifestError(str(e).replace("upload the shard again", "upload it")) from None
    except RemoteError as e:
        raise ManifestError(str(e)) from None
    rewrite = f"upload the manifest.json written by `cnnrepro shards SRC DST` to {root}"
    try:
        m = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise ManifestError(f"{url} is not readable JSON ({type(e).__name__}: {e}); {rewrite}") from None
    problem = _manifest_problem(m)
    if problem:
        raise ManifestError(f"{url}: {problem}: it is damaged or not written by `cnnrepro shards`; {rewrite}")
    return m


def _manifest_problem(m) -> str | None:
    """What is wrong with the shape of a manifest, or None (the keys the readers rely on)."""
    if not isinstance(m, dict):
        return "not a JSON object"
    classes = m.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, dict) and "wnid" in c for c in classes):
        return "key 'classes' is not a list of {index, wnid, name}"
    for split in ("train", "val"):
        if split not in m:
            continue
        entry = m[split]
        if not isinstance(entry, dict) or not isinstance(entry.get("shards"), list):
            return f"key '{split}.shards' is missing or not a list"
        for k, sh in enumerate(entry["shards"]):
            if not (isinstance(sh, dict) and isinstance(sh.get("name"), str) and isinstance(sh.get("count"), int)
                    and sh["count"] >= 0):
                return f"'{split}.shards[{k}]' has no name and sample count"
        if entry.get("samples") != sum(sh["count"] for sh in entry["shards"]):
            return f"'{split}.samples' is not the sum of its shards' counts"
    return None


class TimmInfoWarning(UserWarning):
    """A shard folder read through timm's _info.json: the note says which guarantees do not hold."""


def _read_info(root) -> tuple[dict, str] | None:
    """(timm's _info.json of ``root``, its path), or None if there is none."""
    from .remote import is_remote, join, read_bytes
    from .stream import CorruptSampleError

    if is_remote(root):
        where = join(root, "_info.json")
        try:
            raw = read_bytes(where)
        except CorruptSampleError as e:
            if "no such object" in str(e):
                return None
            raise ManifestError(str(e)) from None
    else:
        where = str(Path(root) / "_info.json")
        if not Path(where).is_file():
            return None
        raw = Path(where).read_bytes()
    try:
        return json.loads(raw), where
    except (UnicodeDecodeError, ValueError) as e:
        raise ManifestError(f"{where} is not readable JSON ({type(e).__name__}: {e}); rewrite the folder with "
                            f"`cnnrepro shards SRC DST`, which writes manifest.json and _info.json") from None


def read_manifest_or_info(root) -> dict:
    """``read_manifest(root)``; for a folder with no manifest.json but timm's _info.json (a copy that
    lost its manifest, or shards written for timm), what can be built from the _info.json, with
    one TimmInfoWarning naming the guarantees that then do not hold."""
    try:
        return read_manifest(root)
    except ManifestMissing as missing:
        found = _read_info(root)
        if found is None:
            raise missing from None
    info, where = found
    m = info_manifest(info, where)
    warnings.warn(
        f"{where}: no manifest.json, so the shards are read through timm's _info.json. Still guaranteed: the "
        f"shard names and per-shard sample counts (exact epochs, exactly-once validation, a shard with another "
        f"count stops the run). NOT checked: shard sizes and sha256 (bit flips, replaced shards), the class list "
        f"({m['num_classes_from']}; class names unknown, and without sha256 nothing ties the shards' labels to it), "
        f"the preprocessing "
        f"and resolution; no RGB statistics (pass --data.mean). For all checks, write a manifest: "
        f"`cnnrepro shards SRC DST`", TimmInfoWarning, stacklevel=2)
    return m


def info_manifest(info: dict, where: str) -> dict:
    """A manifest of the shape the readers use, from timm's _info.json (timm/data/readers/reader_wds.py:
    ``splits.<name>.{filenames, shard_lengths, num_samples}``; timm's ``validation`` is our ``val``).
    The class count comes from ``num_classes`` (our writer adds it; timm itself takes --num-classes)."""
    bad = f"{where}: it is damaged or not timm's _info.json; rewrite the folder with `cnnrepro shards SRC DST`"
    splits = info.get("splits") if isinstance(info, dict) else None
    if not isinstance(splits, dict):
        raise ManifestError(f"{where} has no 'splits' object: {bad}")
    n = info.get("num_classes")
    if not isinstance(n, int) or n < 1:
        raise ManifestError(f"{where} has no 'num_classes' (the number of classes, which timm's _info.json need "
                            f"not hold): add \"num_classes\": N to it, or write a manifest with `cnnrepro shards "
                            f"SRC DST`")
    m: dict = {"version": "timm-info", "format": "timm-info", "num_classes_from": f"num_classes {n} from _info.json",
               "classes": [{"index": i, "wnid": f"class{i}", "name": f"class{i}"} for i in range(n)]}
    for ours, names in (("train", ("train",)), ("val", ("validation", "val"))):
        split = next((splits[k] for k in names if k in splits), None)
        if split is None:
            continue
        files, lengths = split.get("filenames"), split.get("shard_lengths")
        if not (isinstance(files, list) and isinstance(lengths, list) and len(files) == len(lengths)
                and all(isinstance(c, int) and c >= 0 for c in lengths)):
            raise ManifestError(f"{where}: split {names[0]!r} needs 'filenames' and 'shard_lengths' of equal "
                                f"length (sample counts per shard): {bad}")
        if split.get("num_samples", sum(lengths)) != sum(lengths):
            raise ManifestError(f"{where}: split {names[0]!r} has num_samples {split.get('num_samples')} but its "
                                f"shard_lengths sum to {sum(lengths)}: {bad}")
        m[ours] = {"samples": sum(lengths), "shards": [{"name": f, "count": c} for f, c in zip(files, lengths)]}
    return m
