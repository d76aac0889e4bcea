"""timm's WebDataset reader trains and evaluates from our shards through the _info.json written
beside manifest.json (issue 13). timm's own reader, on real shards of real JPEGs."""

import json

import pytest
from test_shards import _tree

from cnnrepro.data.shards import read_manifest, write_shards


@pytest.fixture(scope="module")
def dst(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("timm")
    out = tmp / "shards"
    write_shards(_tree(tmp / "src", train=5, val=3), out, samples_per_shard=4, workers=1, progress=False)
    return out


def test_info_json_lists_every_shard_with_its_count(dst):
    m = read_manifest(dst)
    info = json.loads((dst / "_info.json").read_text())
    for ours, theirs in (("train", "train"), ("val", "validation")):
        split = info["splits"][theirs]
        assert split["filenames"] == [s["name"] for s in m[ours]["shards"]]
        assert split["shard_lengths"] == [s["count"] for s in m[ours]["shards"]]
        assert split["num_samples"] == m[ours]["samples"] == sum(split["shard_lengths"])


def test_timm_wds_reader_sees_our_validation_samples_and_labels(dst):
    from timm.data.readers.reader_wds import ReaderWds

    from cnnrepro.data.stream import ShardInfo, _shard_samples

    reader = ReaderWds(str(dst), split="validation", is_training=False)
    assert len(reader) == read_manifest(dst)["val"]["samples"]
    got = sorted(int(t) for _, t in reader)
    m = read_manifest(dst)
    ours = sorted(label for s in m["val"]["shards"] for _, _, label in _shard_samples(ShardInfo(str(dst / s["name"]), s["count"])))
    assert got == ours and len(set(got)) == 3


def _validate(root, mean):
    """Top-1/top-5 and the sample count of one validation pass of a small untrained ResNet."""
    import pytorch_lightning as pl

    from cnnrepro.data.datamodule import ImageNetDataModule
    from cnnrepro.lit.module import ClassifierModule

    pl.seed_everything(0)
    dm = ImageNetDataModule(root=str(root), batch_size=4, num_workers=0, resize=32, crop=28, mean=mean)
    model = ClassifierModule(arch="resnet18", num_classes=dm.num_classes, lr_schedule="constant", lr=0.05)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    metrics = trainer.validate(model, datamodule=dm, verbose=False)[0]
    seen = sum(len(idx) for _, _, idx in dm.val_dataloader())
    return metrics, seen, dm


def test_a_folder_with_only_timm_info_validates_like_the_manifest_with_one_note(dst, tmp_path):
    import shutil

    from cnnrepro.data.shards import TimmInfoWarning

    mean = read_manifest(dst)["rgb_stats"]["mean"]
    want, n_want, _ = _validate(dst, mean)
    info_only = tmp_path / "info_only"
    shutil.copytree(dst, info_only)
    (info_only / "manifest.json").unlink()
    with pytest.warns(TimmInfoWarning) as notes:
        got, n_got, dm = _validate(info_only, mean)
    ours = [w for w in notes if issubclass(w.category, TimmInfoWarning)]
    assert len(ours) == 1  # one note, not one per shard or per loader
    note = str(ours[0].message)
    assert "no manifest.json" in note and "NOT checked: shard sizes and sha256" in note
    assert "exactly-once validation" in note and "cnnrepro shards SRC DST" in note
    assert n_got == n_want == read_manifest(dst)["val"]["samples"] and got == want
    assert dm.num_classes == 3
    dm.setup("fit")  # a missing shard is still caught: the _info.json names every shard
    (info_only / "train-000001.tar").unlink()
    with pytest.raises(Exception, match=r"train-000001.tar: missing"):
        dm.setup("fit")


def test_timm_info_only_over_http_reads_the_same_samples(dst, tmp_path):
    import shutil

    from servers import http_server
    from test_remote import _dm, _eval_batches, _same

    served = tmp_path / "served"
    shutil.copytree(dst, served / "info_only")
    (served / "info_only" / "manifest.json").unlink()
    mean = read_manifest(dst)["rgb_stats"]["mean"]
    with http_server(served, tmp_path / "http.log") as url:
        with pytest.warns(UserWarning, match="read through timm's _info.json"):
            dm = _dm(url + "/info_only", mean=mean)
        _same(_eval_batches(dm), _eval_batches(_dm(dst)))


@pytest.mark.parametrize("info,match", [({"splits": {}}, "no 'num_classes'"),
                                        ({"num_classes": 3}, "no 'splits'"),
                                        ({"num_classes": 3, "splits": {"validation": {"filenames": ["a.tar"],
                                                                                      "shard_lengths": []}}},
                                         "'filenames' and 'shard_lengths' of equal length")])
def test_an_unusable_timm_info_is_one_clear_error(tmp_path, info, match):
    from cnnrepro.data.datamodule import ImageNetDataModule
    from cnnrepro.errors import UserError

    (tmp_path / "_info.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match=match):
        ImageNetDataModule(root=str(tmp_path), mean=[0, 0, 0])
