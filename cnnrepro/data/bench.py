"""``cnnrepro bench data``: training-loader images per CPU-second, ours against plain torchvision.

Every loader runs in this one process, on one core (``torch.set_num_threads(1)``, no loader
workers; PIL decodes on the calling thread), over the same JPEGs, in alternating rounds so that
a noisy machine hurts all alike; the figure is images per CPU-second of the process
(``time.process_time``), i.e. per core, and the ratios are taken within the one run.

* ours, one row per training family (``transforms.TRAIN_TRANSFORMS``): the shards written from
  the tree (original bytes) through ``TrainStream`` with ``AlexNetTrain`` (256, 227),
  ``ScaleJitterTrain`` (ResNet's S in [256, 480], 224) and ``InceptionCropTrain`` (224); uint8
  out, normalisation later per batch on the device, so it is not in the loader;
* torchvision: ``ImageFolder`` on the tree + ``RandomResizedCrop(224)``, ``RandomHorizontalFlip``,
  ``ToTensor``, ``Normalize`` (ImageNet mean/std), default collate;
* decode: a bare full-resolution PIL decode of every file (``Image.open(...).convert("RGB")``).

The images: the user's own (``--root``: an ImageFolder tree or a folder of shards) or a generated
set of photo content (the scikit-image photographs of the demo data, cut and resized to ImageNet's
typical 500x375, 375x500 and 500x333, with sensor-like noise), cached under ``CNNREPRO_CACHE``;
``--preset imagenet`` sizes its files like ImageNet's (~110 KB). Speed claims come from this
printout, never from timed test asserts.

A remote ``--root`` (s3://, gs://, http(s)://, pipe:, data/remote.py) is measured differently
(``bench_remote``): the samples/s of streaming its shards against the same shards read from a
local folder (``--local``, or a sha256-checked download), alternating in one run, on wall time.
"""

from __future__ import annotations

import hashlib
import io
import os
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cnnrepro.errors import UserError

from .cache import build_lock, cache_dir
from .demo import DEMO_CLASSES, _load_photo

__all__ = ["bench_data", "render_data", "build_bench_tree", "measure", "collect_root", "set_summary",
           "BenchInputError", "PRESETS", "BENCH_VERSION", "bench_remote", "render_remote"]

BENCH_VERSION = 1
# the generated sets: (JPEG quality, noise std). "imagenet": ImageNet's mean file is ~110 KB at a mean
# ~470x390 px (the figures); the sizes below average 475x392, and quality 95 with this noise
# gives files of that size (calibrated with build_bench_tree; the printout states the real mean)
PRESETS = {"default": (90, 3.0), "imagenet": (95, 11.0)}
FAMILIES = ("alexnet", "scale_jitter", "inception_crop")
IMAGE_EXT = (".jpeg", ".jpg", ".png")
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


def _family_transform(family: str, reduced_decode: bool):
    from .transforms import AlexNetTrain, InceptionCropTrain, ScaleJitterTrain

    return {"alexnet": lambda: AlexNetTrain(resize=256, crop=227, reduced_decode=reduced_decode),
            # ResNet Sec. 3.4's scale jitter (the widest-used setting of this family)
            "scale_jitter": lambda: ScaleJitterTrain(crop=224, scale_range=[256, 480], reduced_decode=reduced_decode),
            "inception_crop": lambda: InceptionCropTrain(crop=224, reduced_decode=reduced_decode)}[family]()


def _ours(shards_dir: Path, batch_size: int, transform):
    from .shards import read_manifest
    from .stream import ShardInfo, TrainStream

    m = read_manifest(shards_dir)
    shards = [ShardInfo(str(shards_dir / s["name"]), s["count"]) for s in m["train"]["shards"]]
    n = m["train"]["samples"]
    ds = TrainStream(shards, batch_size=batch_size, transform=transform,
                     shuffle_buffer=min(256, n // 2), num_samples=n)

    def run() -> int:
        return sum(x.shape[0] for x, _ in ds)

    return run


def _torchvision(tree: Path, batch_size: int, crop: int):
    import torchvision.transforms as T
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    tf = T.Compose([T.RandomResizedCrop(crop), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    loader = DataLoader(ImageFolder(str(tree / "train"), transform=tf), batch_size=batch_size, shuffle=True,
                        num_workers=0, drop_last=True)

    def run() -> int:
        return sum(x.shape[0] for x, _ in loader)

    return run


def _decode_only(files: list[Path]):
    def run() -> int:
        for f in files:
            Image.open(io.BytesIO(f.read_bytes())).convert("RGB")
        return len(files)

    return run


def measure(runs: dict, rounds: int) -> dict[str, list[float]]:
    """Images per CPU-second of this process for each named run, ``rounds`` times, alternating.

    CPU time (``time.process_time``), not wall time: on a shared machine other processes steal
    wall time from the loaders unevenly, while the CPU time one loader spends per image is what
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


class BenchInputError(UserError, ValueError):
    """--root names no benchmarkable set: the message says what was looked for."""


def _pick(files: list, images: int) -> list:
    """``images`` of ``files`` spread evenly over the sorted list (so over the classes), deterministic."""
    if len(files) <= images:
        return files
    step = len(files) / images
    return [files[int(i * step)] for i in range(images)]


def collect_root(root: Path, dest: Path, images: int) -> Path:
    """``dest/train/<class>/<file>`` from the user's ``root``, up to ``images`` files: symlinks into
    an ImageFolder tree (``root/train/<class>/`` or ``root/<class>/``) or the JPEG bytes of a folder
    of shards (``root/manifest.json``, training split). Both loaders then read the same files."""
    done = dest / "DONE"
    if done.exists():
        return dest
    if (root / "manifest.json").is_file():
        from .shards import read_manifest
        from .stream import ShardInfo, _samples

        m = read_manifest(root)
        if "train" not in m:
            raise BenchInputError(f"{root}/manifest.json has no train split: give --root a folder of training shards")
        n = 0
        for s in m["train"]["shards"]:
            for key, data, label in _samples(ShardInfo(str(root / s["name"]), s["count"])):
                d = dest / "train" / f"c{label:04d}"
                d.mkdir(parents=True, exist_ok=True)
                (d / (key.replace("/", "_") + ".JPEG")).write_bytes(data)
                n += 1
                if n >= images:
                    break
            if n >= images:
                break
    else:
        base = root / "train" if (root / "train").is_dir() else root
        files = sorted(f for f in base.glob("*/*") if f.suffix.lower() in IMAGE_EXT and f.is_file())
        if not files:
            raise BenchInputError(
                f"--root {root}: found neither shards ({root}/manifest.json) nor an ImageFolder tree "
                f"({root}/train/<class>/*.JPEG or {root}/<class>/*.JPEG); point it at one of these")
        for f in _pick(files, images):
            d = dest / "train" / f.parent.name
            d.mkdir(parents=True, exist_ok=True)
            link = d / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
    done.write_text("ok\n")
    return dest


def set_summary(files: list[Path]) -> dict:
    """File size and resolution of the benchmark's files: what the rates were measured on."""
    sizes, kinds = [], {}
    for f in files:
        with Image.open(f) as img:
            sizes.append(img.size)
            kinds[img.format] = kinds.get(img.format, 0) + 1
    kb = [f.stat().st_size / 1024 for f in files]
    common = sorted(set(sizes), key=lambda s: -sizes.count(s))[:5]
    return {"files": len(files), "formats": kinds,
            "kb_mean": statistics.mean(kb), "kb_median": statistics.median(kb), "kb_min": min(kb), "kb_max": max(kb),
            "width_mean": statistics.mean(w for w, _ in sizes), "height_mean": statistics.mean(h for _, h in sizes),
            "pixels_mean": statistics.mean(w * h for w, h in sizes),
            "common_sizes": {f"{w}x{h}": sizes.count((w, h)) for w, h in common}}


def bench_data(*, root: str | None = None, preset: str = "default", images: int = 640, batch_size: int = 32,
               crop: int = 224, rounds: int = 3, noise: float | None = None, reduced_decode: bool = False,
               folder: str | None = None) -> dict:
    """Images per CPU-second of our training loader (every family), torchvision's and a bare decode,
    on ``root``'s JPEGs or a generated set (``preset``); the figures and ratios of one run."""
    if images < batch_size:
        raise UserError(f"--images {images} is smaller than --batch-size {batch_size}: no full batch to time")
    import torch

    from .shards import write_shards
    from .transforms import decode_stats, region_decoding, reset_decode_stats

    torch.set_num_threads(1)  # one core: PIL is single-threaded; torch ops must be too
    cache = Path(folder) if folder else cache_dir() / f"bench-v{BENCH_VERSION}"
    quality, preset_noise = PRESETS[preset]
    noise = preset_noise if noise is None else noise
    if root:
        rootp = Path(root).resolve()
        if not rootp.is_dir():
            raise BenchInputError(f"--root {root}: not a folder")
    # two benchmarks started at once on a fresh cache would write the same set: one builds it
    with build_lock(cache, "the benchmark set"):
        if root:
            tag = f"root-{hashlib.sha1(str(rootp).encode()).hexdigest()[:12]}-{images}"
            tree = collect_root(rootp, cache / f"tree-{tag}", images)
            source = f"--root {rootp}"
        else:
            tag = f"{images}" + ("" if (quality, noise) == PRESETS["default"] else f"-q{quality}-noise{noise:g}")
            tree = build_bench_tree(cache / f"tree-{tag}", images, noise=noise, quality=quality)
            source = f"generated set, preset {preset} (photo content, quality {quality}, noise {noise:g})"
        shards = cache / f"shards-{tag}"
        if not (shards / "manifest.json").exists():
            write_shards(tree, shards, samples_per_shard=128, workers=1, progress=False)
    files = sorted(f for f in (tree / "train").rglob("*") if f.is_file())
    summary = set_summary(files)

    runs = {f"ours:{fam}": _ours(shards, batch_size, _family_transform(fam, False)) for fam in FAMILIES}
    if reduced_decode:
        runs.update({f"ours:{fam}+reduced_decode": _ours(shards, batch_size, _family_transform(fam, True))
                     for fam in FAMILIES})
    runs["torchvision"] = _torchvision(tree, batch_size, crop)
    runs["decode"] = _decode_only(files)
    load_before = os.getloadavg()
    reset_decode_stats()
    rates = measure(runs, rounds)
    stats = decode_stats()
    med = {k: statistics.median(v) for k, v in rates.items()}
    rows = {}
    for k in rates:
        if k.startswith("ours:"):
            rows[k[5:]] = {"images_per_cpu_s": med[k], "min": min(rates[k]), "max": max(rates[k]),
                           "ratio_vs_torchvision": med[k] / med["torchvision"], "ratio_vs_decode": med[k] / med["decode"],
                           "ratio_vs_torchvision_per_round": [o / t for o, t in zip(rates[k], rates["torchvision"])]}
            # the issue-15 goals, per core in this one run: >= 2x torchvision's loader, >= 1x a bare decode
            rows[k[5:]]["goals_met"] = {"vs_torchvision_2x": rows[k[5:]]["ratio_vs_torchvision"] >= 2.0,
                                        "vs_decode_1x": rows[k[5:]]["ratio_vs_decode"] >= 1.0}
    return {
        "source": source, "set": summary, "batch_size": batch_size, "crop": crop, "rounds": rounds, "threads": 1,
        "unit": "images per CPU-second of this process (one core), median over rounds",
        "ours": rows,
        "torchvision": {"images_per_cpu_s": med["torchvision"], "min": min(rates["torchvision"]),
                        "max": max(rates["torchvision"])},
        "decode": {"images_per_cpu_s": med["decode"], "min": min(rates["decode"]), "max": max(rates["decode"])},
        "decode_stats": stats,
        # whether cnnrepro.data._jpeg is built: without it every family decodes whole files
        "region_decoding": region_decoding(),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
    }


def render_data(result: dict) -> None:
    """``bench_data``'s result as the table `cnnrepro bench data` prints."""
    sm, source, stats = result["set"], result["source"], result["decode_stats"]
    load_before = result["machine"]["loadavg_before"]
    print(f"{sm['files']} files ({source}): mean {sm['kb_mean']:.0f} KB (median {sm['kb_median']:.0f}, "
          f"{sm['kb_min']:.0f}-{sm['kb_max']:.0f}), mean {sm['width_mean']:.0f}x{sm['height_mean']:.0f} px; "
          "most common sizes " + ", ".join(f"{k}: {v}" for k, v in sm["common_sizes"].items()))
    print(f"one core (torch threads 1, no loader workers), batch {result['batch_size']}, {result['rounds']} "
          f"alternating rounds; images per CPU-second, median (min-max); load average {load_before[0]:.1f} on "
          f"{result['machine']['cpus']} CPUs")
    for fam, r in result["ours"].items():
        print(f"  {r['images_per_cpu_s']:8.1f}  ({r['min']:.1f}-{r['max']:.1f})  ours {fam}: "
              f"{r['ratio_vs_torchvision']:.2f}x torchvision, {r['ratio_vs_decode']:.2f}x decode")
    tv, dec = result["torchvision"], result["decode"]
    print(f"  {tv['images_per_cpu_s']:8.1f}  ({tv['min']:.1f}-{tv['max']:.1f})  torchvision: ImageFolder + "
          f"RandomResizedCrop({result['crop']}) + flip + ToTensor + Normalize")
    print(f"  {dec['images_per_cpu_s']:8.1f}  ({dec['min']:.1f}-{dec['max']:.1f})  decode: bare full-resolution PIL decode")
    print(f"decoded by libjpeg-turbo: {stats['libjpeg_turbo']} (of them only the crop's region: {stats['region']}), "
          f"PIL fallback: {stats['fallback']}"
          + (" (" + ", ".join(f"{k} {v}" for k, v in stats["fallback_reasons"].items()) + ")" if stats["fallback"] else ""))
    if not result.get("region_decoding", True):
        from .transforms import REGION_MISSING

        print("region decoding OFF: " + REGION_MISSING)


def _download(root: str, manifest: dict, dest: Path) -> Path:
    """The shards of a remote root copied to ``dest`` (the benchmark's local baseline), each checked
    against the manifest's sha256 as it streams; reused when complete."""
    from .remote import ShardStream, join
    from .shards import sha256_file

    dest.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        for sh in manifest.get(split, {}).get("shards", []):
            out = dest / sh["name"]
            if out.exists() and out.stat().st_size == sh.get("bytes") and sha256_file(out) == sh.get("sha256"):
                continue
            s = ShardStream(join(root, sh["name"]), size=sh.get("bytes"), sha256=sh.get("sha256"))
            try:
                with open(out.with_suffix(".part"), "wb") as f:
                    while chunk := s.read(1 << 20):
                        f.write(chunk)
                s.finish()
            finally:
                s.close()
            out.with_suffix(".part").replace(out)
    return dest


def _stream_all(shards: list):
    """A run reading every sample of ``shards`` as the loaders do (tar parsing, counts checked; for a
    remote shard its bytes hashed and checked against the manifest), without decoding the JPEGs:
    the network route's own cost, which a decode would hide."""
    from .stream import _counted

    def run() -> tuple[int, int]:
        n = nbytes = 0
        for shard in shards:
            for _key, data, _label in _counted(shard):
                n += 1
                nbytes += len(data)
        return n, nbytes

    return run


def bench_remote(root: str, *, local: str | None = None, rounds: int = 3, folder: str | None = None,
                 batch_size: int = 32) -> dict:
    """Samples/s of a remote root's shards against the same shards read from a local folder, in
    alternating rounds of one run: wall time (the server's and the network's time is the point), one
    process, no loader workers, one torch thread (as in a loader worker). Three pairs: the plain
    client alone (every shard fetched whole, nothing parsed: the server's and client's ceiling), the
    route alone (every train and val sample read, tar parsing and counts, sha256 on the remote side;
    no decode) and the training loader (TrainStream with AlexNet's crop, decode included, one epoch
    of the training shards)."""
    from .remote import check_root, join
    from .shards import read_manifest
    from .stream import ShardInfo

    root = check_root(root)
    m = read_manifest(root)
    if local is not None:
        local_dir = Path(local)
        if read_manifest(local_dir) != m:
            raise BenchInputError(f"--local {local}: its manifest.json differs from {root}'s: give a local copy "
                                  f"of the same shards (or omit --local to have them downloaded)")
    else:
        tag = hashlib.sha1(root.encode()).hexdigest()[:12]
        local_dir = _download(root, m, (Path(folder) if folder else cache_dir() / f"bench-v{BENCH_VERSION}")
                              / f"remote-{tag}")
    entries = [sh for split in ("train", "val") if split in m for sh in m[split]["shards"]]
    remote_shards = [ShardInfo(join(root, sh["name"]), sh["count"], sha256=sh.get("sha256"), bytes=sh.get("bytes"))
                     for sh in entries]
    local_shards = [ShardInfo(str(local_dir / sh["name"]), sh["count"]) for sh in entries]
    n_train = m["train"]["samples"] if "train" in m else 0
    runs = {"fetch:remote": _fetch_all(remote_shards), "fetch:local": _fetch_all(local_shards),
            "route:remote": _stream_all(remote_shards), "route:local": _stream_all(local_shards)}
    if n_train >= batch_size:
        # the training loader as a step consumes it: AlexNet's crop (decode included), the same seed on
        # both routes, so the same samples; the route's cost then shows as it does in training
        train_remote = remote_shards[:len(m["train"]["shards"])]
        train_local = local_shards[:len(m["train"]["shards"])]
        runs["loader:remote"] = _loader_run(train_remote, batch_size)
        runs["loader:local"] = _loader_run(train_local, batch_size)
    import torch

    # one torch thread, as in a DataLoader worker (torch's worker loop sets it): with the default two
    # on this 2-core machine the loader's idle OpenMP threads spun on the core the server and the
    # network client need, and the local loader burnt 3.0 CPU-ms per sample for 1.5 ms of wall time
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        counts = {k: run() for k, run in runs.items()}  # warm-up: page cache, connections, imports
        rates: dict[str, list[float]] = {k: [] for k in runs}
        load_before = os.getloadavg()
        timed_threads = torch.get_num_threads()
        for _ in range(rounds):
            for k, run in runs.items():
                t0 = time.perf_counter()
                n, _ = run()
                rates[k].append(n / (time.perf_counter() - t0))
    finally:
        torch.set_num_threads(threads)
    med = {k: statistics.median(v) for k, v in rates.items()}
    n, nbytes = counts["route:local"]
    rows = {}
    for what in ("fetch", "route", "loader"):
        if f"{what}:remote" not in rates:
            continue
        r, q = rates[f"{what}:remote"], rates[f"{what}:local"]
        rows[what] = {"remote_samples_per_s": med[f"{what}:remote"], "local_samples_per_s": med[f"{what}:local"],
                      "ratio": med[f"{what}:remote"] / med[f"{what}:local"],
                      "ratio_per_round": [a / b for a, b in zip(r, q)], "samples": counts[f"{what}:local"][0],
                      "samples_remote": counts[f"{what}:remote"][0]}
    for what in ("fetch", "route"):
        rows[what]["remote_mb_per_s"] = med[f"{what}:remote"] * nbytes / n / 2**20
        rows[what]["local_mb_per_s"] = med[f"{what}:local"] * nbytes / n / 2**20
    rows["fetch"]["bytes"], rows["fetch"]["bytes_remote"] = counts["fetch:local"][1], counts["fetch:remote"][1]
    return {"root": root, "local": str(local_dir), "shards": len(entries), "samples": n, "mb": nbytes / 2**20,
            "rounds": rounds, "batch_size": batch_size,
            "unit": "samples per wall-clock second, median over rounds", **rows,
            "machine": {"cpus": os.cpu_count(), "torch_threads": timed_threads, "loadavg_before": load_before,
                        "loadavg_after": os.getloadavg()}}


def _fetch_all(shards: list):
    """A run fetching every shard whole with the protocol's client alone (fsspec's ``cat_file``: one
    GET per object; a pipe's command read to its end; a local file read): no tar parsing, no hash.
    Its remote/local ratio is the ceiling the server and client set for the route."""
    from .remote import _filesystem, is_remote

    def get(url: str) -> bytes:
        if not is_remote(url):
            return Path(url).read_bytes()
        if url.startswith("pipe:"):
            import webdataset as wds

            with wds.gopen(url, "rb") as f:
                return f.read()
        return _filesystem(url).cat_file(url)

    def run() -> tuple[int, int]:
        n = nbytes = 0
        for shard in shards:
            nbytes += len(get(shard.url))
            n += shard.count
        return n, nbytes

    return run


def _loader_run(shards: list, batch_size: int):
    from .stream import TrainStream

    n = sum(s.count for s in shards)
    ds = TrainStream(shards, batch_size=batch_size, transform=_family_transform("alexnet", False),
                     shuffle_buffer=min(256, n // 2), num_samples=n)

    def run() -> tuple[int, int]:
        return sum(x.shape[0] for x, _ in ds), 0

    return run


def render_remote(r: dict) -> None:
    print(f"{r['root']}: {r['shards']} shards, {r['samples']} samples, {r['mb']:.1f} MB of images; against the same "
          f"shards in {r['local']}")
    print(f"one process, no loader workers, one torch thread, {r['rounds']} alternating rounds, wall time, "
          f"samples/s (median); load "
          f"average {r['machine']['loadavg_before'][0]:.1f} on {r['machine']['cpus']} CPUs")
    labels = {"fetch": "plain client alone (one whole-object GET per shard; no parsing, no hash): the ceiling",
              "route": "route alone (tar parsing, counts; sha256 on the remote side; no decode)",
              "loader": f"training loader (TrainStream + AlexNet crop, decode included, batch {r['batch_size']})"}
    for what, label in labels.items():
        if what not in r:
            continue
        row = r[what]
        print(f"  {row['remote_samples_per_s']:9.0f} remote  {row['local_samples_per_s']:9.0f} local  ratio "
              f"{row['ratio']:.2f} (per round: " + ", ".join(f"{x:.2f}" for x in row["ratio_per_round"])
              + f")  {label}")
