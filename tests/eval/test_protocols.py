"""Test protocols: crop geometry and averaging on hand-built images, dense = center at the training
size, and every validation image exactly once under every protocol (real shards, real workers)."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from coord_images import coord_png, origin

from cnnrepro.data.stream import ShardInfo
from cnnrepro.eval.protocols import (
    PROTOCOLS,
    DenseViews,
    MultiCrop144Views,
    ProtocolError,
    TenCropViews,
    average_views,
    build_protocol,
    dense_posteriors,
)


def test_tencrop_cuts_corners_and_centre_of_the_central_square_and_mirrors_them():
    # 300 x 260: the shorter side is already 260, so no resampling blurs the coordinates
    views = TenCropViews(resize=260, crop=227)(coord_png(300, 260))
    assert views.shape == (10, 3, 227, 227) and views.dtype == torch.uint8
    # AlexNet Sec. 2: central 260 square starts at x = 20; Sec. 4.1: its 4 corners and centre
    assert [origin(v) for v in views[:5]] == [(20, 0), (53, 0), (20, 33), (53, 33), (36, 16)]
    for v, m in zip(views[:5], views[5:]):
        assert torch.equal(m, v.flip(-1))  # the reflections, in the same order


def test_tencrop_of_the_whole_image_when_asked():
    # torchvision's TenCrop: five crops of the image, then five crops of its mirror image; the
    # centre offsets round half to even: (300 - 227) / 2 = 36.5 -> 36, (260 - 227) / 2 = 16.5 -> 16
    views = TenCropViews(resize=260, crop=227, variant="torchvision")(coord_png(300, 260))
    assert [origin(v) for v in views[:5]] == [(0, 0), (73, 0), (0, 33), (73, 33), (36, 16)]
    # the mirror image's top-left crop is the mirror of the top-right one; its centre crop sits at
    # 36 in mirrored coordinates, i.e. x = 300 - 36 - 227 = 37: not the mirror of the centre crop
    assert torch.equal(views[5], views[1].flip(-1)) and torch.equal(views[6], views[0].flip(-1))
    assert origin(views[9].flip(-1)) == (37, 16)
    # fb.resnet.torch: ceil((w - size) / 2) for the centre; bicubic resize (the size here is unchanged)
    fb = TenCropViews(resize=260, crop=227, variant="fb")(coord_png(300, 260))
    assert [origin(v) for v in fb[:5]] == [(0, 0), (73, 0), (0, 33), (73, 33), (37, 17)]
    assert origin(fb[9].flip(-1)) == (36, 17)
    with pytest.raises(ProtocolError, match="--protocol_tencrop_variant"):
        TenCropViews(resize=260, crop=227, variant="square")


def test_center_and_flip_views():
    p = build_protocol("flip", crop=200, resize=260)
    views = p.transform(coord_png(300, 260))
    assert views.shape == (2, 3, 200, 200)
    assert origin(views[0]) == (50, 30) and torch.equal(views[1], views[0].flip(-1))
    c = build_protocol("center", crop=200, resize=260).transform(coord_png(300, 260))
    assert c.shape == (1, 3, 200, 200) and torch.equal(c[0], views[0])


def test_center_crop_ratio_sets_the_shorter_side():
    p = build_protocol("center", crop=224, resize=256, crop_ratio=0.875)
    assert p.params["resize"] == 256 and p.params["crop"] == 224
    p = build_protocol("center", crop=224, resize=256, crop_ratio=0.8)
    assert p.params["resize"] == 280
    assert p.transform(coord_png(400, 300)).shape == (1, 3, 224, 224)
    with pytest.raises(ProtocolError, match="protocol_crop_ratio"):
        build_protocol("center", crop=224, resize=256, crop_ratio=1.5)
    with pytest.raises(ProtocolError, match="protocol_crop_ratio"):
        build_protocol("dense", crop=224, resize=256, crop_ratio=0.875)


def test_multicrop144_geometry_landscape_and_portrait():
    # scale 300 = the shorter side: the first scale's 36 views are exact coordinates
    mc = MultiCrop144Views(scales=(300, 320, 340, 360), crop=100)
    views = mc(coord_png(400, 300))
    assert views.shape == (144, 3, 100, 100) and mc.num_views == 144
    first = views[:36]  # scale 300: 3 squares x (6 crops + 6 mirrors)
    for sq, x0 in enumerate((0, 50, 100)):  # left, centre, right 300x300 squares
        six = first[12 * sq: 12 * sq + 6]
        want = [(x0, 0), (x0 + 200, 0), (x0, 200), (x0 + 200, 200), (x0 + 100, 100)]
        assert [origin(v) for v in six[:5]] == want
        for v, m in zip(six, first[12 * sq + 6: 12 * sq + 12]):
            assert torch.equal(m, v.flip(-1))
    # the resized square is PIL's resize of the square
    sq = Image.open(io.BytesIO(coord_png(400, 300))).convert("RGB").crop((50, 0, 350, 300))
    want = torch.from_numpy(np.array(sq.resize((100, 100), Image.BILINEAR))).permute(2, 0, 1)
    assert torch.equal(first[12 + 5], want)
    # portrait: top, centre, bottom squares
    pviews = mc(coord_png(300, 400))
    assert [origin(pviews[12 * i]) for i in range(3)] == [(0, 0), (0, 50), (0, 100)]


def test_dense_views_whole_image_per_scale_with_mirror():
    out = DenseViews(scales=(260, 300))(coord_png(300, 260))
    assert [tuple(t.shape) for t in out] == [(2, 3, 260, 300), (2, 3, 300, 346)]
    assert origin(out[0][0]) == (0, 0) and torch.equal(out[0][1], out[0][0].flip(-1))


class MeanColour(nn.Module):
    """logits = W @ (mean R, mean G, mean B): a net whose posteriors we can compute by hand."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(3))

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


def test_softmax_is_averaged_over_views_not_logits():
    # one image, two views: a red one and a green one (constant colours)
    red = torch.zeros(3, 4, 4)
    red[0] = 2.0
    green = torch.zeros(3, 4, 4)
    green[1] = 4.0
    x = torch.stack([red, green]).unsqueeze(0)  # 1 x 2 x 3 x 4 x 4
    probs = average_views(MeanColour(), x, max_batch=1).exp()  # forwards split in chunks of one view
    e = np.exp
    p_red = np.array([e(2), 1, 1]) / (e(2) + 2)
    p_green = np.array([1, e(4), 1]) / (e(4) + 2)
    np.testing.assert_allclose(probs[0].numpy(), (p_red + p_green) / 2, rtol=1e-6)
    # and not the softmax of the averaged logits
    assert not np.allclose(probs[0].numpy(), F.softmax(torch.tensor([1.0, 2.0, 0.0]), 0).numpy())


def test_dense_averages_score_map_then_mirror_then_scales():
    class ScoreMap(nn.Module):  # 1x1 conv "classifier" on each pixel: score map = the image itself
        def forward(self, x):
            return x

    a = torch.zeros(1, 2, 3, 1, 2)  # one image, (view, mirror), 3 classes, 1 x 2 map
    a[0, 0, :, 0, 0] = torch.tensor([2.0, 0, 0])
    a[0, 0, :, 0, 1] = torch.tensor([0.0, 2, 0])  # spatial mean of view 0: (1, 1, 0)
    a[0, 1] = a[0, 0].flip(-1)  # the mirror has the same spatial mean
    b = torch.zeros(1, 2, 3, 2, 2)
    b[0, :, 2] = 3.0  # second scale: class 2 everywhere
    probs = dense_posteriors(ScoreMap(), [a, b]).exp().float()
    s1 = F.softmax(torch.tensor([1.0, 1.0, 0.0]), 0)
    s2 = F.softmax(torch.tensor([0.0, 0.0, 3.0]), 0)
    torch.testing.assert_close(probs[0], (s1 + s2) / 2)


def _png_tensor(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)


@pytest.mark.slow  # AlexNet's 61M-parameter init and its fully-convolutional copy: ~10 s on 2 cores
def test_dense_equals_center_on_an_image_of_exactly_the_training_size():
    from cnnrepro.models import create_model

    torch.manual_seed(0)
    model = create_model("alexnet", num_classes=10).eval()  # has to_fully_conv(); trains at 227
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (227, 227, 3), dtype=np.uint8)).save(buf, format="PNG")
    data = buf.getvalue()
    center = build_protocol("center", crop=227, resize=227)
    dense = build_protocol("dense", crop=227, resize=227, scales=[227], dense_mirror=False)
    xc = center.transform(data).unsqueeze(0).float()  # 1 x 1 x 3 x 227 x 227
    xd = [t.unsqueeze(0).float() for t in dense.transform(data)]
    pc, pd = center.predict(model, xc).exp(), dense.predict(model, xd).exp()
    torch.testing.assert_close(pd, pc, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(pc[0].float(), F.softmax(model(xc[0]), 1)[0])
    # with the mirror, dense = flip at this size
    flip = build_protocol("flip", crop=227, resize=227)
    dense_m = build_protocol("dense", crop=227, resize=227, scales=[227])
    torch.testing.assert_close(
        dense_m.predict(model, [t.unsqueeze(0).float() for t in dense_m.transform(data)]).exp(),
        flip.predict(model, flip.transform(data).unsqueeze(0).float()).exp(), rtol=1e-4, atol=1e-6)
    # a larger scale gives a score map (2 x 2 at 259 = 227 + 32: the net's stride is 32)
    fc = dense.fully_conv(model)
    assert fc(torch.zeros(1, 3, 259, 259)).shape == (1, 10, 2, 2)
    assert dense.fully_conv(model) is fc  # cached while the weights are unchanged
    with torch.no_grad():
        next(model.parameters()).mul_(1.0)
    assert dense.fully_conv(model) is not fc  # rebuilt once they change


def test_dense_runs_global_pooling_nets_directly_and_refuses_fixed_grids():
    p = build_protocol("dense", crop=32, resize=32, scales=[32, 48])

    class GlobalPool(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pool, self.fc = nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Linear(4, 5)

        def forward(self, x):
            return self.fc(self.pool(self.conv(x)).flatten(1))

    x = [torch.rand(1, 2, 3, 32, 40), torch.rand(1, 2, 3, 48, 60)]
    probs = p.predict(GlobalPool(), x).exp()
    assert probs.shape == (1, 5) and torch.allclose(probs.sum(1), torch.ones(1, dtype=probs.dtype))

    class FixedGrid(GlobalPool):
        def __init__(self):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(2)

    with pytest.raises(ProtocolError, match="to_fully_conv"):
        p.predict(FixedGrid(), x)

    class FlatFC(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 32 * 32, 5)

        def forward(self, x):
            return self.fc(x.flatten(1))

    with pytest.raises(ProtocolError, match="dense is undefined"):
        p.predict(FlatFC(), x)


def test_bad_protocol_settings_name_the_flag():
    with pytest.raises(ProtocolError, match="--protocol_scales"):
        build_protocol("tencrop", crop=224, resize=256, scales=[256, 288])
    with pytest.raises(ProtocolError, match="--protocol_scales"):
        build_protocol("dense", crop=224, resize=256, scales=[200])
    with pytest.raises(ProtocolError, match="--protocol "):
        build_protocol("twelvecrop", crop=224, resize=256)


# -- exactly once, real shards, real loader workers ----------------------------------------------


@pytest.fixture(scope="module")
def val_shards(tmp_path_factory):
    from cnnrepro.data.demo import build_demo_tree
    from cnnrepro.data.shards import read_manifest, write_shards

    root = tmp_path_factory.mktemp("protocols")
    build_demo_tree(root / "tree", train_per_class=1, val_per_class=2)  # 20 real validation JPEGs
    write_shards(root / "tree", root / "shards", samples_per_shard=6, workers=1, progress=False)
    m = read_manifest(root / "shards")
    return [ShardInfo(str(root / "shards" / s["name"]), s["count"]) for s in m["val"]["shards"]]


SMALL = {  # small sizes so every protocol runs in a blink; the geometry is tested above
    "center": dict(crop=32, resize=40),
    "flip": dict(crop=32, resize=40),
    "tencrop": dict(crop=32, resize=40),
    "dense": dict(crop=32, resize=40, scales=[40, 48]),
    "multicrop144": dict(crop=32, resize=40, scales=[36, 40, 44, 48]),
    "multiscale_fc": dict(crop=32, resize=40, scales=[32, 40]),
    "multicrop150": dict(crop=32, resize=40, scales=[32, 40, 48]),
    "multicrop150+dense": dict(crop=32, resize=40, scales=[32, 40, 48]),
}


@pytest.mark.parametrize("name", PROTOCOLS)
def test_every_protocol_reads_every_validation_image_exactly_once(name, val_shards):
    p = build_protocol(name, **SMALL[name])
    total = sum(s.count for s in val_shards)
    seen, batches = [], 0
    for rank in range(2):  # two ranks, two loader workers each
        ds = p.stream(val_shards, batch_size=16, rank=rank, world_size=2, num_workers=2)
        loader = DataLoader(ds, batch_size=None, num_workers=2)
        for x, y, idx in loader:
            batches += 1
            if name == "dense":
                assert isinstance(x, list) and len(x) == 2 and x[0].shape[:2] == (1, 2)
                assert min(x[0].shape[-2:]) == 40 and min(x[1].shape[-2:]) == 48
            elif name == "multiscale_fc":  # no mirror (ResNet Sec. 3.4 names none)
                assert isinstance(x, list) and [t.shape[:2] for t in x] == [(1, 1), (1, 1)]
            elif name == "multicrop150+dense":
                assert isinstance(x, list) and x[0].shape == (1, 150, 3, 32, 32)
                assert [min(t.shape[-2:]) for t in x[1:]] == [32, 40, 48] and x[1].shape[1] == 2
            else:
                assert x.shape[1:] == (p.views, 3, 32, 32) and x.dtype == torch.uint8
                assert x.shape[0] == len(y) == len(idx)
            seen += idx.tolist()
        assert len(ds) == sum(1 for _ in DataLoader(ds, batch_size=None, num_workers=2))
    assert sorted(seen) == list(range(total))  # no image twice, none missed
    if name.startswith("multicrop"):
        assert p.views == p.params["views"] == int(name[9:12])
