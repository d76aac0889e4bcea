"""The ImageFolder reader (unconverted trees) and the resolution guard of reduced-size shards."""

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cnnrepro.data.datamodule import DataConfigError, ImageNetDataModule
from cnnrepro.data.imagefolder import folder_manifest
from cnnrepro.data.shards import write_shards
from cnnrepro.data.stream import EvalStream, TrainStream
from cnnrepro.data.transforms import CenterCrop

CLASSES = ("n02", "n01", "n03")


def _img(cls: int, seed: int, w=80, h=60) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.full((h, w, 3), 40 + 70 * cls, dtype=np.int16) + rng.integers(-8, 9, (h, w, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _tree(root, train=6, val=(3, 1, 4)):
    for split in ("train", "val"):
        for c in CLASSES:
            ci = sorted(CLASSES).index(c)
            d = root / split / c
            d.mkdir(parents=True)
            n = train if split == "train" else val[ci]
            for i in range(n):
                _img(ci, 100 * ci + i + (50 if split == "val" else 0)).save(d / f"{c}_{i}.JPEG", quality=90)
    # ImageNet's odd files, which the reader converts on every read
    _img(0, 7).convert("CMYK").save(root / "train" / "n01" / "cmyk.JPEG", format="JPEG")
    _img(1, 8).convert("L").save(root / "val" / "n02" / "gray.JPEG", format="JPEG")
    _img(2, 9).save(root / "train" / "n03" / "png.JPEG", format="PNG")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return _tree(tmp_path_factory.mktemp("folder") / "imagenet")


def test_folder_reader_groups_and_manifest(tree):
    m, groups = folder_manifest(tree, files_per_group=4)
    assert [c["wnid"] for c in m["classes"]] == ["n01", "n02", "n03"]
    assert m["train"]["samples"] == 20 and m["val"]["samples"] == 9
    assert [g.count for g in groups["train"]] == [4, 4, 4, 4, 4]
    assert len({int(lab) for _, lab in groups["train"][0].files}) > 1  # groups mix classes
    assert len(m["rgb_stats"]["mean"]) == 3 and "estimated_from" in m["rgb_stats"]


@pytest.mark.parametrize("world,workers", [(1, 0), (2, 2), (3, 1)])
def test_folder_validation_exactly_once(tree, world, workers):
    m, groups = folder_manifest(tree, files_per_group=2)
    seen = Counter()
    for rank in range(world):
        ds = EvalStream(groups["val"], batch_size=2, transform=CenterCrop(32, 32), rank=rank, world_size=world,
                        num_workers=workers)
        loader = DataLoader(ds, batch_size=None, num_workers=workers)
        batches = list(loader)
        assert len(batches) == len(loader)
        for x, y, idx in batches:
            # the label is the class the pixels were drawn with (gray.JPEG: class 1 pixels in class n02)
            assert (((x.float().mean((1, 2, 3)) - 40) / 70).round().long() == y).all()
            seen.update(idx.tolist())
    assert sorted(seen) == list(range(9)) and set(seen.values()) == {1}


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_folder_training_runs_equal_steps_per_rank(tree, world):
    _, groups = folder_manifest(tree, files_per_group=8)  # 3 groups, fewer than ranks x workers
    steps = []
    for rank in range(world):
        ds = TrainStream(groups["train"], batch_size=2, transform=CenterCrop(32, 32), rank=rank, world_size=world,
                         shuffle_buffer=4)
        got = list(DataLoader(ds, batch_size=None, num_workers=2))
        assert len(got) == 20 // (2 * world) and all(x.shape == (2, 3, 32, 32) for x, _ in got)
        steps.append(len(got))
    assert len(set(steps)) == 1


def test_folder_and_shards_give_the_same_validation_batches(tree, tmp_path):
    write_shards(tree, tmp_path / "shards", samples_per_shard=4, workers=1, progress=False)
    kw = dict(batch_size=4, num_workers=0, resize=48, crop=40)
    a = ImageNetDataModule(root=str(tree), **kw)  # format auto: no manifest.json -> imagefolder
    b = ImageNetDataModule(root=str(tmp_path / "shards"), **kw)
    assert a.manifest["format"] == "imagefolder" and "format" not in b.manifest
    for (xa, ya, ia), (xb, yb, ib) in zip(a.val_dataloader(), b.val_dataloader(), strict=True):
        # the same decoded pixels; repaired files differ by one JPEG re-encoding in the shards
        assert torch.equal(ya, yb) and torch.equal(ia, ib)
        assert (xa.float() - xb.float()).abs().mean() < 2.0
    assert next(iter(a.train_dataloader()))[0].shape == (4, 3, 40, 40)


def test_not_a_tree_nor_shards_is_a_clear_error(tmp_path):
    with pytest.raises(DataConfigError, match="no manifest.json.*neither an ImageFolder tree"):
        ImageNetDataModule(root=str(tmp_path))


def test_recipe_needing_more_resolution_than_the_shards_is_refused(tree, tmp_path):
    write_shards(tree, tmp_path / "s", alexnet256=True, workers=1, progress=False)
    ImageNetDataModule(root=str(tmp_path / "s"), resize=256, crop=224)  # exactly what the shards hold: fine
    with pytest.raises(DataConfigError, match=r"--data.resize 384 .*--alexnet256.*256 px"):
        ImageNetDataModule(root=str(tmp_path / "s"), resize=384, crop=224)
    with pytest.raises(DataConfigError, match=r"--data.scale_range 512 .*--alexnet256"):
        ImageNetDataModule(root=str(tmp_path / "s"), train_transform="scale_jitter", resize=256, crop=224,
                           scale_range=[256, 512])


def test_original_shards_have_no_resolution_limit(tree, tmp_path):
    write_shards(tree, tmp_path / "s", workers=1, progress=False)
    dm = ImageNetDataModule(root=str(tmp_path / "s"), resize=512, crop=448)
    x = next(iter(dm.val_dataloader()))[0]
    assert x.shape[1:] == (3, 448, 448) and x.dtype == torch.uint8


def test_folder_reader_keeps_the_index_of_an_empty_class(tmp_path):
    root = _tree(tmp_path / "imagenet")
    for f in (root / "train" / "n02").iterdir():
        f.unlink()
    manifest, groups = folder_manifest(root)
    assert [c["wnid"] for c in manifest["classes"]] == ["n01", "n02", "n03"]
    assert manifest["empty_classes"] == {"train": [{"index": 1, "wnid": "n02"}]}
    labels = {item.wnid: label for g in groups["val"] for item, label in g.files}
    assert labels == {"n01": 0, "n02": 1, "n03": 2}
