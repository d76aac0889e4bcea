"""Region decoding and the window resampler (cnnrepro/data/_jpeg.c, issue 15): speed must never change
what the model sees. Every check is against PIL itself (its decode, its ``resize``, its ``crop``) on
real photographs, at tolerance 0: the extension runs PIL's decoder settings and PIL's resampling
arithmetic, so any difference is a bug, not rounding."""

import hashlib
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnrepro.data import transforms
from cnnrepro.data.transforms import (AlexNetTrain, CenterCrop, InceptionCropTrain, ScaleJitterTrain, decode_stats,
                                      reset_decode_stats, resized_size, window_of_resized)

from photos import PHOTOS, photo_jpeg  # tests/data/photos.py

_jpeg = transforms._jpeg
needs_ext = pytest.mark.skipif(_jpeg is None, reason="cnnrepro.data._jpeg is not built (no libjpeg headers)")

# the JPEG layouts ImageNet holds: 4:2:0 (most), 4:2:2, 4:4:4, progressive, grayscale
KINDS = {"420": dict(subsampling=2), "422": dict(subsampling=1), "444": dict(subsampling=0),
         "progressive": dict(progressive=True), "gray": dict(mode="L")}


def _pil_window(data: bytes, resized, x0, y0, cw, ch, flip=False) -> np.ndarray:
    """The reference: PIL's full decode, PIL's resize of the whole image (torchvision's ``Resize`` on a
    PIL image), the crop, the mirror; H x W x 3."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    if resized != img.size:
        img = img.resize(resized, Image.BILINEAR)
    out = np.asarray(img.crop((x0, y0, x0 + cw, y0 + ch)))
    return out[:, ::-1] if flip else out


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


def test_the_extension_is_built_where_libjpeg_turbos_headers_are():
    """CI installs the headers (.ci/run): there the extension must exist, or every test below would
    quietly measure the whole-file fallback."""
    if not Path("/usr/include/jpeglib.h").exists():
        pytest.skip("no libjpeg headers on this machine: the install builds no extension (by design)")
    assert _jpeg is not None, transforms.REGION_MISSING
    assert transforms.region_decoding()


@needs_ext
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_decoded_region_is_the_full_decodes_pixels(kind):
    """Rows y..y+h and at least columns x..x+w; libjpeg-turbo widens the columns to whole iMCUs. Within
    the region, away from its cut edges by 2 px (chroma upsampling treats a cut as an image edge, the
    reason callers decode ``MARGIN`` px more), every pixel is the full decode's."""
    rng = random.Random(kind)
    worst = 0
    for photo, size in PHOTOS:
        save = dict(KINDS[kind])
        data = photo_jpeg(photo, size, mode=save.pop("mode", "RGB"), **save)
        full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
        H, W = full.shape[:2]
        for _ in range(25):
            x, y = rng.randrange(W - 1), rng.randrange(H - 1)
            w, h = rng.randint(1, W - x), rng.randint(1, H - y)
            px, rx, ry, rw, rh = _jpeg.decode_region(data, x, y, w, h)
            assert rx <= x and rx + rw >= x + w and (ry, rh) == (y, h) and len(px) == rw * rh * 3
            region = np.frombuffer(px, np.uint8).reshape(rh, rw, 3).astype(int)
            ref = full[ry:ry + rh, rx:rx + rw]
            # the cut edges only: an edge that is the image's own is exact too
            a, b = (0 if rx == 0 else 2), (rw if rx + rw == W else rw - 2)
            c, d = (0 if ry == 0 else 2), (rh if ry + rh == H else rh - 2)
            if b > a and d > c:
                worst = max(worst, np.abs(region[c:d, a:b] - ref[c:d, a:b]).max())
    assert worst == 0


def _windows(W, H, rng, n):
    """(resized, x0, y0, cw, ch, flip): downscales (AlexNet's, ResNet's S), upscales, one axis kept
    (S = the shorter side), a downscale past 2x (more than 5 taps: the non-AVX2 loop), edge windows."""
    short = min(W, H)
    scales = [256, 224, short, short + 1, 480, short // 3, 2 * short] + [rng.randint(100, 520) for _ in range(n)]
    for s in scales:
        rw, rh = resized_size(W, H, s)
        for _ in range(3):
            cw, ch = rng.randint(1, min(rw, 227)), rng.randint(1, min(rh, 227))
            x0 = rng.choice([0, rw - cw, rng.randint(0, rw - cw)])
            y0 = rng.choice([0, rh - ch, rng.randint(0, rh - ch)])
            yield (rw, rh), x0, y0, cw, ch, rng.random() < 0.5


# an image more than twice as tall as wide: Pillow resizes it vertical pass first (see below)
TALL = [("rocket", (170, 470))]


def _pillow_horizontal_first(w, h, rw, rh):
    """Pillow 13's pass order (libImaging/Resample.c, ImagingResampleInner): vertical first when the
    height shrinks by more than twice as many pixels as the width; the order moves some pixels by one
    level, so the extension follows it."""
    return not ((h - rh) > 0 and (h - rh) > (w - rw) * 2)


@needs_ext
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_resized_window_is_pils_resize_then_crop_bit_for_bit(kind):
    """``decode_resized_window`` (region decode + PIL's resampler for the window alone) and
    ``resized_window`` (the same resampler on already decoded pixels) against PIL's full pipeline."""
    rng = random.Random(kind)
    count = 0
    for photo, size in PHOTOS + TALL:
        save = dict(KINDS[kind])
        data = photo_jpeg(photo, size, mode=save.pop("mode", "RGB"), **save)
        full = np.ascontiguousarray(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        H, W = full.shape[:2]
        for resized, x0, y0, cw, ch, flip in _windows(W, H, rng, 4):
            ref = _pil_window(data, resized, x0, y0, cw, ch, flip)
            a = _jpeg.decode_resized_window(data, W, H, *resized, x0, y0, cw, ch, flip)
            b = _jpeg.resized_window(full, W, H, *resized, x0, y0, cw, ch, flip)
            for out in (a, b):
                got = np.frombuffer(out, np.uint8).reshape(3, ch, cw).transpose(1, 2, 0)
                assert np.array_equal(got, ref), (photo, resized, x0, y0, cw, ch, flip)
            count += 1
    assert count >= 5 * 33


# resized sizes of a 500 x 375 photo that take every resampling loop of the extension between them
LOOP_SIZES = [(342, 256),   # AlexNet's and ResNet's S = 256: 3 taps
              (250, 188),   # exactly 2x: 4 taps
              (200, 150),   # 2.5x: 5 taps, 3 pairs
              (150, 113),   # 3.3x: a lane's taps reach the last byte of its 16-byte load, or past it
              (100, 75),    # 5x: the row loops; the vertical still AVX2 (5 pairs)
              (1000, 750),  # 2x up: 2 taps, 1 pair
              (500, 256),   # width kept: no horizontal pass, as PIL
              (460, 40),    # 9.4x down vertically: past the AVX2 vertical loop
              (40, 375)]    # height kept


@needs_ext
def test_every_resampling_loop_is_pils_arithmetic_at_every_window_width():
    """The AVX2 plane loop (8 outputs at a time, tails of any width, mirrored through its tables), the
    AVX2 vertical loop (16 values at a time, odd and even tap counts) and the loops they fall back to:
    each equal to PIL's resize-then-crop, bit for bit, through ``decode_resized_window`` and
    ``resized_window``; with AVX2, each reached (``_loops`` names the loops a window runs; without
    it, these windows check the other loops)."""
    data = photo_jpeg(PHOTOS[0][0], (500, 375))
    full = np.ascontiguousarray(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    seen = set()
    for rw, rh in LOOP_SIZES:
        ref_img = Image.open(io.BytesIO(data)).convert("RGB").resize((rw, rh), Image.BILINEAR)
        rng = random.Random(rw)
        for cw in sorted({1, 5, 8, 15, 16, 17, 24, 33, 220, 227, rw} & set(range(1, rw + 1))):
            ch = min(rh, rng.choice([1, 7, 16, 17, 100, 227]))
            for flip in (False, True):
                x0, y0 = rng.randint(0, rw - cw), rng.randint(0, rh - ch)
                h, v = _jpeg._loops(500, 375, rw, rh, x0, y0, cw, ch, flip)
                seen |= {("h", h), ("v", v)}
                ref = np.asarray(ref_img.crop((x0, y0, x0 + cw, y0 + ch)))
                ref = ref[:, ::-1] if flip else ref
                for out in (_jpeg.decode_resized_window(data, 500, 375, rw, rh, x0, y0, cw, ch, flip),
                            _jpeg.resized_window(full, 500, 375, rw, rh, x0, y0, cw, ch, flip)):
                    got = np.frombuffer(out, np.uint8).reshape(3, ch, cw).transpose(1, 2, 0)
                    assert np.array_equal(got, ref), ((rw, rh), x0, y0, cw, ch, flip, h, v)
    if getattr(_jpeg, "AVX2", 0):
        assert seen == {("h", "planes2"), ("h", "planes"), ("h", "rows"), ("h", "copy"),
                        ("v", "avx2"), ("v", "rows"), ("v", "copy")}
    else:
        assert seen == {("h", "rows"), ("h", "copy"), ("v", "rows"), ("v", "copy")}


@needs_ext
@pytest.mark.parametrize("kind", ["420", "444", "gray", "progressive"])
def test_a_crop_box_resized_is_pils_crop_then_resize_bit_for_bit(kind):
    """GoogLeNet's crops (``InceptionCropTrain``): the box cut first, then resized to 224 (PIL's crop,
    then ``resize``: nothing outside the box is read), with the extension's ``box`` arguments, on
    boxes of every shape, Pillow's two pass orders both exercised."""
    from cnnrepro.data.transforms import sample_area_aspect_crop

    rng = random.Random(kind)
    orders = set()
    for photo, size in PHOTOS + TALL:
        save = dict(KINDS[kind])
        data = photo_jpeg(photo, size, mode=save.pop("mode", "RGB"), **save)
        img = Image.open(io.BytesIO(data)).convert("RGB")
        full = np.ascontiguousarray(np.asarray(img))
        W, H = size
        for _ in range(12):
            x0, y0, cw, ch = sample_area_aspect_crop(W, H, (0.08, 1.0), (3 / 4, 4 / 3), rng)
            flip = rng.random() < 0.5
            ref = np.asarray(img.crop((x0, y0, x0 + cw, y0 + ch)).resize((224, 224), Image.BILINEAR))
            ref = ref[:, ::-1] if flip else ref
            orders.add(_pillow_horizontal_first(cw, ch, 224, 224))
            box = (x0, y0, W, H)
            for out in (_jpeg.decode_resized_window(data, cw, ch, 224, 224, 0, 0, 224, 224, flip, *box),
                        _jpeg.resized_window(full, cw, ch, 224, 224, 0, 0, 224, 224, flip, *box)):
                got = np.frombuffer(out, np.uint8).reshape(3, 224, 224).transpose(1, 2, 0)
                assert np.array_equal(got, ref), (photo, (x0, y0, cw, ch), flip)
    assert orders == {True, False}


_DIGEST = """
import hashlib, io, json, random, sys
sys.path.insert(0, {here!r})
from PIL import Image
from cnnrepro.data import _jpeg
from cnnrepro.data.transforms import resized_size
from photos import PHOTOS, photo_jpeg
h, rng = hashlib.sha256(), random.Random(0)
for photo, size in PHOTOS:
    data = photo_jpeg(photo, size)
    arr = Image.open(io.BytesIO(data)).convert("RGB").tobytes()
    W, H = size
    for s in (256, 480, 130, 224):
        rw, rh = resized_size(W, H, s)
        c = min(rw, rh, 200)
        x0, y0 = rng.randint(0, rw - c), rng.randint(0, rh - c)
        h.update(_jpeg.decode_resized_window(data, W, H, rw, rh, x0, y0, c, c, s == 480))
        h.update(_jpeg.resized_window(arr, W, H, rw, rh, x0, y0, c, c, s == 130))
print(json.dumps({{"digest": h.hexdigest(), "sse41": getattr(_jpeg, "SSE41", 0), "avx2": getattr(_jpeg, "AVX2", 0)}}))
"""


@needs_ext
def test_the_simd_loops_give_the_scalar_loops_pixels():
    """The SSE4.1 and AVX2 loops are chosen at run time; CNNREPRO_JPEG_NO_SIMD=1 forces the scalar ones.
    Both, over the same windows (downscales, an upscale, both flips), hash to the same bytes."""
    code = _DIGEST.format(here=str(Path(__file__).parent))

    def run(env_extra):
        env = {**os.environ, **env_extra}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    simd, scalar = run({}), run({"CNNREPRO_JPEG_NO_SIMD": "1"})
    assert scalar["sse41"] == 0 and scalar["avx2"] == 0
    if not (simd["sse41"] or simd["avx2"]):
        pytest.skip("no SIMD on this CPU: only the scalar loops exist here")
    assert simd["digest"] == scalar["digest"]


@needs_ext
def test_every_training_family_and_the_centre_crop_decode_only_their_region_with_the_same_pixels(monkeypatch):
    """The loaders with the extension against the same loaders without it (whole-file decoding, PIL's
    resize of the whole image): the same tensors, and the fallback says so once."""
    families = [AlexNetTrain(), ScaleJitterTrain(crop=224, scale_range=[256, 480]), InceptionCropTrain(crop=224),
                CenterCrop(resize=256, crop=224)]
    datas = [photo_jpeg(p, s) for p, s in PHOTOS]
    reset_decode_stats()
    fast = [[t(d, random.Random(i)) for i in range(3) for d in datas] for t in families]
    n = 3 * len(datas) * len(families)
    assert decode_stats() == {"libjpeg_turbo": n, "region": n, "fallback": 0, "fallback_reasons": {}}

    monkeypatch.setattr(transforms, "_jpeg", None)
    monkeypatch.setattr(transforms, "_WARNED", [])
    reset_decode_stats()
    with pytest.warns(UserWarning, match="libjpeg62-turbo-dev") as caught:
        slow = [[t(d, random.Random(i)) for i in range(3) for d in datas] for t in families]
    assert len(caught) == 1  # once per process, not per image
    assert decode_stats()["region"] == 0 and decode_stats()["libjpeg_turbo"] == n
    for a, b in zip(fast, slow):
        for x, y in zip(a, b):
            assert x.dtype == torch.uint8 and x.is_contiguous() and torch.equal(x, y)


@needs_ext
@pytest.mark.parametrize("kind", ["cmyk", "png", "trailing_data"])
def test_a_file_the_region_decoder_refuses_is_decoded_whole_counted_with_the_same_pixels(kind):
    """CMYK (libjpeg-turbo gives no RGB), a PNG named .JPEG, and a JPEG with bytes after its end
    marker (the region decoder cannot tell that from a cut file) go the whole-file way, counted."""
    if kind == "png":
        buf = io.BytesIO()
        Image.open(io.BytesIO(photo_jpeg("coffee", (470, 390)))).save(buf, format="PNG")
        data = buf.getvalue()
    elif kind == "cmyk":
        data = photo_jpeg("coffee", (470, 390), mode="CMYK")
    else:
        data = photo_jpeg("coffee", (470, 390)) + b"camera maker's trailer"
    reset_decode_stats()
    w, h, reason = transforms.read_header(data)
    rw, rh = resized_size(w, h, 256)
    got = window_of_resized(data, (w, h), reason, (rw, rh), 20, 10, 227, 227, True)
    assert np.array_equal(_hwc(got), _pil_window(data, (rw, rh), 20, 10, 227, 227, True))
    stats = decode_stats()
    assert stats["region"] == 0 and stats["fallback"] == 1
    assert stats["fallback_reasons"] == {{"cmyk": "cmyk", "png": "not_jpeg"}.get(kind, "binding_error"): 1}


@needs_ext
def test_a_cut_file_is_refused_whatever_the_crop_as_the_whole_file_path_refuses_it():
    """A region decode stops at the region's last row, so it cannot see a file cut below it; it refuses
    any file without its end-of-image marker, and the whole-file path's verdict applies (PIL: a
    truncated image, which the stream counts as corrupt), the same for a crop at the top as at the
    bottom."""
    data = photo_jpeg("astronaut", (470, 390))
    cut = data[: len(data) * 2 // 3]
    with pytest.raises(ValueError, match="end-of-image marker"):
        _jpeg.decode_region(cut, 0, 0, 50, 50)
    w, h, reason = transforms.read_header(cut)
    rw, rh = resized_size(w, h, 256)
    for y0 in (0, rh - 227):
        with pytest.raises(OSError, match="truncated"):
            window_of_resized(cut, (w, h), reason, (rw, rh), 0, y0, 227, 227)


@needs_ext
def test_bad_geometry_is_an_error_naming_it():
    data = photo_jpeg("coffee", (470, 390))
    with pytest.raises(ValueError, match=r"region 100x50 at \(400, 0\) is outside the 470x390 image"):
        _jpeg.decode_region(data, 400, 0, 100, 50)
    with pytest.raises(ValueError, match=r"window 227x227 at \(100, 0\) is not inside the 308x256 resized image"):
        _jpeg.decode_resized_window(data, 470, 390, 308, 256, 100, 0, 227, 227, False)
    with pytest.raises(ValueError, match=r"box 300x300 at \(200, 100\) is not inside the 470x390 image"):
        _jpeg.decode_resized_window(data, 300, 300, 224, 224, 0, 0, 224, 224, False, 200, 100, 470, 390)
    with pytest.raises(ValueError, match="bytes of pixels for a 470x390 RGB image"):
        _jpeg.resized_window(b"\0" * 100, 470, 390, 308, 256, 0, 0, 227, 227, False)


@needs_ext
def test_the_centre_protocols_decode_only_the_centre_with_the_pixels_of_the_whole_file_path():
    """``center`` and ``flip`` evaluation: their one window (and its mirror) from the region, against the
    same protocols' views of a whole decoded image (``from_image``, what ``--protocol all`` shares)."""
    from cnnrepro.eval.protocols import CenterViews, FlipViews, TenCropViews

    for photo, size in PHOTOS:
        data = photo_jpeg(photo, size)
        img = Image.open(io.BytesIO(data)).convert("RGB")
        for views in (CenterViews(256, 224), CenterViews(256, 227), FlipViews(256, 224), TenCropViews(256, 224)):
            reset_decode_stats()
            got = views(data)
            assert torch.equal(got, views.from_image(img)), (photo, type(views).__name__)
            # ten-crop's corners read the whole resized image: nothing to skip, decoded whole
            assert decode_stats()["region"] == (0 if isinstance(views, TenCropViews) else 1)


@needs_ext
def test_decoding_stays_correct_when_threads_share_the_extension():
    """Decoding runs without the GIL: four threads at once give each image's own pixels."""
    from concurrent.futures import ThreadPoolExecutor

    datas = [photo_jpeg(p, s, quality=q) for p, s in PHOTOS for q in (80, 95)]

    def one(d):
        w, h, _ = transforms.read_header(d)
        rw, rh = resized_size(w, h, 300)
        return hashlib.sha256(_jpeg.decode_resized_window(d, w, h, rw, rh, 10, 20, 224, 224, False)).hexdigest()

    alone = [one(d) for d in datas]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(one, datas * 4))
    assert together == alone * 4
