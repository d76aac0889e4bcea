"""Shards checked against their manifest (issue 17): sizes at setup, sha256 of the validation
shards before training, `cnnrepro shards --verify DST` with its cache. Real shards of real JPEGs."""

import os
import tarfile

import pytest

from cnnrepro.data import verify
from cnnrepro.data.datamodule import DataConfigError, ImageNetDataModule
from cnnrepro.errors import UserError
from cnnrepro.data.shards import write_shards
from cnnrepro.data.verify import ShardCheckError

from test_shards import _tree


@pytest.fixture
def shards(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNREPRO_CACHE", str(tmp_path / "cache"))
    src = _tree(tmp_path / "src")
    dst = tmp_path / "dst"
    write_shards(src, dst, samples_per_shard=4, workers=1, progress=False)
    return src, dst


def _relabel_in_place(shard, keep_mtime=True):
    """Change the class of the shard's first sample, keeping the shard's size (and mtime)."""
    with tarfile.open(shard) as tf:
        m = next(m for m in tf if m.name.endswith(".cls"))
        offset, old = m.offset_data, tf.extractfile(m).read()
    st = shard.stat()
    data = bytearray(shard.read_bytes())
    data[offset : offset + 1] = b"1" if old[:1] != b"1" else b"2"
    shard.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))


def _shards_cli(args, capsys):
    from cnnrepro.cli import main

    rc = main(["shards", *args])
    return rc, capsys.readouterr()


def test_verify_names_every_bad_shard_and_the_fix(shards, capsys):
    src, dst = shards
    assert _shards_cli(["--verify", str(dst)], capsys)[0] == 0
    _relabel_in_place(dst / "val-000000.tar")
    t = dst / "train-000001.tar"
    t.write_bytes(t.read_bytes()[:-1024])
    rc, out = _shards_cli(["--verify", str(dst)], capsys)
    assert rc == 1
    assert "val-000000.tar: sha256 differs" in out.err and "train-000001.tar: " in out.err
    assert "2 of 9 shards are bad" in out.err
    assert f"cnnrepro shards {src.resolve()} {dst} --samples-per-shard 4" in out.err
    # the fix it names works
    write_shards(src, dst, samples_per_shard=4, workers=1, progress=False)
    assert _shards_cli(["--verify", str(dst)], capsys)[0] == 0


def test_verify_hashes_only_shards_not_cached_as_verified(shards, monkeypatch):
    _, dst = shards
    hashed = []
    real = verify.sha256_file
    monkeypatch.setattr(verify, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    manifest = verify.read_manifest(dst)
    assert verify.verify_shards(dst, manifest) == [] and hashed == []  # the writer's hashes are cached
    _relabel_in_place(dst / "val-000001.tar")  # same size, same mtime: the ctime still changes
    problems = verify.verify_shards(dst, manifest)
    assert hashed == ["val-000001.tar"] and len(problems) == 1 and "val-000001.tar" in problems[0]
    hashed.clear()
    assert len(verify.verify_shards(dst, manifest)) == 1 and hashed == ["val-000001.tar"]  # bad ones never cached


def _dm(dst, **kw):
    return ImageNetDataModule(root=str(dst), batch_size=kw.pop("batch_size", 4), num_workers=0, resize=32, crop=28,
                              **kw)


@pytest.mark.parametrize("stage", ["fit", "validate"])
def test_damaged_validation_labels_stop_the_run_before_it_starts(shards, stage):
    _, dst = shards
    _relabel_in_place(dst / "val-000002.tar")
    dm = _dm(dst)
    with pytest.raises(ShardCheckError, match=r"val-000002.tar: sha256 differs.*cnnrepro shards .* --samples-per-shard"):
        dm.setup(stage)


def test_a_truncated_or_missing_training_shard_stops_fit_at_setup(shards):
    _, dst = shards
    t = dst / "train-000003.tar"
    t.write_bytes(t.read_bytes()[:2048])
    (dst / "train-000004.tar").unlink()
    with pytest.raises(ShardCheckError, match=r"train-000003.tar: 2048 bytes, the manifest says \d+.*"
                                              r"train-000004.tar: missing"):
        _dm(dst).setup("fit")
    _dm(dst).setup("validate")  # validation does not read the training shards


def test_intact_shards_pass_setup(shards):
    _, dst = shards
    _dm(dst).setup("fit")


@pytest.mark.parametrize("batch", [0, -4])
def test_batch_size_below_one_is_refused_naming_the_flag(shards, batch):
    with pytest.raises(DataConfigError, match=rf"--data.batch_size {batch}: .* at least 1"):
        _dm(shards[1], batch_size=batch)


def test_batch_larger_than_the_training_set_is_refused_at_setup(shards):
    with pytest.raises(DataConfigError, match=r"--data.batch_size 64 .* larger than the 21 training samples.* at most 21"):
        _dm(shards[1], batch_size=64).setup("fit")


def test_single_class_dataset_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNREPRO_CACHE", str(tmp_path / "cache"))
    write_shards(_tree(tmp_path / "src", classes=("n01",)), tmp_path / "dst", workers=1, progress=False)
    with pytest.raises(DataConfigError, match=r"1 class\(es\) \(n01\): a classifier needs at least 2"):
        _dm(tmp_path / "dst")


@pytest.mark.parametrize("damage", ["not json", "no count", "wrong total"])
def test_damaged_manifest_is_one_error_naming_it(shards, damage):
    import json

    _, dst = shards
    path = dst / "manifest.json"
    if damage == "not json":
        path.write_text(path.read_text()[:300])
    else:
        m = json.loads(path.read_text())
        if damage == "no count":
            del m["val"]["shards"][1]["count"]
        else:
            m["train"]["samples"] += 1
        path.write_text(json.dumps(m))
    with pytest.raises(UserError, match=rf"{path}.*rewrite it with `cnnrepro shards SRC {dst}`"):
        _dm(dst)
