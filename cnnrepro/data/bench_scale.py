"""``cnnrepro bench shards``: shard writing, manifest reading and streaming at ImageNet's shape (issue 13).

For each size (default 10,000 and 100,000 images) the benchmark makes a synthetic ImageNet-shaped
tree (``train/<wnid>/*.JPEG`` over 1,000 class folders, plus ``val/`` with 1 image in 20), then
measures, each step in its own Python process so that peak memory (``ru_maxrss``) belongs to that
step and that size alone:

* **write**: ``write_shards`` from the tree (scan, decode check, RGB moments, tar writing, sha256,
  manifest): files/s, peak RSS of the driver and of its largest worker process;
* **start**: the time to start an epoch from the shards (the DataModule reads the manifest,
  ``setup("fit")`` checks every shard's size and the validation shards' sha256 -- found in the
  verified-shards cache the writer filled, as on a cluster after the first run -- then the first
  training batch) and its peak RSS;
* **stream**: one full training epoch through ``TrainStream`` (decode included, tiny crops),
  with the process's resident memory sampled through the epoch: it must stay flat, since the
  stream holds at most ``shuffle_buffer`` encoded samples (the bound is printed beside it).

Linear scaling shows as a constant time per file; flat memory as peak RSS that does not grow with
the number of images: the last line prints the writer's peak-RSS slope in bytes per input file
(between the smallest and largest size) and what it makes at ImageNet's 1,331,167 files. The images are tiny noise JPEGs (a few hundred distinct encodings reused, so
making 100,000 files costs seconds): the figures measure the pipeline's per-file and per-shard
costs, not JPEG decoding of full-size photos (``cnnrepro bench data`` measures that).
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["bench_shards", "render_shards", "make_tree"]

VAL_EVERY = 20  # ImageNet: 50,000 validation images for 1,281,167 training ones (~1 in 26)
DISTINCT = 256  # distinct JPEG encodings reused across the files
IMAGENET_FILES = 1_281_167 + 50_000  # ILSVRC2012 training + validation images, as issue 13 counts them


def _wnids(classes: int) -> list[str]:
    return [f"n{i:08d}" for i in range(classes)]  # the ILSVRC form: 'n' + 8 digits


def make_tree(root: Path, images: int, classes: int) -> Path:
    """``root/train/<wnid>/`` with ``images`` files spread over ``classes`` folders and ``root/val/<wnid>/``
    with one in VAL_EVERY as many (at least one per class); reused when complete."""
    done = root / "DONE"
    if done.exists():
        return root
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(DISTINCT):
        buf = io.BytesIO()
        h, w = int(rng.integers(40, 64)), int(rng.integers(40, 64))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=85)
        blobs.append(buf.getvalue())
    wnids = _wnids(classes)
    for split, n in (("train", images), ("val", max(classes, images // VAL_EVERY))):
        for w in wnids:
            (root / split / w).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            w = wnids[i % classes]
            (root / split / w / f"{w}_{i:08d}.JPEG").write_bytes(blobs[i % DISTINCT])
    done.write_text("ok\n")
    return root


def _peak_mb() -> float:
    """This process's peak resident memory since it started (VmHWM). Not ``ru_maxrss``: Linux keeps
    in it the RSS of the process image an ``exec`` replaced, i.e. of the parent that forked us."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status: the scale benchmark needs Linux")


def _children_peak_mb() -> float:
    # the largest forked (not exec'd) worker: its ru_maxrss is its own mm's high-water mark
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: kilobytes


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _step_write(tree: str, shards: str, samples_per_shard: int, workers: int) -> dict:
    from .shards import write_shards

    t0 = time.perf_counter()
    m = write_shards(tree, shards, samples_per_shard=samples_per_shard, workers=workers, progress=False)
    dt = time.perf_counter() - t0
    files = m["train"]["inputs"] + m["val"]["inputs"]
    return {"files": files, "shards": len(m["train"]["shards"]) + len(m["val"]["shards"]), "seconds": dt,
            "files_per_s": files / dt, "peak_rss_mb": _peak_mb(), "import_rss_mb": _IMPORT_RSS,
            "worker_peak_rss_mb": _children_peak_mb() if workers > 1 else None,
            "manifest_kb": (Path(shards) / "manifest.json").stat().st_size / 1024}


def _step_start(shards: str, batch_size: int) -> dict:
    from .datamodule import ImageNetDataModule

    t0 = time.perf_counter()
    dm = ImageNetDataModule(root=shards, batch_size=batch_size, num_workers=0, resize=32, crop=28)
    t_manifest = time.perf_counter() - t0
    dm.setup("fit")
    t_setup = time.perf_counter() - t0
    next(iter(dm.train_dataloader()))
    return {"manifest_s": t_manifest, "setup_s": t_setup, "first_batch_s": time.perf_counter() - t0,
            "peak_rss_mb": _peak_mb()}


def _step_stream(shards: str, batch_size: int, shuffle_buffer: int) -> dict:
    from .datamodule import ImageNetDataModule

    dm = ImageNetDataModule(root=shards, batch_size=batch_size, num_workers=0, resize=32, crop=28,
                            shuffle_buffer=shuffle_buffer)
    dm.setup("fit")
    loader = dm.train_dataloader()
    steps = len(loader)
    marks = {max(1, round(steps * f)) for f in (0.1, 0.25, 0.5, 0.75, 1.0)}
    rss, t0, n = {}, time.perf_counter(), 0
    for i, (x, _) in enumerate(loader, 1):
        n += x.shape[0]
        if i in marks:
            rss[f"{i / steps:.2f}"] = _rss_mb()
    dt = time.perf_counter() - t0
    sizes = [sh["bytes"] / sh["count"] for sh in dm.manifest["train"]["shards"] if sh["count"]]
    return {"samples": n, "seconds": dt, "samples_per_s": n / dt, "rss_mb_at_epoch_fraction": rss,
            "rss_growth_mb": rss[max(rss)] - rss[min(rss)], "peak_rss_mb": _peak_mb(),
            "buffer_bound_mb": shuffle_buffer * max(sizes) / 2**20}


_IMPORT_RSS = 0.0  # the step process's RSS before its step ran (interpreter, torch and the rest imported)

STEPS = {"write": _step_write, "start": _step_start, "stream": _step_stream}


def _in_child(step: str, **kw) -> dict:
    """One step in a fresh interpreter: its peak RSS is its own."""
    cmd = [sys.executable, "-m", "cnnrepro.data.bench_scale", step, json.dumps(kw)]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)  # its stderr goes into our error
    if p.returncode != 0:
        raise RuntimeError(f"benchmark step {step} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def bench_shards(*, sizes: list[int], classes: int = 1000, folder: Path, samples_per_shard: int = 1000,
                 workers: int = 1, batch_size: int = 256, shuffle_buffer: int = 1000, stream: bool = True) -> dict:
    rows = []
    for n in sizes:
        tree = make_tree(folder / f"tree-{classes}x{n}", n, classes)
        shards = folder / f"shards-{classes}x{n}-{samples_per_shard}"
        # a fresh conversion: shards left by an earlier run would be reused, and timed as such
        shutil.rmtree(shards, ignore_errors=True)
        row = {"images": n, "classes": classes}
        row["write"] = _in_child("write", tree=str(tree), shards=str(shards), samples_per_shard=samples_per_shard,
                                 workers=workers)
        row["start"] = _in_child("start", shards=str(shards), batch_size=batch_size)
        if stream:
            row["stream"] = _in_child("stream", shards=str(shards), batch_size=batch_size,
                                      shuffle_buffer=shuffle_buffer)
        rows.append(row)
    base, top = rows[0], rows[-1]
    scale = {"images_ratio": top["images"] / base["images"],
             "write_time_ratio": top["write"]["seconds"] / base["write"]["seconds"],
             "write_peak_rss_ratio": top["write"]["peak_rss_mb"] / base["write"]["peak_rss_mb"],
             "start_time_ratio": top["start"]["first_batch_s"] / base["start"]["first_batch_s"]}
    if top["write"]["files"] > base["write"]["files"]:
        # the writer's memory per input file: flat memory is a slope near 0 (a list of Item objects
        # cost ~360 bytes per file, ~0.5 GB at ImageNet's 1,331,167 files)
        scale["write_rss_bytes_per_file"] = ((top["write"]["peak_rss_mb"] - base["write"]["peak_rss_mb"]) * 2**20
                                             / (top["write"]["files"] - base["write"]["files"]))
    if stream:
        scale["stream_peak_rss_ratio"] = top["stream"]["peak_rss_mb"] / base["stream"]["peak_rss_mb"]
    return {"rows": rows, "scale": scale, "workers": workers, "samples_per_shard": samples_per_shard,
            "batch_size": batch_size, "shuffle_buffer": shuffle_buffer,
            "machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()}}


def render_shards(r: dict) -> None:
    print(f"synthetic ImageNet-shaped trees (tiny noise JPEGs; val = train/{VAL_EVERY}), {r['samples_per_shard']} "
          f"samples per shard, {r['workers']} writer process(es); each step in its own process; load average "
          f"{r['machine']['loadavg'][0]:.1f} on {r['machine']['cpus']} CPUs")
    for row in r["rows"]:
        w, s = row["write"], row["start"]
        workers = f", largest worker {w['worker_peak_rss_mb']:.0f} MB" if w["worker_peak_rss_mb"] else ""
        print(f"{row['images']} images x {row['classes']} classes:")
        print(f"  write:  {w['files']} files in {w['seconds']:.1f} s = {w['files_per_s']:.0f} files/s, "
              f"{w['shards']} shards, manifest {w['manifest_kb']:.0f} KB, peak RSS {w['peak_rss_mb']:.0f} MB "
              f"(after imports {w['import_rss_mb']:.0f} MB){workers}")
        print(f"  start:  manifest read {s['manifest_s'] * 1000:.0f} ms, setup {s['setup_s']:.2f} s, first batch at "
              f"{s['first_batch_s']:.2f} s, peak RSS {s['peak_rss_mb']:.0f} MB")
        if "stream" in row:
            st = row["stream"]
            curve = ", ".join(f"{k}: {v:.0f}" for k, v in st["rss_mb_at_epoch_fraction"].items())
            print(f"  stream: {st['samples']} samples in {st['seconds']:.1f} s = {st['samples_per_s']:.0f} samples/s; "
                  f"RSS MB at epoch fraction {curve}; growth {st['rss_growth_mb']:.1f} MB (shuffle buffer "
                  f"{r['shuffle_buffer']} samples <= {st['buffer_bound_mb']:.1f} MB); peak RSS {st['peak_rss_mb']:.0f} MB")
    sc = r["scale"]
    line = (f"scaling {r['rows'][0]['images']} -> {r['rows'][-1]['images']} images (x{sc['images_ratio']:.0f}): "
            f"write time x{sc['write_time_ratio']:.2f}, write peak RSS x{sc['write_peak_rss_ratio']:.2f}, "
            f"epoch start x{sc['start_time_ratio']:.2f}")
    if "write_rss_bytes_per_file" in sc:
        slope = sc["write_rss_bytes_per_file"]
        line += (f" (slope {slope:.0f} bytes per file: {slope * IMAGENET_FILES / 2**20:.0f} MB over ImageNet's "
                 f"{IMAGENET_FILES:,} files)")
    if "stream_peak_rss_ratio" in sc:
        line += f", streaming peak RSS x{sc['stream_peak_rss_ratio']:.2f}"
    print(line)


if __name__ == "__main__":  # one step, run by _in_child
    from . import datamodule, shards  # noqa: F401 -- imported before the baseline, as every step uses them

    _IMPORT_RSS = _rss_mb()
    print(json.dumps(STEPS[sys.argv[1]](**json.loads(sys.argv[2]))))
