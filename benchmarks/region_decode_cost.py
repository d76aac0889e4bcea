"""Where a training crop's time goes with region decoding (issue 15): what region decoding can skip
and what it cannot.

libjpeg-turbo can skip the IDCT, upsampling and colour conversion of the MCUs outside a region and
every row below it, but not the Huffman (entropy) decoding of the rows above it and beside it: the
entropy-coded data has no restart points in ImageNet's files, so it is read in order. This prints,
in ms of CPU per image over the same files (median of --rounds alternating rounds):

- a full decode through cnnrepro.data._jpeg (the same libjpeg-turbo as the loader);
- the last 8 rows' first 16 columns: every row's entropy data, almost no pixels; the floor of any
  region that reaches the image's bottom;
- AlexNet's window (rescale to 256, central 256 square, a 227 crop at a random offset) decoded, and
  the same with PIL's resampling of the window (``decode_resized_window``). The first returns the
  region's pixels to Python, a copy the second does not make, so the difference understates the
  resampler's share (``perf record`` on the second gives it directly);
- GoogLeNet's crops (8-100 % of the area) the same way.

    PYTHONPATH=. python benchmarks/region_decode_cost.py [--root DIR] [--images 300] [--rounds 5]

``--root`` defaults to ``cnnrepro bench data --preset imagenet``'s generated set (110 KB files).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from cnnrepro.data import transforms
from cnnrepro.data.bench import PRESETS, build_bench_tree
from cnnrepro.data.cache import cache_dir
from cnnrepro.data.transforms import center_offset, read_header, resized_size, sample_area_aspect_crop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="a folder of JPEGs (searched recursively)")
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    jpeg = transforms._jpeg
    if jpeg is None:
        raise SystemExit(transforms.REGION_MISSING)
    if a.root is None:
        quality, noise = PRESETS["imagenet"]
        root = build_bench_tree(cache_dir() / "bench-v1" / f"tree-640-q{quality}-noise{noise:g}", 640,
                                quality=quality, noise=noise)
    else:
        root = Path(a.root)
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in (".jpg", ".jpeg"))[: a.images]
    datas = [f.read_bytes() for f in files]
    rng = random.Random(0)
    alex, incep = [], []
    for d in datas:
        w, h, _ = read_header(d)
        rw, rh = resized_size(w, h, 256)
        x0, y0 = center_offset(rw, 256) + rng.randint(0, 29), center_offset(rh, 256) + rng.randint(0, 29)
        alex.append((d, w, h, rw, rh, x0, y0))
        incep.append((d, w, h, *sample_area_aspect_crop(w, h, (0.08, 1.0), (3 / 4, 4 / 3), rng)))

    def alex_region(d, w, h, rw, rh, x0, y0):  # the rows and columns the window's filter reads
        sx, sy = w / rw, h / rh
        x, y = max(0, int(x0 * sx) - 2), max(0, int(y0 * sy) - 2)
        return jpeg.decode_region(d, x, y, min(w, int((x0 + 227) * sx) + 3) - x, min(h, int((y0 + 227) * sy) + 3) - y)

    runs = {
        "full decode": lambda: [jpeg.decode_region(d, 0, 0, w, h) for d, w, h, *_ in alex],
        "entropy of every row (last 8 rows, 16 columns)": lambda: [jpeg.decode_region(d, w - 16, h - 8, 16, 8)
                                                                   for d, w, h, *_ in alex],
        "alexnet: the window's region": lambda: [alex_region(*g) for g in alex],
        "alexnet: region + resampled window": lambda: [jpeg.decode_resized_window(d, w, h, rw, rh, x0, y0, 227, 227, False)
                                                       for d, w, h, rw, rh, x0, y0 in alex],
        "inception_crop: the box's region": lambda: [jpeg.decode_region(d, x0, y0, cw, ch)
                                                     for d, w, h, x0, y0, cw, ch in incep],
        "inception_crop: region + resampled box": lambda: [
            jpeg.decode_resized_window(d, cw, ch, 224, 224, 0, 0, 224, 224, False, x0, y0, w, h)
            for d, w, h, x0, y0, cw, ch in incep],
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(a.rounds):
        for k, run in runs.items():
            t0 = time.process_time()
            run()
            times[k].append(1e3 * (time.process_time() - t0) / len(datas))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{len(datas)} files from {root}, mean {sum(map(len, datas)) / len(datas) / 1024:.0f} KB; ms of CPU per image, "
          f"median of {a.rounds} rounds (share of a full decode)")
    for k, v in med.items():
        print(f"  {v:6.3f}  ({v / med['full decode']:4.2f})  {k}")


if __name__ == "__main__":
    main()
