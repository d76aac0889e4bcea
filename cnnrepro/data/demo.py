"""The offline demo dataset: a small ImageNet-format tree cut from real photographs.

scikit-image ships a handful of photographs inside its wheel (no download). Each becomes one
class; its samples are random crops of varied area and aspect ratio, resized to varied
ImageNet-like sizes, with mild photometric jitter, saved as JPEGs of varied quality. Two
classes are grayscale photographs saved as 1-channel JPEGs, as ImageNet has some: the shard
writer must repair them to RGB. The tree is built deterministically from a seed and cached.

    <root>/train/<class>/<class>_<i>.JPEG
    <root>/val/<class>/<class>_<i>.JPEG
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from .cache import build_lock, cache_dir

__all__ = ["DEMO_CLASSES", "build_demo_tree", "demo_root", "ensure_demo_shards"]

# class name -> scikit-image loader name; photographs only (no synthetic test patterns)
DEMO_CLASSES = {
    "astronaut": "astronaut",
    "cat": "chelsea",
    "coffee": "coffee",
    "rocket": "rocket",
    "galaxies": "hubble_deep_field",
    "tissue": "immunohistochemistry",
    "retina": "retina",
    "motorcycle": "stereo_motorcycle",
    "cameraman": "camera",  # grayscale
    "coins": "coins",  # grayscale
}
# 2: 64 training JPEGs per class, not 80 (README quickstart budget, issue 15): 640 is five whole batches of the
# paper's 128, where 800 made six and left 32 images unused in every epoch
DEMO_VERSION = 2


def demo_root() -> Path:
    return cache_dir() / f"demo-v{DEMO_VERSION}"


def _load_photo(loader: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, loader)()
    if isinstance(img, tuple):  # stereo_motorcycle returns (left, right, disparity)
        img = img[0]
    return np.asarray(img)


def _sample(photo: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    w, h = photo.size
    area = w * h * rng.uniform(0.25, 1.0)
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    cw = int(round(min(w, np.sqrt(area * aspect))))
    ch = int(round(min(h, np.sqrt(area / aspect))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    crop = photo.crop((x0, y0, x0 + cw, y0 + ch))
    # ImageNet-like sizes: shorter side mostly 200..500, the longer side following the crop
    short = int(rng.integers(200, 500))
    scale = short / min(cw, ch)
    crop = crop.resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.BICUBIC)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    crop = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.75, 1.25))
    crop = ImageEnhance.Contrast(crop).enhance(rng.uniform(0.75, 1.25))
    return crop, int(rng.integers(70, 96))


def build_demo_tree(
    root: str | Path, *, train_per_class: int = 64, val_per_class: int = 20, seed: int = 0
) -> Path:
    """Write the demo tree under ``root`` (deterministic for a given seed and counts).

    Not safe to run twice at once on the same ``root`` (both would write ``<root>.partial``):
    ``ensure_demo_shards`` serialises it with the cache's build lock."""
    root = Path(root)
    tmp = root.with_name(root.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    for ci, (cls, loader) in enumerate(sorted(DEMO_CLASSES.items())):
        photo = Image.fromarray(_load_photo(loader))
        for split, n in (("train", train_per_class), ("val", val_per_class)):
            rng = np.random.default_rng([seed, ci, 0 if split == "train" else 1])
            d = tmp / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img, quality = _sample(photo, rng)
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=quality)
                (d / f"{cls}_{i:04d}.JPEG").write_bytes(buf.getvalue())
    (tmp / "DEMO.json").write_text(
        json.dumps(
            {
                "version": DEMO_VERSION,
                "seed": seed,
                "train_per_class": train_per_class,
                "val_per_class": val_per_class,
                "classes": DEMO_CLASSES,
                "source": "photographs shipped in the scikit-image wheel (skimage.data)",
            },
            indent=1,
        )
    )
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return root


def ensure_demo_shards(*, samples_per_shard: int = 100, workers: int | None = None) -> Path:
    """Build (once) the demo tree and its WebDataset shards; return the shard folder.

    The shards are written by the same ``write_shards`` that converts ImageNet.
    """
    from .shards import write_shards

    root = demo_root()
    tree = root / "tree"
    shards = root / "shards"
    if (shards / "manifest.json").exists():  # the writer writes the manifest last
        return shards
    # the ranks of a job all get here on a fresh cache: one builds, the others wait and reuse it
    with build_lock(root, "the demo dataset"):
        if not (tree / "DEMO.json").exists():
            print(f"cnnrepro: building the demo dataset once in {root}", file=sys.stderr, flush=True)
            build_demo_tree(tree)
        if not (shards / "manifest.json").exists():
            write_shards(tree, shards, samples_per_shard=samples_per_shard, workers=workers, progress=False)
    return shards
