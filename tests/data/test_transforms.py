"""AlexNet's augmentation geometry and PCA lighting statistics (Krizhevsky et al. 2012, Sec. 2, 4.1)."""

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from cnnrepro.data.transforms import AlexNetTrain, BatchNormalize, CenterCrop, decode_rgb

from photos import PHOTOS, photo_jpeg  # tests/data/photos.py


def _jpeg_with_coordinates(w: int, h: int) -> bytes:
    """A lossless-enough image whose pixels encode their own x (red) and y (green) position."""
    xs = np.linspace(0, 255, w, dtype=np.float64)[None, :].repeat(h, 0)
    ys = np.linspace(0, 255, h, dtype=np.float64)[:, None].repeat(w, 1)
    arr = np.stack([xs, ys, np.full_like(xs, 128)], -1).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_alexnet_crops_are_227_from_the_central_256_square():
    # 512x256: after the Sec. 2 rescale (already 256 short side) the central square spans x in [128, 384)
    data = _jpeg_with_coordinates(512, 256)
    t = AlexNetTrain(resize=256, crop=227)
    rng = random.Random(0)
    xs = []
    flips = 0
    for _ in range(400):
        out = t(data, rng)
        assert out.shape == (3, 227, 227) and out.dtype == torch.uint8
        red_row = out[0, 0].float()
        flipped = red_row[0] > red_row[-1]
        flips += int(flipped)
        left_red = (red_row[-1] if flipped else red_row[0]).item()
        xs.append(round(left_red / 255 * 511))
    # left edge of every crop lies in [128, 128 + 256 - 227] = [128, 157]
    assert min(xs) >= 127 and max(xs) <= 158
    assert max(xs) - min(xs) >= 25  # offsets cover the whole allowed range, not one position
    assert 150 < flips < 250  # horizontal reflections with probability 1/2


def test_center_crop_is_the_centre_of_the_central_square():
    data = _jpeg_with_coordinates(400, 300)
    out = CenterCrop(resize=256, crop=227)(data)
    assert out.shape == (3, 227, 227)
    # image resized to 341x256; centre crop starts at x=(341-227)//2=57, y=(256-227)//2=14
    resized_w = round(400 * 256 / 300)
    x0 = (resized_w - 227) // 2
    red_left = out[0, 113, 0].item() / 255 * (resized_w - 1)
    assert abs(red_left - x0) <= 2


def test_reduced_size_decoding_keeps_the_shorter_side_above_target():
    arr = (np.random.default_rng(0).random((1200, 1600, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    img = decode_rgb(buf.getvalue(), min_side=256)
    assert min(img.size) >= 256
    assert min(img.size) < 1200  # the DCT-scaled decode really was used (1/4 scale -> 300x400)


def test_crop_larger_than_resize_is_refused():
    with pytest.raises(ValueError, match="crop"):
        AlexNetTrain(resize=224, crop=227)


def test_pca_lighting_shift_has_the_papers_covariance():
    # Sec. 4.1: shift = V (alpha * lambda), alpha ~ N(0, 0.1^2) per image. With lambda in [0,1]^2
    # units and the shift in 0..255 units, Cov(shift) = 255^2 * 0.01 * V diag(lambda01^2) V^T.
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    eigval = np.array([11000.0, 1900.0, 90.0])  # 0..255^2 units, like ImageNet's
    norm = BatchNormalize(mean=[0, 0, 0], std=[1, 1, 1], lighting_std=0.1, eigval=eigval.tolist(), eigvec=q.tolist())
    g = torch.Generator().manual_seed(0)
    shifts = norm.lighting_shift(200_000, generator=g).double().numpy()
    lam01 = eigval / 255.0**2
    expected = 255.0**2 * 0.01 * q @ np.diag(lam01**2) @ q.T
    assert np.allclose(shifts.mean(0), 0, atol=0.02)
    assert np.allclose(np.cov(shifts.T), expected, rtol=0.02, atol=1e-3)
    # the same shift is added to every pixel of an image
    x = torch.full((2, 3, 4, 4), 100, dtype=torch.uint8)
    torch.manual_seed(1)
    y = norm(x, train=True)
    assert torch.allclose(y[:, :, :1, :1].expand_as(y), y)
    assert not torch.allclose(y[0], y[1])


def test_normalisation_is_mean_subtraction_at_pixel_scale_and_no_lighting_in_eval():
    norm = BatchNormalize(mean=[120.0, 110.0, 100.0], std=[1, 1, 1], lighting_std=0.1,
                          eigval=[1.0, 1.0, 1.0], eigvec=np.eye(3).tolist())
    x = torch.full((1, 3, 2, 2), 200, dtype=torch.uint8)
    y = norm(x, train=False)
    assert y[0, :, 0, 0].tolist() == [80.0, 90.0, 100.0]


@pytest.mark.parametrize("kind", ["420", "444", "progressive", "gray", "cmyk", "png"])
def test_libjpeg_turbo_decode_is_pils_decode_and_every_fallback_is_counted(kind):
    from cnnrepro.data.transforms import decode_full, decode_stats, read_header, reset_decode_stats

    buf = io.BytesIO()
    img = Image.open(io.BytesIO(photo_jpeg("coffee", (470, 390))))
    save = {"420": dict(subsampling=2), "444": dict(subsampling=0), "progressive": dict(progressive=True)}.get(kind, {})
    img = img.convert({"gray": "L", "cmyk": "CMYK"}.get(kind, "RGB"))
    img.save(buf, format="PNG" if kind == "png" else "JPEG", quality=90, **save)
    data = buf.getvalue()
    reset_decode_stats()
    w, h, reason = read_header(data)
    assert (w, h) == (470, 390)
    assert reason == {"cmyk": "cmyk", "png": "not_jpeg"}.get(kind)
    arr = decode_full(data, reason)
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert arr.shape == ref.shape and np.array_equal(arr, ref)  # bit-identical to PIL's full decode
    stats = decode_stats()
    if reason is None:
        assert stats == {"libjpeg_turbo": 1, "region": 0, "fallback": 0, "fallback_reasons": {}}
    else:
        assert stats == {"libjpeg_turbo": 0, "region": 0, "fallback": 1, "fallback_reasons": {reason: 1}}


def _reference(family: str, data: bytes, rng: random.Random) -> np.ndarray:
    """The training crop computed the pre-binding way, independently of the code under test: PIL's
    full decode, PIL's resize of the whole image (torchvision's ``Resize`` geometry), the crops,
    the flip; for GoogLeNet's crops torchvision's own ``resized_crop`` on the PIL image (PIL's crop,
    then PIL's resize: what ``RandomResizedCrop`` does in torchvision's ImageFolder loader)."""
    import torchvision.transforms.functional as TF

    from cnnrepro.data.transforms import center_crop, resize_shorter, sample_area_aspect_crop

    img = Image.open(io.BytesIO(data)).convert("RGB")
    if family == "inception_crop":
        x0, y0, cw, ch = sample_area_aspect_crop(*img.size, (0.08, 1.0), (3 / 4, 4 / 3), rng)
        out = np.asarray(TF.resized_crop(img, y0, x0, ch, cw, [224, 224], TF.InterpolationMode.BILINEAR))
        return out[:, ::-1] if rng.random() < 0.5 else out
    if family == "alexnet":
        img, crop = center_crop(resize_shorter(img, 256), 256), 227
        x0, y0 = rng.randint(0, 256 - crop), rng.randint(0, 256 - crop)
    else:  # ResNet's scale jitter, S in [256, 480]
        s, crop = rng.randint(256, 480), 224
        img = resize_shorter(img, s)
        x0, y0 = rng.randint(0, img.size[0] - crop), rng.randint(0, img.size[1] - crop)
    out = np.asarray(img.crop((x0, y0, x0 + crop, y0 + crop)))
    return out[:, ::-1] if rng.random() < 0.5 else out


def _family(name: str, reduced_decode: bool = False):
    from cnnrepro.data.transforms import InceptionCropTrain, ScaleJitterTrain

    return {"alexnet": lambda: AlexNetTrain(reduced_decode=reduced_decode),
            "scale_jitter": lambda: ScaleJitterTrain(crop=224, scale_range=[256, 480], reduced_decode=reduced_decode),
            "inception_crop": lambda: InceptionCropTrain(crop=224, reduced_decode=reduced_decode)}[name]()


@pytest.mark.parametrize("family", ["alexnet", "scale_jitter", "inception_crop"])
def test_training_crop_is_the_full_decode_crop_on_real_photographs(family):
    """Speed never changes what the model sees: the loader's crop (only the crop's region decoded,
    cnnrepro.data._jpeg; AlexNet's and ResNet's windows resampled by PIL's own filter arithmetic, for the
    window alone) against the full-decode-then-resize-then-crop reference, bit for bit. GoogLeNet's
    crops run torchvision's own tensor resize on the region's pixels: identical too."""
    from cnnrepro.data.transforms import decode_stats, reset_decode_stats

    t = _family(family)
    reset_decode_stats()
    diffs = []
    for photo, size in PHOTOS:
        data = photo_jpeg(photo, size)
        for seed in range(12):
            ours = t(data, random.Random(seed)).permute(1, 2, 0).numpy().astype(int)
            ref = _reference(family, data, random.Random(seed)).astype(int)
            assert ours.shape == ref.shape
            diffs.append(np.abs(ours - ref))
    d = np.stack(diffs)
    print(f"{family}: max |diff| {d.max()}, mean |diff| {d.mean():.5f} over {len(diffs)} crops")
    assert d.max() == 0
    n = len(PHOTOS) * 12
    assert decode_stats() == {"libjpeg_turbo": n, "region": n, "fallback": 0, "fallback_reasons": {}}


@pytest.mark.parametrize("family", ["alexnet", "scale_jitter", "inception_crop"])
def test_dct_scaled_decoding_is_opt_in_because_it_changes_pixels(family):
    """libjpeg-turbo's DCT scaling (1/2, 1/4, 1/8) is a different downsampling from a full decode and a resize:
    the same crop (small mean difference) but not within rounding, so it is off by default."""
    assert _family(family).reduced_decode is False
    fast, full = _family(family, reduced_decode=True), _family(family)
    diffs = []
    for photo, size in PHOTOS:
        data = photo_jpeg(photo, (size[0] * 2, size[1] * 2))  # large photos: scaling applies to every crop
        for seed in range(4):
            a = fast(data, random.Random(seed)).float()
            b = full(data, random.Random(seed)).float()
            diffs.append((a - b).abs())
    d = torch.stack(diffs)
    print(f"{family} reduced_decode vs full decode: max |diff| {d.max():.0f}, mean |diff| {d.mean():.3f}")
    assert d.mean() < 4  # the same crop: a shifted or mis-scaled crop differs by tens of levels
    assert d.max() > 2 and d.mean() > 0.01  # more than the rounding tolerance above: hence opt-in


@pytest.mark.parametrize("kind", ["rgb", "gray", "cmyk", "png"])
def test_fast_crop_path_matches_pil_for_every_kind_of_file(kind):
    from cnnrepro.data.transforms import crop_resized_uint8

    rng = np.random.default_rng(1)
    base = Image.fromarray(rng.integers(0, 256, (47, 63, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
    img = {"rgb": base, "gray": base.convert("L"), "cmyk": base.convert("CMYK"), "png": base}[kind]
    buf = io.BytesIO()
    img.save(buf, format="PNG" if kind == "png" else "JPEG", quality=92)
    box = (40, 30, 340, 330)  # under 2x the output: the libjpeg-turbo + torch resize path for JPEGs
    x = crop_resized_uint8(buf.getvalue(), 224, lambda w, h: (box[0], box[1], box[2] - box[0], box[3] - box[1]))
    assert x.shape == (3, 224, 224) and x.dtype == torch.uint8
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB").resize((224, 224), Image.BILINEAR,
                                                                                  box=box), dtype=float)
    # the same pixels up to rounding; only the outermost rows/columns may differ, where PIL's filter
    # reads pixels outside the box and a tensor crop cannot
    inner = np.abs(x.permute(1, 2, 0).numpy().astype(float) - ref)[2:-2, 2:-2]
    assert inner.mean() < 0.1 and inner.max() <= 2


def test_resize_and_centre_crop_geometry_is_torchvisions_for_every_size():
    # torchvision 0.29 `Resize(s)`: long side int(s * long / short), truncated; `CenterCrop(c)`:
    # offset int(round((L - c) / 2)), half to even. A sweep of sizes over both rules' edge cases.
    from torchvision.transforms import functional as TF

    from cnnrepro.data.transforms import center_crop, resize_shorter

    rng = np.random.default_rng(0)
    sizes = [(333, 257), (257, 333), (500, 375), (641, 513), (227, 300)] + [
        tuple(int(v) for v in rng.integers(225, 700, 2)) for _ in range(60)]
    for w, h in sizes:
        img = Image.new("RGB", (w, h))
        for s in (224, 256):
            assert resize_shorter(img, s).size == TF.resize(img, s).size, (w, h, s)
    # crop offsets: the crop's top-left pixel carries its own coordinates
    for w, h in [(331, 256), (256, 331), (335, 260), (300, 227), (481, 256)] + sizes[5:25]:
        xs, ys = np.meshgrid(np.arange(w), np.arange(h))
        img = Image.fromarray(np.stack([xs % 256, ys % 256, xs // 256 + 16 * (ys // 256)], -1).astype(np.uint8))
        for c in (224, 227):
            if c > min(w, h):
                continue
            ours, ref = np.asarray(center_crop(img, c)), np.asarray(TF.center_crop(img, c))
            assert np.array_equal(ours, ref), (w, h, c)
