"""ImageNetV2 folders (data/ilsvrc.py): class folders named by the integer class index (the
release's code/make_imagenet_folders.py: folder str(label)), read in place or converted to shards.
The label is int(folder name): torchvision's ImageFolder, sorting "0".."11" as strings ("10" < "2"),
would give 10 of these 12 folders another class's label."""

import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from cnnrepro.data.datamodule import DataConfigError, ImageNetDataModule
from cnnrepro.data.ilsvrc import SourceError, detect_source
from cnnrepro.data.imagefolder import folder_manifest
from cnnrepro.data.stream import EvalStream
from cnnrepro.data.transforms import CenterCrop

CLASSES = 12  # "0".."11": string order 0,1,10,11,2,... differs from the integers from "10" on


def build_v2(root, classes=CLASSES, per_class=2):
    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / str(c)
        d.mkdir(parents=True)
        for i in range(per_class):
            # the class drawn into the pixels: the image tells which folder it came from
            a = np.full((20, 24, 3), 10 * c, dtype=np.uint8) + rng.integers(0, 3, (20, 24, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="JPEG", quality=95)
            (d / f"{i}.jpeg").write_bytes(buf.getvalue())
    return root


@pytest.fixture
def v2(tmp_path):
    return build_v2(tmp_path / "imagenetv2-matched-frequency-format-val")


def _labels_by_folder(groups):
    return [(it.path.split("/")[0], label) for g in groups for it, label in g.files]


def test_labels_are_the_integer_folder_names_not_their_string_order(v2):
    src = detect_source(v2)
    assert src.form == "imagenetv2" and src.eval_set == "imagenetv2-matched-frequency"
    assert list(src.splits) == ["val"]
    manifest, groups = folder_manifest(v2, files_per_group=5)
    assert manifest["eval_set"] == "imagenetv2-matched-frequency" and len(manifest["classes"]) == CLASSES
    pairs = _labels_by_folder(groups["val"])
    assert len(pairs) == 2 * CLASSES and all(int(folder) == label for folder, label in pairs)
    assert sorted(str(c) for c in range(CLASSES)) != [str(c) for c in range(CLASSES)]  # the orders do differ

    # through the stream: each image's label is the class drawn into its pixels
    ds = EvalStream(groups["val"], batch_size=7, transform=CenterCrop(16, 16))
    for x, y, _ in ds:
        assert torch.equal((x.float().mean(dim=(1, 2, 3)) / 10).round().long(), y)


def test_the_datamodule_names_the_v2_set_in_place_and_as_shards(v2, tmp_path):
    from cnnrepro.data.shards import write_shards

    dm = ImageNetDataModule(root=str(v2), batch_size=4, num_workers=0, resize=16, crop=16, mean=[0, 0, 0])
    assert dm.split_name("val") == "imagenetv2-matched-frequency" and dm.num_classes == CLASSES
    with pytest.raises(DataConfigError, match="no training split"):
        dm.setup("fit")
    # no mean to subtract: refused when the data is set up, unless --weights' own mean/std replaced it
    dm = ImageNetDataModule(root=str(v2), batch_size=4, num_workers=0, resize=16, crop=16)
    with pytest.raises(DataConfigError, match="imagenetv2-matched-frequency is a test set.*--data.mean"):
        dm.setup("validate")
    from cnnrepro.lit.weights import WeightsNormalize

    dm.normalize = WeightsNormalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # what lit/cli.py wires
    dm.setup("validate")

    m = write_shards(v2, tmp_path / "shards", samples_per_shard=5, workers=1, progress=False)
    assert m["eval_set"] == "imagenetv2-matched-frequency" and m["val"]["samples"] == 2 * CLASSES
    dm = ImageNetDataModule(root=str(tmp_path / "shards"), batch_size=5, num_workers=0, resize=16, crop=16,
                            mean=[0, 0, 0])
    assert dm.split_name("val") == "imagenetv2-matched-frequency"
    dm.setup("validate")
    for x, y, _ in dm.val_dataloader():
        assert torch.equal((x.float().mean(dim=(1, 2, 3)) / 10).round().long(), y)


def test_a_v2_folder_that_is_not_plainly_named_is_refused_in_one_line(tmp_path):
    for bad, words in [("abc", "'abc'"), ("007", "'007'"), ("1000", "outside ILSVRC-2012's 0..999")]:
        root = build_v2(tmp_path / bad / "imagenetv2-top-images-format-val", classes=3, per_class=1)
        (root / bad).mkdir()
        with pytest.raises(SourceError, match=words) as e:
            detect_source(root)
        assert "\n" not in str(e.value)
    # which of the three sets is it? their numbers differ by points: the folder name must say
    root = build_v2(tmp_path / "v2copy", classes=3, per_class=1)
    with pytest.raises(SourceError, match="does not say which"):
        detect_source(root)
    link = tmp_path / "imagenetv2-threshold0.7-format-val"
    os.symlink(root, link)
    assert detect_source(link).eval_set == "imagenetv2-threshold0.7"  # the symlink's name counts


def test_real_labels_are_refused_on_v2(v2, tmp_path):
    real = tmp_path / "real.json"
    real.write_text(json.dumps([[0]] * 50_000))
    with pytest.raises(DataConfigError, match="ReaL labels the ILSVRC-2012 validation images only.*imagenetv2"):
        ImageNetDataModule(root=str(v2), batch_size=4, num_workers=0, resize=16, crop=16, mean=[0, 0, 0],
                           real_labels=str(real))
