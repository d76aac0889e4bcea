"""Streaming shards: exact epochs for training, exactly-once for evaluation.

Both datasets yield whole batches (the DataLoader runs with ``batch_size=None``), so that
``len(loader)`` is exactly the number of batches the loop will see, which Lightning relies on.

Training (``TrainStream``): every loader worker of every rank draws shards at random with
replacement, from its own generator seeded by (seed, epoch, rank, worker), and shuffles
samples through a buffer. An epoch is ``floor(train samples / global batch)`` steps for every
rank, whatever the number of shards, ranks and workers: ranks never disagree on the step count,
so DDP cannot hang on a missing all-reduce. (webdataset's ``ResampledShards`` + ``with_epoch``
is the same idea; we keep our own loop because we need the per-(epoch, rank, worker) seeds and
the per-worker batch quotas to add up exactly.)

Evaluation (``EvalStream``): the manifest's per-shard counts give every sample a global index;
rank r of R takes the contiguous index range [r*N/R, (r+1)*N/R), and each of its workers a
contiguous part of that. Each sample is therefore seen exactly once for any world size and
worker count: no padding, no duplicates (DistributedSampler's padding would count some images
twice). Ranks may run different numbers of batches; evaluation has no per-step collective.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from .remote import CorruptSampleError, ShardStream, is_remote

__all__ = ["ShardInfo", "TrainStream", "EvalStream", "split_range", "CorruptSampleError"]

log = logging.getLogger(__name__)


REWRITE = ("rerun `cnnrepro shards SRC DST` as it was written (it rewrites damaged shards); "
           "`cnnrepro shards --verify DST` lists them")


@dataclass(frozen=True)
class ShardInfo:
    """A tar shard; or, with ``files``, a group of files of an unconverted tree read one by one
    (``cnnrepro.data.imagefolder``): ``url`` is then the tree's root and ``files`` holds
    ``(ilsvrc.Item, class index)`` pairs. Both stream through the same code below."""

    url: str
    count: int
    files: tuple = ()
    # the manifest's sha256 and size of a remote shard, checked as it streams (cnnrepro.data.remote)
    sha256: str | None = None
    bytes: int | None = None


def split_range(start: int, stop: int, parts: int, index: int) -> tuple[int, int]:
    """The index-th of ``parts`` contiguous near-equal pieces of [start, stop)."""
    n = stop - start
    return start + n * index // parts, start + n * (index + 1) // parts


def _tar_number(field: bytes) -> int:
    if field[:1] == b"\x80":  # base-256 (GNU) for sizes >= 8 GiB
        return int.from_bytes(field[1:], "big")
    return int(field.rstrip(b"\0 ").decode() or "0", 8)


def local_tar_samples(path: str):
    """webdataset samples ({"__key__", ext: bytes}) of a tar on a local file system."""
    with open(path, "rb", buffering=1 << 20) as f:
        yield from tar_samples(f, path)


def tar_samples(f, path: str):
    """webdataset samples ({"__key__", ext: bytes}) of a tar read from the binary file object ``f``
    (a local file, or a remote object's ``remote.ShardStream``); ``path`` names it in errors.

    Ours, not webdataset's: webdataset reads members through Python's ``tarfile``, which costs
    ~0.15 ms per training sample (3 members with PAX headers), more than the crop and resize of
    the fast path; this reads the 512-byte headers directly (ustar, PAX ``path``/``size``, GNU
    long names) and groups members as webdataset does: key = path up to the first dot of the
    file name, consecutive members with one key form one sample. It only reads forward, so a
    stream that cannot seek serves as well as a file.
    """
    sample: dict = {}
    pax: dict = {}
    while True:
        hdr = f.read(512)
        if len(hdr) < 512:
            # a tar ends with zero blocks; a file that ends before them was cut, possibly at a
            # sample boundary, which must not read as a clean end of the shard
            raise CorruptSampleError(f"{path} ends without the tar end-of-archive blocks: the shard is truncated; "
                                     f"{REWRITE}")
        if not hdr.strip(b"\0"):
            break  # end of archive
        typ = hdr[156:157]
        size = int(pax.get("size", _tar_number(hdr[124:136]))) if typ in (b"0", b"\0") else _tar_number(hdr[124:136])
        # the member and its padding to the next 512-byte block: one read for a small member (a label,
        # a PAX header), two for a large one, whose bytes a slice would copy again (~110 KB a JPEG)
        pad = (-size) % 512
        if size < 1 << 16:
            data = f.read(size + pad)
            short = len(data) < size + pad
            data = data[:size]
        else:
            data = f.read(size)
            short = len(data) < size or len(f.read(pad)) < pad
        if short:
            raise CorruptSampleError(f"{path} ends inside a member: the shard is truncated; {REWRITE}")
        if typ == b"x":  # PAX extended header for the next member: "len key=value\n" records
            for rec in data.decode("utf-8").splitlines():
                k, _, v = rec.partition(" ")[2].partition("=")
                pax[k] = v
            continue
        if typ == b"L":  # GNU long name for the next member
            pax["path"] = data.rstrip(b"\0").decode("utf-8")
            continue
        if typ not in (b"0", b"\0"):  # directories, links, global headers: no sample data
            pax = {}
            continue
        name = pax.get("path")
        if name is None:
            name = hdr[:100].rstrip(b"\0").decode("utf-8")
            if hdr[257:262] == b"ustar" and hdr[345:500].strip(b"\0"):
                name = hdr[345:500].rstrip(b"\0").decode("utf-8") + "/" + name
        pax = {}
        d, _, base = name.rpartition("/")
        stem, _, ext = base.partition(".")
        key = f"{d}/{stem}" if d else stem
        if sample and sample["__key__"] != key:
            yield sample
            sample = {}
        sample["__key__"] = key
        sample[ext] = data
    if sample:
        yield sample


def _open_remote(shard: ShardInfo) -> ShardStream:
    return ShardStream(shard.url, size=shard.bytes, sha256=shard.sha256)


def _remote_tar_samples(shard: "ShardInfo", stream: ShardStream | None = None):
    """The samples of a remote shard, its bytes hashed as they stream and checked at its end
    against the manifest (cnnrepro.data.remote); a reader that stops early checks nothing.
    ``stream``: the shard's stream if it was opened ahead (TrainStream), else one is opened."""
    s = stream if stream is not None else _open_remote(shard)
    try:
        yield from tar_samples(s, shard.url)
        s.finish()
    finally:
        s.close()


def _samples(shard: "ShardInfo", meta: bool = False, stream: ShardStream | None = None):
    """(key, jpg bytes, class index) of each sample of one tar shard, in order; with ``meta``, also
    the source path the shard writer stored in the sample's ``.json`` (None if it has none).
    ``stream``: a remote shard's stream opened ahead."""
    url = shard.url
    if is_remote(url):
        source = _remote_tar_samples(shard, stream)
    elif os.path.isfile(url):
        source = local_tar_samples(url)
    else:
        source = wds.tarfile_samples([{"url": url}])
    for s in source:
        try:
            if meta:
                yield s["__key__"], s["jpg"], int(s["cls"]), _source_path(s)
            else:
                yield s["__key__"], s["jpg"], int(s["cls"])
        except KeyError as e:
            raise CorruptSampleError(
                f"sample {s.get('__key__')} in {url} has no {e} member: the shard is damaged; {REWRITE}"
            ) from None
        except ValueError:
            raise CorruptSampleError(
                f"sample {s.get('__key__')} in {url} has the class {s['cls'][:20]!r}, not an integer: the shard is "
                f"damaged; {REWRITE}"
            ) from None


def _source_path(sample: dict) -> str | None:
    """The input path the shard writer put in a sample's ``.json`` (shards.py), parsed only when asked:
    the training stream never pays for it."""
    raw = sample.get("json")
    if raw is None:
        return None
    try:
        path = json.loads(raw).get("path")
    except (ValueError, AttributeError):
        return None
    return path if isinstance(path, str) else None


def _shard_samples(shard: ShardInfo, meta: bool = False, stream: ShardStream | None = None):
    """(key, image bytes, class index) of each sample of a shard or of a group of files, in order;
    with ``meta``, also its source path (``_samples``; a file's own path)."""
    if not shard.files:
        yield from _samples(shard, meta, stream)
        return
    from .ilsvrc import read_item

    for item, label in shard.files:
        try:
            data = read_item(shard.url, item)
        except OSError as e:
            raise CorruptSampleError(
                f"{os.path.join(shard.url, item.file)} cannot be read ({e}): replace or remove it "
                f"(`cnnrepro shards` converts a tree and lists every unreadable file)"
            ) from None
        yield (item.path, data, label, item.path) if meta else (item.path, data, label)


def _counted(shard: ShardInfo, meta: bool = False, stream: ShardStream | None = None):
    """The samples of a shard, checked against the manifest's count as they stream."""
    n = 0
    for s in _shard_samples(shard, meta, stream):
        n += 1
        if n > shard.count:
            raise CorruptSampleError(f"{shard.url} holds more than the {shard.count} samples the manifest says: "
                                     f"shard and manifest disagree; {REWRITE}")
        yield s
    if n < shard.count:
        raise CorruptSampleError(f"{shard.url} holds {n} samples but the manifest says {shard.count}: "
                                 f"shard and manifest disagree; {REWRITE}")


def _decode(transform, url, key, data, rng):
    try:
        return transform(data, rng)
    except Exception as e:  # a sample validated at write time no longer decodes
        raise CorruptSampleError(
            f"sample {key} in {url} failed to decode ({type(e).__name__}: {e}); a shard's sample: the "
            f"shard is damaged, {REWRITE}; a file of an unconverted tree: replace or "
            f"remove it (`cnnrepro shards` converts a tree and lists every unreadable file)"
        ) from None


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


# A remote training shard's stream is opened this many samples before the end of the shard being
# read, so its first bytes are on hand when it is drawn: the time to the first byte of each shard
# (5-12 ms on loopback, tens of ms on a real store) otherwise stalled the decoding thread at every
# shard's start. Early enough to cover that wait, late enough that the opened connection is not
# left idle for long (a store may drop it; that would cost a retry).
AHEAD_SAMPLES = 64


def _next_draw(rng: random.Random, shards: list, taken: int, count: int, total: int, buffer: int):
    """The shard TrainStream.__iter__ will draw after the one just drawn, found ahead of time on a
    copy of its generator: until that draw the loop makes, for each of this shard's ``count``
    samples (numbered from ``taken``) that arrives once the shuffle buffer is full, one
    ``randrange(buffer)`` and one ``getrandbits(64)``, and it draws again only if it takes more
    than ``total`` samples in all. None if it does not. Drawing the next shard early from ``rng``
    itself would change every seeded order (and exact resume against earlier runs)."""
    if taken + count >= total:
        return None
    sim = random.Random()
    sim.setstate(rng.getstate())
    for _ in range(max(taken, buffer), taken + count):
        sim.randrange(buffer)
        sim.getrandbits(64)
    return sim.choice(shards)


class TrainStream(IterableDataset):
    def __init__(
        self,
        shards: list[ShardInfo],
        *,
        batch_size: int,
        transform,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 1000,
        num_samples: int | None = None,
    ):
        if not shards:
            raise ValueError("no training shards")
        if batch_size < 1:
            raise ValueError(f"batch size {batch_size}: must be at least 1 (--data.batch_size)")
        self.shards = list(shards)
        self.batch_size = batch_size
        self.transform = transform
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle_buffer = shuffle_buffer
        self.num_samples = num_samples if num_samples is not None else sum(s.count for s in shards)
        self.steps_per_epoch = self.num_samples // (batch_size * world_size)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{self.num_samples} training samples make no full global batch of "
                f"{batch_size} x {world_size} ranks: lower --data.batch_size"
            )
        # shared with the loader workers (also persistent ones): the epoch whose seed to use
        self._epoch = mp.Value("i", 0)
        # batches of this rank's epoch already trained before a resume (cnnrepro.lit.preemption):
        # the next iteration skips them, then the value returns to 0 for the following epochs
        self._start_batch = mp.Value("i", 0)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self._epoch.value:
            self._start_batch.value = 0  # a resume's skip applies to the epoch it resumed only
        self._epoch.value = epoch

    def set_start_batch(self, batches: int) -> None:
        """Resume mid-epoch: the next iteration yields batches ``batches .. len(self)-1`` of the
        epoch, identical to those an uninterrupted iteration yields at those positions."""
        if not 0 <= batches <= self.steps_per_epoch:
            raise ValueError(f"start batch {batches} outside the epoch's 0..{self.steps_per_epoch} batches")
        self._start_batch.value = batches

    def __len__(self) -> int:
        return self.steps_per_epoch

    def worker_quota(self, worker: int, num_workers: int) -> int:
        s, w = self.steps_per_epoch, num_workers
        return s // w + (1 if worker < s % w else 0)

    def __iter__(self):
        worker, num_workers = _worker()
        epoch = self._epoch.value
        # Resuming at batch `start`: the DataLoader takes batches from its workers round-robin
        # starting at worker 0, and batch i of an epoch is made by worker i % num_workers (quotas
        # differ by at most one, the extra ones going to the first workers). So loader worker w
        # plays the part of worker (w + start) % num_workers -- its seed, quota and batches -- and
        # skips, without decoding, the batches of that part that precede `start`.
        start = self._start_batch.value
        worker = (worker + start) % num_workers
        skip = len(range(worker, start, num_workers))
        seq = np.random.SeedSequence([self.seed, epoch, self.rank, worker])
        rng = random.Random(int(seq.generate_state(1, np.uint64)[0]))
        quota = self.worker_quota(worker, num_workers)

        # the samples this loop takes in all: the buffer's fill, then one per sample it yields
        total = self.shuffle_buffer + quota * self.batch_size if quota else 0

        def sample_stream():
            taken = 0
            ahead = None  # (shard, its stream): a remote shard opened before it is drawn (_next_draw)
            try:
                while True:
                    shard = rng.choice(self.shards)
                    stream = None
                    if ahead is not None:
                        (guess, stream), ahead = ahead, None
                        if guess is not shard:  # only if _next_draw no longer mirrors this loop
                            log.warning("training stream: %s was opened ahead but %s was drawn; it is "
                                        "read from its start (no sample differs)", guess.url, shard.url)
                            stream.close()
                            stream = None
                    nxt = _next_draw(rng, self.shards, taken, shard.count, total, self.shuffle_buffer)
                    if nxt is not None and (nxt.files or not is_remote(nxt.url)):
                        nxt = None  # local files need no head start
                    open_at = max(0, shard.count - AHEAD_SAMPLES)
                    # counted: a short shard drawn with replacement must stop the run, not shrink it
                    samples = _counted(shard, stream=stream)
                    try:
                        for j, s in enumerate(samples):
                            if j == open_at and nxt is not None:
                                ahead, nxt = (nxt, _open_remote(nxt)), None
                            taken += 1
                            yield (shard.url, *s)
                    finally:
                        samples.close()
            finally:
                if ahead is not None:
                    ahead[1].close()

        buf: list = []
        batch_x, batch_y = [], []
        produced = 0
        stream = sample_stream()
        while produced < quota:
            item = next(stream)
            if len(buf) < self.shuffle_buffer:
                buf.append(item)
                continue
            j = rng.randrange(len(buf))
            item, buf[j] = buf[j], item
            url, key, data, label = item
            # one draw per sample seeds its augmentation, so a skipped sample (resume) advances the
            # stream exactly as a decoded one without paying for the JPEG decode
            sample_rng = random.Random(rng.getrandbits(64))
            if produced < skip:
                batch_y.append(label)
            else:
                batch_x.append(_decode(self.transform, url, key, data, sample_rng))
                batch_y.append(label)
            if len(batch_y) == self.batch_size:
                if produced >= skip:
                    yield torch.stack(batch_x), torch.tensor(batch_y)
                batch_x, batch_y = [], []
                produced += 1


class EvalStream(IterableDataset):
    def __init__(
        self,
        shards: list[ShardInfo],
        *,
        batch_size: int,
        transform,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        sources: bool = False,
    ):
        self.shards = list(shards)
        self.batch_size = batch_size
        self.transform = transform
        self.rank, self.world_size = rank, world_size
        self.num_workers = num_workers
        # --data.real_labels (data/real.py): each batch also carries its images' ILSVRC2012_val_ numbers
        self.sources = sources
        self.total = sum(s.count for s in shards)
        self.rank_range = split_range(0, self.total, world_size, rank)

    def worker_range(self, worker: int, num_workers: int) -> tuple[int, int]:
        return split_range(*self.rank_range, max(1, num_workers), worker)

    def collate(self, xs: list):
        """One batch from per-sample outputs (multi-view protocols override it: cnnrepro.eval)."""
        return torch.stack(xs)

    def __len__(self) -> int:
        w = max(1, self.num_workers)
        return sum(math.ceil((b - a) / self.batch_size) for a, b in (self.worker_range(i, w) for i in range(w)))

    def __iter__(self):
        worker, num_workers = _worker()
        lo, hi = self.worker_range(worker, num_workers)
        start = 0
        xs, ys, idx, nums = [], [], [], []

        def batch():
            out = (self.collate(xs), torch.tensor(ys), torch.tensor(idx))
            return (*out, torch.tensor(nums)) if self.sources else out

        if self.sources:
            from .real import val_number
        for shard in self.shards:
            end = start + shard.count
            if end > lo and start < hi:
                i = start
                # counted: a worker whose range reaches the shard's end reads it to the end, so a
                # sample too many (which would take the index of the next shard's first) is seen
                for key, data, label, *src in _counted(shard, self.sources):
                    if i >= hi:
                        break
                    if i >= lo:
                        if self.sources:  # before the decode: a sample ReaL cannot label stops the run
                            nums.append(val_number(src[0], f"sample {key} in {shard.url}"))
                        xs.append(_decode(self.transform, shard.url, key, data, None))
                        ys.append(label)
                        idx.append(i)
                        if len(xs) == self.batch_size:
                            yield batch()
                            xs, ys, idx, nums = [], [], [], []
                    i += 1
            start = end
        if xs:
            yield batch()
