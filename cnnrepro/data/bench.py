"""``cnnrepro bench data``: training-loader images/s per core, ours against plain torchvision.

Both loaders run in this one process, on one core (``torch.set_num_threads(1)``, no loader
workers; PIL decodes on the calling thread), over the same JPEGs, in alternating rounds so that
a noisy machine hurts both alike. The figure is images/s per core; the ratio is ours over theirs.

* ours: the shards written from the tree (original bytes) through ``TrainStream`` with
  ``InceptionCropTrain`` (GoogLeNet-style random area/aspect crop to 224, flip; uint8 out;
  ``transforms.crop_resized_uint8``: reduced-size DCT decoding when the crop allows it, else
  libjpeg-turbo straight to a tensor and torch's vectorised uint8 antialiased resize);
  normalisation happens later, per batch on the device, so it is not in the loader;
* torchvision: ``ImageFolder`` on the tree + ``RandomResizedCrop(224)``, ``RandomHorizontalFlip``,
  ``ToTensor``, ``Normalize`` (ImageNet mean/std), default collate.

The JPEGs are photo content (the scikit-image photographs of the demo data, cut and resized to
ImageNet's typical 500x375 or 375x500, with mild sensor-like noise) at quality 90, cached under
``CNNREPRO_CACHE``. Speed claims come from this printout, never from timed test asserts.
"""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from .demo import DEMO_CLASSES, _load_photo, cache_dir
from .shards import read_manifest, write_shards
from .stream import ShardInfo, TrainStream
from .transforms import InceptionCropTrain

__all__ = ["bench_data", "build_bench_tree", "measure", "BENCH_VERSION"]

BENCH_VERSION = 1
SIZES = [(500, 375)] * 3 + [(375, 500), (500, 333)]  # ImageNet's most common sizes, landscape-heavy


def build_bench_tree(root: Path, images: int, *, seed: int = 0, quality: int = 90, noise: float = 3.0) -> Path:
    """``root/train/<class>/*.JPEG``: ``images`` photo-like JPEGs of ImageNet sizes (deterministic)."""
    done = root / f"DONE-{images}"
    if done.exists():
        return root
    rng = np.random.default_rng(seed)
    classes = sorted(DEMO_CLASSES.items())
    photos = {c: Image.fromarray(_load_photo(loader)).convert("RGB") for c, loader in classes}
    for i in range(images):
        cls = classes[i % len(classes)][0]
        photo = photos[cls]
        tw, th = SIZES[int(rng.integers(len(SIZES)))]
        # the largest crop of the target aspect, then 60-100% of it: mostly a downscale, as a camera's
        w, h = photo.size
        cw, ch = (w, w * th / tw) if w / h < tw / th else (h * tw / th, h)
        s = rng.uniform(0.6, 1.0)
        cw, ch = cw * s, ch * s
        x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
        img = photo.resize((tw, th), Image.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
        arr = np.asarray(img, dtype=np.float32) + rng.normal(0, noise, (th, tw, 1))  # sensor-like noise
        d = root / "train" / cls
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(d / f"{cls}_{i:06d}.JPEG", quality=quality)
    done.write_text("ok\n")
    return root


def _ours(shards_dir: Path, batch_size: int, crop: int):

    m = read_manifest(shards_dir)
    shards = [ShardInfo(str(shards_dir / s["name"]), s["count"]) for s in m["train"]["shards"]]
    n = m["train"]["samples"]
    ds = TrainStream(shards, batch_size=batch_size, transform=InceptionCropTrain(crop=crop),
                     shuffle_buffer=min(256, n // 2), num_samples=n)

    def run() -> int:
        return sum(x.shape[0] for x, _ in ds)

    return run


def _torchvision(tree: Path, batch_size: int, crop: int):

    tf = T.Compose([T.RandomResizedCrop(crop), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    loader = DataLoader(ImageFolder(str(tree / "train"), transform=tf), batch_size=batch_size, shuffle=True,
                        num_workers=0, drop_last=True)

    def run() -> int:
        return sum(x.shape[0] for x, _ in loader)

    return run


def _decode_only(tree: Path):
    files = sorted((tree / "train").rglob("*.JPEG"))

    def run() -> int:
        for f in files:
            Image.open(io.BytesIO(f.read_bytes())).convert("RGB")
        return len(files)

    return run


def measure(runs: dict, rounds: int) -> dict[str, list[float]]:
    """Images per CPU-second of this process for each named run, ``rounds`` times, alternating.

    CPU time (``time.process_time``), not wall time: on a shared machine other processes steal
    wall time from both loaders unevenly, while the CPU time one loader spends per image is what
    "images/s per core" means. Everything runs on this one thread, so nothing is left uncounted.
    """
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for name, run in runs.items():  # warm-up: page cache, lazy imports
        run()
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.process_time()
            n = run()
            rates[name].append(n / (time.process_time() - t0))
    return rates


def bench_data(*, images: int = 640, batch_size: int = 32, crop: int = 224, rounds: int = 3, noise: float = 3.0,
               folder: str | None = None) -> int:
    """Build (or reuse) the benchmark JPEGs and shards, time both loaders, print the comparison."""
    torch.set_num_threads(1)  # one core: PIL is single-threaded; torch ops must be too
    root = Path(folder) if folder else cache_dir() / f"bench-v{BENCH_VERSION}"
    tag = f"{images}" + ("" if noise == 3.0 else f"-noise{noise:g}")
    tree = build_bench_tree(root / f"tree-{tag}", images, noise=noise)
    shards = root / f"shards-{tag}"
    if not (shards / "manifest.json").exists():
        write_shards(tree, shards, samples_per_shard=128, workers=1, progress=False)
    files = sorted((tree / "train").rglob("*.JPEG"))
    sizes = []
    for f in files:
        with Image.open(f) as img:
            sizes.append(img.size)
    kb = statistics.mean(f.stat().st_size for f in files) / 1024
    print(f"{len(files)} JPEGs (photo content, quality 90), mean {kb:.0f} KB, sizes "
          + ", ".join(f"{w}x{h}: {sizes.count((w, h))}" for w, h in sorted(set(sizes), reverse=True)))
    print(f"one core (torch threads 1, no loader workers), batch {batch_size}, crop {crop}, "
          f"{rounds} alternating rounds; images per CPU-second of one core, median (min-max)")
    rates = measure({
        "ours": _ours(shards, batch_size, crop),
        "torchvision": _torchvision(tree, batch_size, crop),
        "decode": _decode_only(tree),
    }, rounds)
    labels = {
        "ours": "ours: shards -> TrainStream -> InceptionCropTrain (uint8; DCT-scaled decode when the crop allows; "
                "libjpeg-turbo to tensor + vectorised uint8 resize otherwise)",
        "torchvision": "torchvision: ImageFolder + RandomResizedCrop + flip + ToTensor + Normalize",
        "decode": "PIL JPEG decode alone (a floor both loaders pay)",
    }
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in rates.items():
        print(f"  {med[k]:8.1f}  ({min(v):.1f}-{max(v):.1f})  {labels[k]}")
    ratio = med["ours"] / med["torchvision"]
    print(f"ratio ours / torchvision: {ratio:.2f}x per core (per round: "
          + ", ".join(f"{o / t:.2f}" for o, t in zip(rates["ours"], rates["torchvision"])) + ")")
    bound = med["decode"] / med["torchvision"]
    print(f"upper bound for any loader that decodes every pixel of these JPEGs: {bound:.2f}x (decode alone vs torchvision)")
    return 0
