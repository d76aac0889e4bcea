"""Per-paper image transforms.

Split in two, for speed: the per-sample part (decode, resize, crop, flip) runs in the loader
workers on uint8 data and yields uint8 CHW tensors; the per-batch part (AlexNet's PCA lighting,
mean subtraction, scaling) runs on the device after transfer, in ``BatchNormalize``, so a batch
crosses to the GPU as uint8 (4x fewer bytes than float32).

Every random choice takes an explicit ``random.Random``, seeded by the stream from
(seed, epoch, rank, worker), so a run's augmentation is reproducible.
"""

from __future__ import annotations

import io
import math
import random
import warnings
from collections import Counter

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch import nn

try:  # libjpeg-turbo bundled in its wheel; without it every JPEG takes the (counted) PIL fallback
    import simplejpeg
except ImportError:  # pragma: no cover - a dependency in pyproject.toml
    simplejpeg = None

try:  # our extension (cnnrepro/data/_jpeg.c, built by setup.py where libjpeg-turbo's headers are)
    from . import _jpeg
except ImportError:  # the install found no libjpeg headers: whole-image decoding, the same pixels
    _jpeg = None
REGION_MISSING = ("cnnrepro.data._jpeg is not built (no libjpeg-turbo headers at install time): the loaders decode "
                  "whole images, the same pixels, slower. Fix: apt-get install libjpeg62-turbo-dev (Ubuntu: "
                  "libjpeg-turbo8-dev), then pip install -e . again")
_WARNED = []


def region_decoding() -> bool:
    """Whether this install decodes only the region a crop reads (``cnnrepro.data._jpeg``); warns
    once per process when it does not."""
    if _jpeg is None and not _WARNED:
        _WARNED.append(True)
        warnings.warn(REGION_MISSING, stacklevel=2)
    return _jpeg is not None

__all__ = ["decode_rgb", "read_header", "decode_full", "decode_stats", "reset_decode_stats", "resized_window",
           "window_of_resized", "region_decoding", "crop_resized_uint8", "resized_size", "resize_shorter",
           "center_offset", "center_crop", "eval_preprocessing", "AlexNetTrain", "ScaleJitterTrain",
           "InceptionCropTrain", "CenterCrop", "BatchNormalize", "TRAIN_TRANSFORMS"]


def decode_rgb(data: bytes, min_side: int | None = None) -> Image.Image:
    """Decode JPEG bytes to RGB, at full size unless ``min_side`` is given.

    With ``min_side`` libjpeg decodes at a reduced DCT scale (1/2, 1/4, 1/8) as long as the
    shorter side stays >= min_side ("draft" mode): the later resize gives the same geometry at a
    fraction of the decoding cost, but not the same pixels. Evaluation decodes at full size unless
    a protocol opts in (``--protocol_reduced_decode``), so that a validation number is measured on
    the pixels torchvision's and timm's reference evaluations see; the full decode runs through
    ``decode_full`` (libjpeg-turbo: PIL's pixels, bit for bit, faster).
    """
    if min_side is None:  # libjpeg-turbo through simplejpeg: PIL's pixels, faster (``decode_full``)
        return Image.fromarray(decode_full(data, read_header(data)[2]))
    img = Image.open(io.BytesIO(data))
    if img.format == "JPEG":
        w, h = img.size
        s = min_side / min(w, h)
        if s < 1:
            img.draft("RGB", (int(np.ceil(w * s)), int(np.ceil(h * s))))
    return img.convert("RGB")


# What decoded the training images of this process: "libjpeg_turbo" (simplejpeg or our extension;
# "region" counts those of them decoded only around their crop) or the reason a file took the PIL
# fallback. Per process: a loader worker counts its own files.
_DECODE_STATS: Counter = Counter()
FALLBACK_REASONS = ("cmyk", "not_jpeg", "binding_error", "binding_missing")


def decode_stats() -> dict:
    """{"libjpeg_turbo": n, "region": n, "fallback": n, "fallback_reasons": {reason: n}} of this
    process; "region" (of the libjpeg_turbo files) decoded only the MCUs around their crop."""
    reasons = {k: v for k, v in _DECODE_STATS.items() if k not in ("libjpeg_turbo", "region")}
    return {"libjpeg_turbo": _DECODE_STATS["libjpeg_turbo"], "region": _DECODE_STATS["region"],
            "fallback": sum(reasons.values()), "fallback_reasons": reasons}


def reset_decode_stats() -> None:
    _DECODE_STATS.clear()


def read_header(data: bytes) -> tuple[int, int, str | None]:
    """(width, height, fallback reason) from the header alone; the reason is None when the
    libjpeg-turbo binding will decode the file, else why PIL must (``FALLBACK_REASONS``)."""
    if simplejpeg is None:
        reason = "binding_missing"
    elif data[:2] != b"\xff\xd8":
        reason = "not_jpeg"  # a PNG or GIF named .JPEG in an unconverted tree
    else:
        try:
            h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
            if colorspace not in ("CMYK", "YCCK"):
                return w, h, None
            reason = "cmyk"  # libjpeg-turbo does not convert CMYK to RGB; PIL does
        except ValueError:
            reason = "binding_error"
    with Image.open(io.BytesIO(data)) as img:
        return img.size[0], img.size[1], reason


def decode_full(data: bytes, reason: str | None, min_size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB (H x W x 3 uint8) of a file: libjpeg-turbo through simplejpeg (the pixels of PIL's own
    decode: both run libjpeg-turbo's accurate integer IDCT and fancy upsampling, and
    tests/data/test_transforms.py checks the equality), or PIL for ``reason`` (``read_header``),
    counted in ``decode_stats``. A file neither decodes raises: the stream reports it as corrupt.

    Full resolution unless ``min_size`` = (min_w, min_h): then libjpeg-turbo scales the DCT by the
    smallest of 1/2, 1/4, 1/8 that keeps both sides at least that large, else decodes in full
    (other pixels than a full decode and a resize: opt-in, ``reduced_decode``). Only those three:
    libjpeg-turbo's other scales (7/8 ... 3/8) have no SIMD IDCT and measure slower than a full
    decode on ImageNet-sized files. The PIL fallback always decodes in full."""
    if reason is None:
        try:
            if min_size is None:
                arr = simplejpeg.decode_jpeg(data, colorspace="RGB")
            else:
                arr = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=max(1, int(min_size[0])),
                                             min_height=max(1, int(min_size[1])), min_factor=2)
            _DECODE_STATS["libjpeg_turbo"] += 1
            return arr
        except ValueError:  # strict: a recoverable libjpeg warning is an error here; PIL decides
            reason = "binding_error"
    _DECODE_STATS[reason] += 1
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))  # a writable copy, as torch wants


def window_of_resized(data: bytes, size: tuple[int, int], reason: str | None, resized: tuple[int, int], x0: int,
                      y0: int, cw: int, ch: int, flip: bool = False,
                      box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """The ``cw`` x ``ch`` window at (x0, y0) of the image (``size`` = (W, H), ``reason`` from
    ``read_header``) resized to ``resized`` = (W', H') by PIL's antialiased bilinear filter,
    optionally mirrored; uint8 CHW. With ``box`` = (bx, by, bw, bh) the image is that box of the
    file, cut first (PIL's ``crop`` then ``resize``: nothing outside it is read, as torchvision's
    ``RandomResizedCrop`` on a PIL image). The pixels of PIL's decode, crop, resize, crop and flip,
    bit for bit (tests/data/test_region_decode.py), on every path:

    - our extension (``_jpeg.decode_resized_window``): libjpeg-turbo decodes only the MCU rows and
      columns the window's filter reads, and PIL's resampler runs for the window alone;
    - a file it cannot decode (``reason``: CMYK, not a JPEG, a libjpeg warning) is decoded whole by
      PIL (counted in ``decode_stats``) and resampled by the same code;
    - without the extension (``region_decoding``): whole decode, then PIL itself."""
    (w, h), (rw, rh) = size, resized
    bx, by, bw, bh = box if box is not None else (0, 0, w, h)
    geometry = (bw, bh, rw, rh, x0, y0, cw, ch, flip, bx, by, w, h)
    if region_decoding():
        if reason is None:
            try:
                out = _jpeg.decode_resized_window(data, *geometry)
                _DECODE_STATS["libjpeg_turbo"] += 1
                _DECODE_STATS["region"] += 1
                return torch.frombuffer(out, dtype=torch.uint8).view(3, ch, cw)
            except ValueError:  # strict, as decode_full: a libjpeg warning or error and PIL decides
                reason = "binding_error"
        out = _jpeg.resized_window(np.ascontiguousarray(decode_full(data, reason)), *geometry)
        return torch.frombuffer(out, dtype=torch.uint8).view(3, ch, cw)
    img = Image.fromarray(decode_full(data, reason))
    if box is not None:
        img = img.crop((bx, by, bx + bw, by + bh))
    img = img.resize(resized, Image.BILINEAR) if resized != (bw, bh) else img
    img = img.crop((x0, y0, x0 + cw, y0 + ch))
    return to_uint8_tensor(img.transpose(Image.FLIP_LEFT_RIGHT) if flip else img)


def resized_window(arr: np.ndarray, resized: tuple[int, int], x0: int, y0: int, cw: int, ch: int,
                   flip: bool) -> torch.Tensor:
    """The ``cw`` x ``ch`` window at (x0, y0) of the image ``arr`` (H x W x 3 uint8) resized to
    ``resized`` = (W', H'), optionally flipped; uint8 CHW.

    The resize is torch's vectorised uint8 antialiased bilinear filter on channels-last memory:
    the algorithm of PIL's ``resize(BILINEAR)`` (``resize_shorter``), equal to it up to the
    fixed-point rounding of its two passes. Only the opt-in ``reduced_decode`` path uses it, on a
    DCT-scaled image (other pixels anyway); the default path is ``window_of_resized``."""
    h, w = arr.shape[:2]
    x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)  # HWC memory: a channels-last view
    if resized != (w, h):
        x = torch.nn.functional.interpolate(x, size=(resized[1], resized[0]), mode="bilinear", antialias=True,
                                            align_corners=False)
    x = x[0, :, y0 : y0 + ch, x0 : x0 + cw]
    return (x.flip(-1) if flip else x).contiguous()


def crop_resized_uint8(data: bytes, out: int, sample_box, reduced_decode: bool = False) -> torch.Tensor:
    """Decode JPEG bytes, cut the box ``sample_box(w, h) -> (x0, y0, cw, ch[, flip])`` drawn on the
    full image size, resize it to ``out`` x ``out`` (bilinear, antialiased), mirrored if ``flip``;
    uint8 CHW.

    The training loader's path (``cnnrepro bench data`` measures it): the header gives the size,
    then ``window_of_resized`` with the box: PIL's crop, then PIL's resize (torchvision's
    ``RandomResizedCrop`` on a PIL image, nothing read outside the box), bit for bit, decoding only
    the MCUs around the box.

    ``reduced_decode`` (opt-in): libjpeg-turbo decodes at the smallest DCT scale (1/2, 1/4, 1/8)
    that keeps >= ``out`` px across the crop, and PIL resamples the box of the scaled image; faster
    on large photos, but a different downsampling than full decode + resize, not rounding
    (tests/data/test_transforms.py measures how different).
    """
    w, h, reason = read_header(data)
    x0, y0, cw, ch, *rest = sample_box(w, h)
    flip = bool(rest and rest[0])
    if not reduced_decode:
        return window_of_resized(data, (w, h), reason, (out, out), 0, 0, out, out, flip, box=(x0, y0, cw, ch))
    k = out / min(cw, ch)
    arr = decode_full(data, reason, (math.ceil(w * k), math.ceil(h * k)) if k < 1 else None)
    if arr.shape[:2] != (h, w):
        sx, sy = arr.shape[1] / w, arr.shape[0] / h
        img = Image.fromarray(arr).resize((out, out), Image.BILINEAR,
                                          box=(x0 * sx, y0 * sy, (x0 + cw) * sx, (y0 + ch) * sy))
        x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
    else:  # not scaled: the crop, then torch's uint8 resize (channels-last: only the crop is copied)
        x = torch.from_numpy(arr).permute(2, 0, 1)[:, y0 : y0 + ch, x0 : x0 + cw].unsqueeze(0)
        x = x.contiguous(memory_format=torch.channels_last)
        x = torch.nn.functional.interpolate(x, size=(out, out), mode="bilinear", antialias=True, align_corners=False)[0]
    return (x.flip(-1) if flip else x).contiguous()


def resized_size(w: int, h: int, size: int) -> tuple[int, int]:
    """(w, h) after scaling the shorter side to ``size``: the longer side is ``int(size * long /
    short)``, truncated, exactly as torchvision's ``Resize(size)`` computes it
    (``transforms.functional._compute_resized_output_size``, torchvision 0.29). Rounding instead
    moves half of ImageNet's images by one pixel against every library's reference evaluation."""
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    return (size, new_long) if w <= h else (new_long, size)


def resize_shorter(img: Image.Image, size: int, resample=Image.BILINEAR) -> Image.Image:
    """Isotropic rescale so the shorter side is ``size``; PIL's antialiased filter (bilinear by
    default), the same call torchvision's ``Resize`` makes on a PIL image. An image already of
    that size is returned untouched, as torchvision does."""
    w, h = img.size
    out = resized_size(w, h, size)
    if out == (w, h):
        return img
    return img.resize(out, resample)


def center_offset(length: int, size: int) -> int:
    """Left/top offset of a centred ``size`` window in ``length`` pixels, as torchvision's
    ``center_crop`` computes it: ``int(round((length - size) / 2))``. Python's round is half to
    even, so an odd margin of 2k+1 gives k when k is even and k+1 when k is odd; floor division
    would differ by one pixel whenever k is odd."""
    return int(round((length - size) / 2.0))


def center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    x0, y0 = center_offset(w, size), center_offset(h, size)
    return img.crop((x0, y0, x0 + size, y0 + size))


def eval_preprocessing(reduced_decode: bool = False, interpolation: str = "bilinear") -> dict:
    """How an evaluation turns a file into pixels, for the run record: decoding, the resize rule,
    the filter and the crop rounding (torchvision's, see ``resized_size`` and ``center_offset``)."""
    return {
        "decode": "jpeg_draft" if reduced_decode else "full",
        "resize": "shorter side to S, longer side int(S * long / short) (torchvision Resize)",
        "interpolation": f"{interpolation} (PIL, antialiased)",
        "center_offset": "int(round((L - crop) / 2)), half to even (torchvision CenterCrop)",
    }


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class AlexNetTrain:
    """AlexNet's training crops (Krizhevsky et al. 2012, Sec. 2 and 4.1).

    Sec. 2: rescale the shorter side to 256 and take the central 256x256 patch. Sec. 4.1:
    extract random 224x224 patches (227 here: see the model's note) and their horizontal
    reflections. The PCA lighting of Sec. 4.1 is per batch, on the device (BatchNormalize).

    JPEGs decode at full resolution, only the MCUs the window reads (``window_of_resized``: PIL's
    pixels, bit for bit); ``reduced_decode`` (opt-in, not a CLI option) lets libjpeg-turbo
    scale the DCT down to the smallest size still >= the resized image: faster on large photos, other
    pixels (``crop_resized_uint8`` says how the difference is measured).
    """

    def __init__(self, resize: int = 256, crop: int = 227, reduced_decode: bool = False):
        if crop > resize:
            raise ValueError(f"crop {crop} is larger than the {resize}x{resize} image it is cut from")
        self.resize, self.crop, self.reduced_decode = resize, crop, reduced_decode

    def __call__(self, data: bytes, rng: random.Random) -> torch.Tensor:
        # the pixels of PIL's resize, then centre crop, then crop, bit for bit (``window_of_resized``:
        # only the window is decoded and resampled)
        w, h, reason = read_header(data)
        rw, rh = resized_size(w, h, self.resize)
        x0 = center_offset(rw, self.resize) + rng.randint(0, self.resize - self.crop)
        y0 = center_offset(rh, self.resize) + rng.randint(0, self.resize - self.crop)
        flip = rng.random() < 0.5
        if not self.reduced_decode:
            return window_of_resized(data, (w, h), reason, (rw, rh), x0, y0, self.crop, self.crop, flip)
        arr = decode_full(data, reason, (rw, rh))
        return resized_window(arr, (rw, rh), x0, y0, self.crop, self.crop, flip)


class CenterCrop:
    """Single centre crop: shorter side to ``resize``, then the central ``crop`` x ``crop``; the
    pixels of torchvision's ``Resize(resize)`` + ``CenterCrop(crop)`` on the same file.

    For AlexNet (resize 256, crop 227) this is the centre of the central 256x256 patch of
    Sec. 2, i.e. the centre patch of the paper's ten test patches. JPEGs decode at full size, only
    the MCUs the window reads, unless ``reduced_decode`` (faster on large photos, other pixels:
    ``decode_rgb``).
    """

    def __init__(self, resize: int = 256, crop: int = 227, reduced_decode: bool = False):
        if crop > resize:
            raise ValueError(f"crop {crop} is larger than the resized shorter side {resize}")
        self.resize, self.crop, self.reduced_decode = resize, crop, reduced_decode

    @property
    def params(self) -> dict:
        """What the run record states about this evaluation (the ``center`` protocol's params)."""
        return {"resize": self.resize, "crop": self.crop, "scales": [self.resize],
                "preprocessing": eval_preprocessing(self.reduced_decode)}

    def __call__(self, data: bytes, rng: random.Random | None = None) -> torch.Tensor:
        if not self.reduced_decode:  # only the centre window decoded and resampled; PIL's pixels
            w, h, reason = read_header(data)
            rw, rh = resized_size(w, h, self.resize)
            return window_of_resized(data, (w, h), reason, (rw, rh), center_offset(rw, self.crop),
                                     center_offset(rh, self.crop), self.crop, self.crop)
        img = decode_rgb(data, self.resize)
        return to_uint8_tensor(center_crop(resize_shorter(img, self.resize), self.crop))


class ScaleJitterTrain:
    """Isotropic rescaling to a random shorter side S, random crop, horizontal flip.

    VGG (Simonyan & Zisserman 2014, Sec. 3.1): "single-scale" training fixes S (``resize``,
    256 or 384); "multi-scale" training samples S uniformly from [S_min, S_max] = [256, 512]
    per image (``scale_range``). ResNet (He et al. 2015, Sec. 3.4): shorter side sampled in
    [256, 480], a 224x224 crop of the image or its flip. Both add AlexNet's PCA colour shift,
    which is per batch on the device (``--data.lighting_std``). S is an integer drawn uniformly
    (both ends included); the papers do not say whether S is continuous. ``reduced_decode``: as
    for ``AlexNetTrain`` (opt-in).
    """

    def __init__(self, resize: int = 256, crop: int = 224, scale_range: list[int] | None = None,
                 reduced_decode: bool = False):
        lo, hi = (scale_range if scale_range is not None else (resize, resize))
        if not crop <= lo <= hi:
            raise ValueError(f"--data.scale_range {[lo, hi]}: needs crop ({crop}) <= S_min <= S_max")
        self.lo, self.hi, self.crop, self.reduced_decode = int(lo), int(hi), crop, reduced_decode

    def sample_scale(self, rng: random.Random) -> int:
        return rng.randint(self.lo, self.hi)

    def __call__(self, data: bytes, rng: random.Random) -> torch.Tensor:
        s = self.sample_scale(rng)
        w, h, reason = read_header(data)
        rw, rh = resized_size(w, h, s)  # the image rescaled to S (resize_shorter's geometry)
        x0, y0 = rng.randint(0, rw - self.crop), rng.randint(0, rh - self.crop)
        flip = rng.random() < 0.5
        if not self.reduced_decode:  # as AlexNetTrain: PIL's pixels, only the window decoded and resampled
            return window_of_resized(data, (w, h), reason, (rw, rh), x0, y0, self.crop, self.crop, flip)
        arr = decode_full(data, reason, (rw, rh))
        return resized_window(arr, (rw, rh), x0, y0, self.crop, self.crop, flip)


def sample_area_aspect_crop(w: int, h: int, area_range, aspect_range, rng: random.Random, tries: int = 10):
    """(x0, y0, cw, ch) of a crop whose area is a uniform fraction of the image's in ``area_range``
    and whose aspect ratio w/h is log-uniform in ``aspect_range`` (GoogLeNet Sec. 6).

    "aspect ratio is chosen randomly between 3/4 and 4/3": uniform or log-uniform is not said; we
    draw log-uniform so that w/h and h/w are equally likely. A draw that does not fit the image is
    redrawn, up to ``tries`` times; then the largest centred crop of the clamped aspect is used
    (the papers say nothing about this case).
    """
    area = w * h
    lo_r, hi_r = math.log(aspect_range[0]), math.log(aspect_range[1])
    for _ in range(tries):
        a = rng.uniform(area_range[0], area_range[1]) * area
        r = math.exp(rng.uniform(lo_r, hi_r))
        cw, ch = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, w - cw), rng.randint(0, h - ch), cw, ch
    r = min(max(w / h, aspect_range[0]), aspect_range[1])
    cw, ch = (w, int(round(w / r))) if w / h < r else (int(round(h * r)), h)
    cw, ch = min(cw, w), min(ch, h)
    return (w - cw) // 2, (h - ch) // 2, cw, ch


class InceptionCropTrain:
    """GoogLeNet's crops (Szegedy et al. 2014, Sec. 6): patches of 8%-100% of the image area,
    aspect ratio in [3/4, 4/3], resized to ``crop`` x ``crop``, flipped, with "the photometric
    distortions by Andrew Howard" (Howard 2013, arXiv:1312.5402, Sec. 2.1: contrast, brightness and
    colour each scaled by a random factor in [1 - photometric, 1 + photometric], Howard's range
    being 0.5-1.5; applied in random order). ``photometric`` 0 disables them. ``reduced_decode``:
    see ``crop_resized_uint8`` (opt-in).
    """

    def __init__(self, resize: int = 256, crop: int = 224, area_range: list[float] | None = None,
                 aspect_range: list[float] | None = None, photometric: float | None = None,
                 reduced_decode: bool = False):
        self.reduced_decode = reduced_decode
        self.area = tuple(area_range or (0.08, 1.0))
        self.aspect = tuple(aspect_range or (3 / 4, 4 / 3))
        if not (0 < self.area[0] <= self.area[1] <= 1):
            raise ValueError(f"--data.area_range {list(self.area)}: needs 0 < min <= max <= 1")
        if not (0 < self.aspect[0] <= self.aspect[1]):
            raise ValueError(f"--data.aspect_range {list(self.aspect)}: needs 0 < min <= max")
        self.photometric = float(photometric or 0.0)
        if not 0.0 <= self.photometric < 1.0:
            raise ValueError(f"--data.photometric {self.photometric}: needs 0 <= value < 1")
        self.crop = crop

    def __call__(self, data: bytes, rng: random.Random) -> torch.Tensor:
        def box_and_flip(w: int, h: int):  # the box, then the flip: the order of the draws on rng
            return (*sample_area_aspect_crop(w, h, self.area, self.aspect, rng), rng.random() < 0.5)

        x = crop_resized_uint8(data, self.crop, box_and_flip, self.reduced_decode)
        if self.photometric > 0:
            img = Image.fromarray(x.permute(1, 2, 0).numpy())
            ops = [ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color]
            rng.shuffle(ops)
            for op in ops:
                img = op(img).enhance(rng.uniform(1 - self.photometric, 1 + self.photometric))
            x = to_uint8_tensor(img)
        return x


class MnistPad:
    """A grayscale MNIST digit (28x28) placed in a ``crop`` x ``crop`` field, for training and
    evaluation alike (no augmentation): LeNet-5 (LeCun et al. 1998, Sec. III-A) centres it in 32x32
    (2 pixels each side); Ciresan et al.'s 29x29 input gets one pixel on the right and bottom (the
    side is not stated). Returns a 1 x crop x crop uint8 tensor.
    """

    def __init__(self, resize: int = 28, crop: int = 32):
        if crop < 28:
            raise ValueError(f"--data.crop {crop}: MNIST digits are 28x28, the field must be at least 28")
        self.crop = crop

    def __call__(self, data: bytes, rng: random.Random | None = None) -> torch.Tensor:
        img = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.uint8)
        if img.shape != (28, 28):
            raise ValueError(f"MNIST digit of shape {img.shape}, expected 28x28")
        lo = (self.crop - 28) // 2
        out = np.zeros((self.crop, self.crop), dtype=np.uint8)
        out[lo:lo + 28, lo:lo + 28] = img
        return torch.from_numpy(out).unsqueeze(0)


TRAIN_TRANSFORMS = {"alexnet": AlexNetTrain, "scale_jitter": ScaleJitterTrain, "inception_crop": InceptionCropTrain,
                    "mnist": MnistPad}


class BatchNormalize(nn.Module):
    """uint8 batch -> float input on the device: PCA lighting (training), then (x - mean) / std.

    ``mean`` and ``std`` are in 0..255 units. AlexNet's input is raw pixels minus the training
    mean (std = 1): its N(0, 0.01) initialisation and lr 0.01 assume that scale.

    PCA lighting (AlexNet Sec. 4.1): to every pixel of an image add V (alpha * lambda), with V and
    lambda the eigenvectors and eigenvalues of the 3x3 covariance of the training set's RGB
    values and alpha ~ N(0, lighting_std^2) drawn once per image per presentation. The paper
    does not say in what units it computed the covariance; we use RGB scaled to [0, 1] (as the
    widely used ImageNet constants of fb.resnet.torch are), i.e. lambda_[0,1] = lambda_255 / 255^2,
    and convert the shift back to 0..255.
    """

    def __init__(
        self,
        mean: list[float],
        std: list[float],
        lighting_std: float = 0.0,
        eigval: list[float] | None = None,
        eigvec: list[list[float]] | None = None,
    ):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.lighting_std = float(lighting_std)
        if self.lighting_std > 0:
            if eigval is None or eigvec is None:
                raise ValueError("PCA lighting needs the training set's RGB eigenvalues and eigenvectors")
            self.register_buffer("eigval", torch.tensor(eigval, dtype=torch.float32), persistent=False)
            self.register_buffer("eigvec", torch.tensor(eigvec, dtype=torch.float32), persistent=False)

    def lighting_shift(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 3) per-image RGB shifts in 0..255 units."""
        alpha = torch.randn(n, 3, device=self.eigval.device, generator=generator) * self.lighting_std
        # V @ (alpha * lambda) per image, lambda in [0,1]^2 units, times 255 back to pixel units
        return (alpha * (self.eigval / 255.0**2)) @ self.eigvec.T * 255.0

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        x = x.float()
        if train and self.lighting_std > 0:
            x = x + self.lighting_shift(x.shape[0]).view(-1, 3, 1, 1)
        return (x - self.mean) / self.std
