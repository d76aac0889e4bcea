"""How much region decoding would give the training loader (issue 15), measured, not built.

libjpeg-turbo decodes only the MCU rows and columns around a crop through TurboJPEG 3's
``tj3SetCroppingRegion``. No maintained PyPI binding exposes it (docs/performance.md), so this
probe calls the library itself through ctypes. The only PyPI wheel found that ships a
``libturbojpeg.so`` with the TurboJPEG 3 API is ``turbojpeg`` (0.0.2, pybind11 bindings of
Dobatymo/turbojpeg-python), whose bundled library reports "libjpeg-turbo version 2.1.92", a
3.0 beta; Debian 12's ``libturbojpeg0`` is 2.1.5 (TurboJPEG 2, no cropping region). That is
why the loader does not use it: a beta library from a wheel with two releases is not a base for
the pixels every run trains on.

What it prints, on ImageNet-sized JPEGs (``cnnrepro bench data --preset imagenet``'s set) with
crops drawn as ``inception_crop`` draws them (8-100 % of the area, aspect 3/4-4/3):
- images per CPU-second of a full PIL decode, simplejpeg's full decode, TurboJPEG 3's full
  decode and its region decode of each crop;
- the largest difference between the region decode and the same window of the full decode,
  with ``--margin`` px decoded around the crop (0: libjpeg-turbo's chroma upsampling differs at
  the region's edges; 2 or more: bit-identical on every file measured).

    pip install turbojpeg    # only for this probe
    python benchmarks/region_decode_probe.py [--images 200] [--margin 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import io
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

TJINIT_DECOMPRESS, TJPF_RGB = 1, 0
TJPARAM_SUBSAMP, TJPARAM_JPEGWIDTH, TJPARAM_JPEGHEIGHT = 4, 5, 6
MCU_WIDTH = {0: 8, 1: 16, 2: 16, 3: 8, 4: 8, 5: 32}  # TJSAMP_444, 422, 420, GRAY, 440, 411


class _Region(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int)]


def load_turbojpeg3() -> ctypes.CDLL:
    try:
        import turbojpeg  # only to find its bundled library
    except ImportError:
        sys.exit("region_decode_probe: needs the `turbojpeg` wheel (pip install turbojpeg), whose bundled "
                 "libturbojpeg has the TurboJPEG 3 API")
    libs = glob.glob(os.path.join(os.path.dirname(turbojpeg.__file__), "turbojpeg.libs", "libturbojpeg*.so*"))
    if not libs:
        sys.exit("region_decode_probe: the turbojpeg wheel ships no libturbojpeg here")
    lib = ctypes.CDLL(libs[0])
    lib.tj3Init.restype = ctypes.c_void_p
    lib.tj3Init.argtypes = [ctypes.c_int]
    lib.tj3DecompressHeader.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.tj3Get.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.tj3SetCroppingRegion.argtypes = [ctypes.c_void_p, _Region]
    lib.tj3Decompress8.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p,
                                   ctypes.c_int, ctypes.c_int]
    lib.tj3GetErrorStr.restype = ctypes.c_char_p
    lib.tj3GetErrorStr.argtypes = [ctypes.c_void_p]
    return lib


class Decoder:
    def __init__(self, lib: ctypes.CDLL):
        self.lib, self.handle = lib, lib.tj3Init(TJINIT_DECOMPRESS)

    def _check(self, status: int) -> None:
        if status != 0:
            raise ValueError(self.lib.tj3GetErrorStr(self.handle).decode())

    def header(self, data: bytes) -> tuple[int, int, int]:
        self._check(self.lib.tj3DecompressHeader(self.handle, data, len(data)))
        get = self.lib.tj3Get
        return get(self.handle, TJPARAM_JPEGWIDTH), get(self.handle, TJPARAM_JPEGHEIGHT), get(self.handle,
                                                                                              TJPARAM_SUBSAMP)

    def full(self, data: bytes) -> np.ndarray:
        w, h, _ = self.header(data)
        out = np.empty((h, w, 3), np.uint8)
        self._check(self.lib.tj3Decompress8(self.handle, data, len(data), out.ctypes.data, out.strides[0], TJPF_RGB))
        return out

    def window(self, data: bytes, x: int, y: int, cw: int, ch: int, margin: int) -> np.ndarray:
        """The cw x ch window at (x, y), decoding only a region around it: ``margin`` px more on
        each side, the left edge moved down to an MCU boundary (TurboJPEG 3 requires it)."""
        w, h, subsamp = self.header(data)
        left = max(0, x - margin)
        x0 = left - left % MCU_WIDTH.get(subsamp, 8)
        y0, x1, y1 = max(0, y - margin), min(w, x + cw + margin), min(h, y + ch + margin)
        self._check(self.lib.tj3SetCroppingRegion(self.handle, _Region(x0, y0, x1 - x0, y1 - y0)))
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        try:
            self._check(self.lib.tj3Decompress8(self.handle, data, len(data), out.ctypes.data, out.strides[0],
                                                TJPF_RGB))
        finally:
            self.lib.tj3SetCroppingRegion(self.handle, _Region(0, 0, 0, 0))
        return out[y - y0:y - y0 + ch, x - x0:x - x0 + cw]


def inception_box(w: int, h: int, rng: random.Random) -> tuple[int, int, int, int]:
    from cnnrepro.data.transforms import sample_area_aspect_crop

    return sample_area_aspect_crop(w, h, (0.08, 1.0), (3 / 4, 4 / 3), rng)


def per_cpu_second(fn, n: int, rounds: int) -> float:
    best = math.inf
    for _ in range(rounds):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return n / best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--margin", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    import simplejpeg

    from cnnrepro.data.bench import PRESETS, build_bench_tree

    dec = Decoder(load_turbojpeg3())
    quality, noise = PRESETS["imagenet"]
    with tempfile.TemporaryDirectory() as tmp:
        tree = build_bench_tree(Path(tmp) / "tree", args.images, quality=quality, noise=noise)
        files = sorted(p for p in tree.rglob("*") if p.suffix.upper() in (".JPEG", ".JPG"))[:args.images]
        datas = [p.read_bytes() for p in files]
    rng = random.Random(0)
    boxes = [inception_box(*dec.header(d)[:2], rng) for d in datas]
    worst = 0
    for d, (x, y, cw, ch) in zip(datas, boxes):
        ref = simplejpeg.decode_jpeg(d, colorspace="RGB")[y:y + ch, x:x + cw].astype(int)
        worst = max(worst, int(np.abs(dec.window(d, x, y, cw, ch, args.margin).astype(int) - ref).max()))
    n = len(datas)
    rates = {
        "PIL full decode": per_cpu_second(lambda: [Image.open(io.BytesIO(d)).convert("RGB").load() for d in datas],
                                          n, args.rounds),
        "simplejpeg full decode": per_cpu_second(lambda: [simplejpeg.decode_jpeg(d, colorspace="RGB")
                                                          for d in datas], n, args.rounds),
        "TurboJPEG 3 full decode": per_cpu_second(lambda: [dec.full(d) for d in datas], n, args.rounds),
        "TurboJPEG 3 region decode": per_cpu_second(
            lambda: [dec.window(d, *b, args.margin) for d, b in zip(datas, boxes)], n, args.rounds),
    }
    print(f"{n} files, mean {sum(map(len, datas)) / n / 1024:.0f} KB; inception_crop boxes; margin {args.margin} px")
    for k, v in rates.items():
        print(f"  {k:28s} {v:7.0f} images per CPU-second  ({v / rates['PIL full decode']:.2f}x PIL)")
    print(f"  largest |region decode - full decode| over the windows: {worst} (0 = bit-identical)")


if __name__ == "__main__":
    main()
