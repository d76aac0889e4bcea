"""A rerun of `cnnrepro shards` gives exactly the shards and manifest a fresh conversion would
(issue 17): after any change to SRC, and after any damage to DST. Real trees of real JPEGs."""

import hashlib
import os
import shutil

import pytest

from cnnrepro.data.shards import write_shards

from test_shards import _jpeg, _photo, _tree


def _digests(dst):
    """sha256 of every shard and of the manifest: what a reader of DST sees."""
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(dst.iterdir())
            if f.name.endswith(".tar") or f.name == "manifest.json"}


def _write(src, dst):
    return write_shards(src, dst, samples_per_shard=4, workers=2, progress=False)


def _flip_keep_mtime(path, offset):
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the worst case: size and mtime as before


def _other_root(src, dst, tmp_path):
    other = _tree(tmp_path / "other", train=7, val=3)  # same relative paths ...
    for f in sorted(other.rglob("*.JPEG"))[::3]:  # ... some of them other pictures
        f.write_bytes(_jpeg(_photo(96, 80, seed=999 + len(f.name))))
    return other


def _modify_in_place(src, dst, tmp_path):
    (src / "train" / "n02" / "n02_3.JPEG").write_bytes(_jpeg(_photo(130, 90, seed=4242)))
    return src


def _modify_in_place_same_size(src, dst, tmp_path):
    f = src / "val" / "n01" / "n01_1.JPEG"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x10  # a pixel changes, the size does not
    st = f.stat()
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    return src


def _add_image(src, dst, tmp_path):
    (src / "train" / "n03" / "n03_new.JPEG").write_bytes(_jpeg(_photo(seed=777)))
    return src


def _remove_images(src, dst, tmp_path):
    for f in sorted((src / "train" / "n01").iterdir())[:5]:  # one shard fewer
        f.unlink()
    return src


def _truncate_shard(src, dst, tmp_path):
    p = dst / "train-000001.tar"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return src


def _flip_shard_bit(src, dst, tmp_path):
    p = dst / "val-000000.tar"
    _flip_keep_mtime(p, p.stat().st_size // 2)
    return src


def _delete_shard(src, dst, tmp_path):
    (dst / "train-000002.tar").unlink()
    return src


def _damage_part_record(src, dst, tmp_path):
    (dst / ".parts" / "train-000003.tar.json").write_text('{"name": "train-0000')
    return src


CHANGES = [_other_root, _modify_in_place, _modify_in_place_same_size, _add_image, _remove_images, _truncate_shard,
           _flip_shard_bit, _delete_shard, _damage_part_record]


@pytest.mark.parametrize("change", CHANGES, ids=[c.__name__.strip("_") for c in CHANGES])
def test_rerun_after_a_change_equals_a_fresh_conversion(tmp_path, change):
    src, dst = _tree(tmp_path / "src"), tmp_path / "dst"
    _write(src, dst)
    before = _digests(dst)
    new_src = change(src, dst, tmp_path)
    _write(new_src, dst)
    _write(new_src, tmp_path / "fresh")
    assert _digests(dst) == _digests(tmp_path / "fresh")
    if change not in (_delete_shard, _damage_part_record, _truncate_shard, _flip_shard_bit):
        assert _digests(dst) != before  # the change reached the shards


def test_unchanged_rerun_keeps_every_shard_untouched(tmp_path):
    src, dst = _tree(tmp_path / "src"), tmp_path / "dst"
    _write(src, dst)
    mtimes = {f.name: f.stat().st_mtime_ns for f in dst.glob("*.tar")}
    _write(src, dst)
    assert {f.name: f.stat().st_mtime_ns for f in dst.glob("*.tar")} == mtimes


def test_a_removed_val_folder_removes_its_shards(tmp_path):
    src, dst = _tree(tmp_path / "src"), tmp_path / "dst"
    _write(src, dst)
    shutil.rmtree(src / "val")
    m = _write(src, dst)
    assert "val" not in m and not list(dst.glob("val-*.tar"))
