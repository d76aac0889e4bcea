"""AlexNet's augmentation geometry and PCA lighting statistics (Krizhevsky et al. 2012, Sec. 2, 4.1)."""

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from cnnrepro.data.transforms import AlexNetTrain, BatchNormalize, CenterCrop, decode_rgb


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


def test_inception_crop_decodes_at_reduced_scale_without_losing_the_crops_resolution():
    from cnnrepro.data.transforms import decode_for_crop

    xs = np.linspace(0, 255, 1600)[None, :].repeat(1200, 0)
    ys = np.linspace(0, 255, 1200)[:, None].repeat(1600, 1)
    arr = np.stack([xs, ys, np.full_like(xs, 128)], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=92)
    box = (400, 200, 1200, 1000)  # 800x800 crop -> 224: 1/2 scale keeps 400 px >= 224, 1/4 would keep 200
    img, b = decode_for_crop(Image.open(io.BytesIO(buf.getvalue())), box, 224)
    assert img.size == (800, 600) and b == (200, 100, 600, 500)
    fast = np.asarray(img.resize((224, 224), Image.BILINEAR, box=b), dtype=float)
    full = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB").resize((224, 224), Image.BILINEAR,
                                                                                      box=box), dtype=float)
    assert np.abs(fast - full).mean() < 1.5  # the same crop, not a shifted or blurred one
    small, b2 = decode_for_crop(Image.open(io.BytesIO(buf.getvalue())), (0, 0, 300, 300), 224)
    assert small.size == (1600, 1200) and b2 == (0, 0, 300, 300)  # a crop under 2x the output: full decode


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
