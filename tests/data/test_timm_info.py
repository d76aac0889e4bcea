"""timm's WebDataset reader trains and evaluates from our shards through the _info.json written
beside manifest.json (issue 13). timm's own reader, on real shards of real JPEGs."""

import json

import pytest

from cnnrepro.data.shards import read_manifest, write_shards

from test_shards import _tree


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
