"""Every protocol against an independent reference computed here, on real JPEG photographs.

The photographs are scikit-image's bundled ones (no download), written as JPEGs of varied sizes:
odd sizes, shorter sides >= 512 (which the old reduced-size decoding changed), sizes whose
resized long side has a fraction >= .5 (truncated by torchvision, rounded by the old code) and
margins of 4k + 3 pixels (where rounding a centre half-to-even and flooring it differ).

The references use torchvision's own transforms (``Resize``, ``CenterCrop``, ``TenCrop``) or plain
tensor slicing and a float64 softmax average; the protocols must give the same pixels, the same
scores and the same top-1/top-5, image by image.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms as T

from coord_images import coord_png, origin

from cnnrepro.data.stream import ShardInfo
from cnnrepro.data.transforms import CenterCrop, BatchNormalize
from cnnrepro.eval.protocols import build_protocol

# (photo, width, height): odd sizes; 333x257 -> 331.7 (long side truncated to 331; the old
# rounding gave 332), then a 107 px margin to a 224 crop (53.5: half-to-even 54, floor 53);
# shorter sides >= 512 (full-size decode vs the old DCT-reduced one); portrait and landscape
SIZES = [
    ("chelsea", 333, 257), ("coffee", 500, 375), ("rocket", 641, 513), ("astronaut", 517, 1031),
    ("motorcycle", 1023, 767), ("hubble", 257, 333), ("retina", 700, 519), ("camera", 389, 311),
]
LOADERS = {"chelsea": "chelsea", "coffee": "coffee", "rocket": "rocket", "astronaut": "astronaut",
           "motorcycle": "stereo_motorcycle", "hubble": "hubble_deep_field", "retina": "retina", "camera": "camera"}
MEAN, STD = [124.0, 116.0, 104.0], [58.0, 57.0, 57.0]


def _photo(name: str) -> Image.Image:
    import skimage.data

    a = getattr(skimage.data, LOADERS[name])()
    a = a[0] if isinstance(a, tuple) else a
    return Image.fromarray(np.asarray(a))


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("jpegs")
    paths = []
    for i, (name, w, h) in enumerate(SIZES):
        img = _photo(name)  # "camera" is grayscale: a 1-channel JPEG, as ImageNet has some
        p = root / f"{i:02d}_{name}_{w}x{h}.JPEG"
        img.resize((w, h), Image.BICUBIC).save(p, format="JPEG", quality=90)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def shards(jpegs, tmp_path_factory) -> list[ShardInfo]:
    """The same files, byte for byte, in real WebDataset shards (labels 0..7)."""
    import webdataset as wds

    root = tmp_path_factory.mktemp("ref_shards")
    out = []
    for k, chunk in enumerate((jpegs[:3], jpegs[3:])):
        path = root / f"val-{k:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for p in chunk:
                sink.write({"__key__": p.stem, "jpg": p.read_bytes(), "cls": str(jpegs.index(p))})
        out.append(ShardInfo(str(path), len(chunk)))
    return out


def _pil(path: Path) -> Image.Image:
    # torchvision's ImageFolder loader: open and convert to RGB, full-size decode
    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


def _uint8(img: Image.Image) -> torch.Tensor:
    return T.PILToTensor()(img)


class TinyNet(nn.Module):
    """A small random-init convnet with global pooling (runs at any input size)."""

    def __init__(self, classes: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 7, stride=4)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv(x))))
        return self.fc(x.mean(dim=(2, 3))) * 3.0  # scaled so posteriors are far from uniform


def _norm(x: torch.Tensor) -> torch.Tensor:
    """The reference's own normalisation of uint8 views (any leading dims)."""
    m = torch.tensor(MEAN).view(3, 1, 1)
    s = torch.tensor(STD).view(3, 1, 1)
    return (x.float() - m) / s


def _run_protocol(p, shards, model, workers: int = 2):
    """(log scores, labels, sample indices) of a protocol over the shards: its own stream with
    real loader workers, the module's normalisation, ``predict``."""
    norm = BatchNormalize(MEAN, STD)
    out, ys, idx = [], [], []
    ds = p.stream(shards, batch_size=32, rank=0, world_size=1, num_workers=workers)
    for x, y, i in DataLoader(ds, batch_size=None, num_workers=workers):
        x = [norm(v, train=False) for v in x] if isinstance(x, list) else norm(x, train=False)
        out.append(p.predict(model, x))
        ys.append(y)
        idx.append(i)
    order = torch.cat(idx).argsort()
    return torch.cat(out)[order], torch.cat(ys)[order], torch.cat(idx)[order]


def _topk_hits(scores: torch.Tensor, y: torch.Tensor, k: int) -> list[bool]:
    return [bool(v) for v in (scores.topk(k, dim=1).indices == y[:, None]).any(1)]


def _assert_same_ranking(got: torch.Tensor, want_log: torch.Tensor, y: torch.Tensor):
    """Same scores (to float rounding), same top-1 and top-5 per image, same sample count."""
    assert got.shape == want_log.shape and got.shape[0] == len(SIZES)
    torch.testing.assert_close(got.double(), want_log.double(), rtol=0, atol=2e-5)
    assert got.argmax(1).tolist() == want_log.argmax(1).tolist()
    assert _topk_hits(got, y, 5) == _topk_hits(want_log, y, 5)
    assert got.topk(5, 1).indices.tolist() == want_log.topk(5, 1).indices.tolist()


def _ref_log_mean_softmax(views_logits: list[torch.Tensor]) -> torch.Tensor:
    """log of the softmax averaged over views, in float64 (no underflow at these logit sizes)."""
    return torch.stack([F.softmax(v.double(), -1) for v in views_logits]).mean(0).log()


# -- the pixels -----------------------------------------------------------------------------------


@pytest.mark.parametrize("resize,crop", [(256, 224), (292, 256), (256, 227)])
def test_center_pixels_are_torchvisions_resize_and_center_crop(jpegs, resize, crop):
    ref = T.Compose([T.Resize(resize), T.CenterCrop(crop)])
    p = build_protocol("center", crop=crop, resize=resize)
    fit_eval = CenterCrop(resize=resize, crop=crop)  # the datamodule's per-epoch validation transform
    for path in jpegs:
        want = _uint8(ref(_pil(path)))
        data = path.read_bytes()
        got = p.transform(data)
        assert got.shape == (1, 3, crop, crop)
        assert torch.equal(got[0], want), f"{path.name}: center protocol pixels differ from torchvision's"
        assert torch.equal(fit_eval(data), want), f"{path.name}: CenterCrop pixels differ from torchvision's"
        # and torchvision's ToTensor is our uint8 / 255, bit for bit
        assert torch.equal(got[0].float() / 255, T.ToTensor()(ref(_pil(path))))


def test_reduced_decoding_is_opt_in_and_recorded(jpegs):
    big = next(p for p in jpegs if "1023x767" in p.name)
    data = big.read_bytes()
    full = build_protocol("center", crop=224, resize=256)
    assert full.params["preprocessing"]["decode"] == "full"
    want = _uint8(T.Compose([T.Resize(256), T.CenterCrop(224)])(_pil(big)))
    assert torch.equal(full.transform(data)[0], want)
    fast = build_protocol("center", crop=224, resize=256, reduced_decode=True)
    assert fast.params["preprocessing"]["decode"] == "jpeg_draft"
    assert not torch.equal(fast.transform(data)[0], want)  # other pixels: hence opt-in, and recorded
    for name in ("tencrop", "dense", "multicrop150", "multiscale_fc"):
        kw = {"scales": [256]} if name == "dense" else {}
        assert build_protocol(name, crop=224, resize=256, **kw).params["preprocessing"]["decode"] == "full"


# -- ten-crop --------------------------------------------------------------------------------------


def _ref_tencrop_views(path: Path, variant: str) -> torch.Tensor:
    img = _pil(path)
    if variant == "alexnet":  # AlexNet: the central 256 square, its ten 224 crops
        crops = T.Compose([T.Resize(256), T.CenterCrop(256), T.TenCrop(224)])(img)
        return torch.stack([_uint8(c) for c in crops])
    if variant == "torchvision":
        return torch.stack([_uint8(c) for c in T.Compose([T.Resize(256), T.TenCrop(224)])(img)])
    # fb.resnet.torch (datasets/transforms.lua): Scale(256) bicubic; TenCrop: for the image and its
    # mirror image, the centre at ceil((w - 224) / 2) and the four corners
    t = _uint8(T.Resize(256, interpolation=T.InterpolationMode.BICUBIC)(img))
    h, w = t.shape[-2:]
    out = []
    for im in (t, t.flip(-1)):
        x1, y1 = math.ceil((w - 224) / 2), math.ceil((h - 224) / 2)
        for x0, y0 in ((x1, y1), (0, 0), (w - 224, 0), (0, h - 224), (w - 224, h - 224)):
            out.append(im[:, y0:y0 + 224, x0:x0 + 224])
    return torch.stack(out)


@pytest.mark.parametrize("variant", ["alexnet", "torchvision", "fb"])
def test_tencrop_matches_an_independent_reference(jpegs, shards, variant):
    model = TinyNet().eval()
    p = build_protocol("tencrop", crop=224, resize=256, tencrop_variant=variant)
    assert p.params["variant"] == variant and p.views == 10
    got, y, idx = _run_protocol(p, shards, model)
    assert idx.tolist() == list(range(len(SIZES)))  # every image once
    with torch.no_grad():
        logits = [model(_norm(_ref_tencrop_views(path, variant))) for path in jpegs]
    if variant == "fb":
        # train.lua computeScore: "Sum over crops" of the logits, then topk
        summed = torch.stack([lg.double().sum(0) for lg in logits])
        assert p.params["combine"] == "logit_sum"
        _assert_same_ranking(got, F.log_softmax(summed / 10, 1), y)
        assert got.topk(5, 1).indices.tolist() == summed.topk(5, 1).indices.tolist()
    else:  # AlexNet Sec. 4.1: the softmax averaged over the ten views
        want = torch.stack([_ref_log_mean_softmax(list(lg)) for lg in logits])
        _assert_same_ranking(got, want, y)


def test_underflowing_posteriors_still_rank_right():
    """Two views whose top class leads by ~270: every other float32 posterior is exactly 0, so the
    old float32 average made top-5 an arbitrary tie-break. The mean posterior's true order is
    computed here in closed form: p_c ~ exp(v1_c - 300) + exp(v2_c - 300)."""
    table = torch.tensor([[300.0, 1, 50, 20, 40, 30],  # view 0's logits
                          [300.0, 60, 2, 20, 10, 30]])  # view 1's logits

    class Lookup(nn.Module):  # the view's index is written in its pixels
        def forward(self, x):
            return table[x[:, 0, 0, 0].long()]

    x = torch.zeros(1, 2, 3, 2, 2)
    x[0, 1] = 1.0
    p = build_protocol("tencrop", crop=224, resize=256)
    scores = p.predict(Lookup(), x)
    # true order: 0, then 1 (60), 2 (50), 4 (40), 5 (30 twice), 3 (20 twice)
    assert scores[0].argsort(descending=True).tolist() == [0, 1, 2, 4, 5, 3]
    y = torch.tensor([5])
    assert _topk_hits(scores, y, 5) == [True]
    assert _topk_hits(scores, torch.tensor([3]), 5) == [False]
    # the old computation, for the record: float32 posteriors tie at 0 for every class but 0
    old = F.softmax(table, 1).mean(0)
    assert (old[1:] == 0).all()
    # logit averaging (fb) ranks by the mean logit: 0, 1 (31), 5 (30), 2 (26), 4 (25), 3 (20)
    fb = build_protocol("tencrop", crop=224, resize=256, tencrop_variant="fb")
    assert fb.predict(Lookup(), x)[0].argsort(descending=True).tolist() == [0, 1, 5, 2, 4, 3]


# -- VGG multi-crop, multi-crop + dense, ResNet's fully-convolutional multi-scale ------------------


def _grid(length: int, size: int) -> list[int]:
    # 5 offsets from one edge to the other, rounded half to even (as the protocol documents)
    return [int(round(v)) for v in np.linspace(0, length - size, 5)]


def _ref_multicrop150_views(path: Path, scales, crop: int) -> torch.Tensor:
    views = []
    for q in scales:
        t = _uint8(T.Resize(q)(_pil(path)))
        h, w = t.shape[-2:]
        crops = [t[:, y:y + crop, x:x + crop] for y in _grid(h, crop) for x in _grid(w, crop)]
        views += crops + [c.flip(-1) for c in crops]
    return torch.stack(views)


def _ref_dense(model, path: Path, scales, mirror: bool) -> torch.Tensor:
    """VGG Sec. 3.2 / ResNet Sec. 3.4 with a global-pooling net: the whole resized image (and its
    mirror), softmax averaged over the mirror, then over the scales; log of the result."""
    per_scale = []
    for q in scales:
        t = _norm(_uint8(T.Resize(q)(_pil(path))))
        v = torch.stack([t, t.flip(-1)]) if mirror else t[None]
        per_scale.append(F.softmax(model(v).double(), -1).mean(0))
    return torch.stack(per_scale).mean(0).log()


SCALES150, CROP150 = [128, 160, 192], 128  # three Qs (VGG: 256, 384, 512 and 224 crops; smaller here for speed)


@pytest.mark.slow  # 2 x 1200 crops through a small net: ~10 s on 2 shared cores
def test_multicrop150_matches_an_independent_reference(jpegs, shards):
    model = TinyNet().eval()
    p = build_protocol("multicrop150", crop=CROP150, resize=256, scales=SCALES150)
    assert p.views == 150 and p.params["views"] == 150 and p.params["scales"] == SCALES150
    got, y, idx = _run_protocol(p, shards, model)
    assert idx.tolist() == list(range(len(SIZES)))
    with torch.no_grad():
        want = torch.stack([_ref_log_mean_softmax(list(model(_norm(_ref_multicrop150_views(path, SCALES150, CROP150)))))
                            for path in jpegs])
    _assert_same_ranking(got, want, y)


@pytest.mark.slow
def test_multicrop150_plus_dense_averages_the_two_posteriors(jpegs, shards):
    model = TinyNet().eval()
    p = build_protocol("multicrop150+dense", crop=CROP150, resize=256, scales=SCALES150)
    got, y, idx = _run_protocol(p, shards, model, workers=1)
    assert idx.tolist() == list(range(len(SIZES)))
    with torch.no_grad():
        want = []
        for path in jpegs:
            mc = F.softmax(model(_norm(_ref_multicrop150_views(path, SCALES150, CROP150))).double(), -1).mean(0)
            dense = _ref_dense(model, path, SCALES150, mirror=True).exp()
            want.append(((mc + dense) / 2).log())  # VGG Sec. 4.3: "averaging their softmax outputs"
    _assert_same_ranking(got, torch.stack(want), y)


@pytest.mark.slow  # whole images up to 640 px on the shorter side
def test_multiscale_fc_matches_an_independent_reference(jpegs, shards):
    model = TinyNet().eval()
    p = build_protocol("multiscale_fc", crop=224, resize=256)
    assert p.params["scales"] == [224, 256, 384, 480, 640] and p.params["mirror"] is False
    got, y, idx = _run_protocol(p, shards, model, workers=1)
    assert idx.tolist() == list(range(len(SIZES)))
    with torch.no_grad():
        want = torch.stack([_ref_dense(model, path, [224, 256, 384, 480, 640], mirror=False) for path in jpegs])
    _assert_same_ranking(got, want, y)


def test_multicrop150_grid_geometry():
    # 300 x 260 at Q = 260 (no resampling): x offsets 0, 18.25, 36.5, 54.75, 73 -> 0, 18, 36, 55, 73
    p = build_protocol("multicrop150", crop=227, resize=260, scales=[260, 280, 300])
    views = p.transform(coord_png(300, 260))
    assert views.shape == (150, 3, 227, 227)
    first = views[:50]
    xs, ys = [0, 18, 36, 55, 73], [0, 8, 16, 25, 33]
    assert [origin(v) for v in first[:25]] == [(x, y) for y in ys for x in xs]
    for v, m in zip(first[:25], first[25:]):
        assert torch.equal(m, v.flip(-1))


def test_new_protocols_refuse_bad_settings():
    from cnnrepro.eval.protocols import ProtocolError

    with pytest.raises(ProtocolError, match="--protocol_scales"):
        build_protocol("multicrop150", crop=224, resize=256, scales=[256, 384])
    with pytest.raises(ProtocolError, match="--protocol_scales"):
        build_protocol("multiscale_fc", crop=224, resize=256, scales=[200, 256])
    with pytest.raises(ProtocolError, match="--protocol_tencrop_variant"):
        build_protocol("center", crop=224, resize=256, tencrop_variant="fb")
