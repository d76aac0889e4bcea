"""Shard writing: round trip, ImageNet's traps, the manifest's accounting, resumability."""

import io
import json
import os

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from cnnrepro.data.shards import RejectedImage, check_image, read_manifest, write_shards


def _photo(w=120, h=90, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((w, h), Image.BICUBIC)


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def _tree(root, classes=("n01", "n02", "n03"), train=7, val=3):
    for split, n in (("train", train), ("val", val)):
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                (d / f"{c}_{i}.JPEG").write_bytes(_jpeg(_photo(seed=ci * 100 + i + (0 if split == "train" else 50))))
    return root


def _read_all(dst, split):
    m = read_manifest(dst)
    out = []
    for s in m[split]["shards"]:
        got = list(wds.WebDataset(str(dst / s["name"]), shardshuffle=False))
        assert len(got) == s["count"]
        out += got
    return m, out


def test_round_trip_keeps_bytes_labels_and_counts(tmp_path):
    src = _tree(tmp_path / "src")
    m = write_shards(src, tmp_path / "out", samples_per_shard=4, workers=2, progress=False)
    assert m["train"]["samples"] == 21 and m["val"]["samples"] == 9
    assert [c["wnid"] for c in m["classes"]] == ["n01", "n02", "n03"]
    assert [s["count"] for s in m["train"]["shards"]] == [4, 4, 4, 4, 4, 1]
    m, samples = _read_all(tmp_path / "out", "train")
    for s in samples:
        meta = json.loads(s["json"])
        original = (src / meta["path"]).read_bytes()
        assert s["jpg"] == original  # original bytes kept when nothing needs repair
        assert int(s["cls"]) == ["n01", "n02", "n03"].index(meta["wnid"])
    assert len({json.loads(s["json"])["path"] for s in samples}) == 21
    # training order is shuffled across shards: the first shard mixes classes
    first = list(wds.WebDataset(str(tmp_path / "out" / m["train"]["shards"][0]["name"]), shardshuffle=False))
    assert len({int(s["cls"]) for s in first}) > 1
    # validation keeps sorted order
    _, val = _read_all(tmp_path / "out", "val")
    paths = [json.loads(s["json"])["path"] for s in val]
    assert paths == sorted(paths)
    assert m["rgb_stats"]["pixels"] > 0 and len(m["rgb_stats"]["eigval"]) == 3


def test_imagenet_traps_are_repaired_or_rejected_and_listed(tmp_path):
    src = _tree(tmp_path / "src", classes=("n01",), train=2, val=1)
    d = src / "train" / "n01"
    _photo().convert("CMYK").save(d / "cmyk.JPEG", format="JPEG")
    _photo().convert("L").save(d / "gray.JPEG", format="JPEG")
    _photo().save(d / "png_named.JPEG", format="PNG")
    full = _jpeg(_photo(400, 300))
    (d / "truncated.JPEG").write_bytes(full[: len(full) // 2])
    (d / "empty.JPEG").write_bytes(b"")
    (d / "notes.JPEG").write_bytes(b"this is not an image at all")
    m = write_shards(src, tmp_path / "out", samples_per_shard=3, workers=1, progress=False)
    tr = m["train"]
    assert tr["inputs"] == 8
    assert tr["samples"] + len(tr["rejected"]) == tr["inputs"]
    repaired = {os.path.basename(r["path"]): r["reason"] for r in tr["repaired"]}
    rejected = {os.path.basename(r["path"]): r["reason"] for r in tr["rejected"]}
    assert set(repaired) == {"cmyk.JPEG", "gray.JPEG", "png_named.JPEG"}
    assert "CMYK converted to RGB" in repaired["cmyk.JPEG"]
    assert "L converted to RGB" in repaired["gray.JPEG"]
    assert "PNG file re-encoded as JPEG" in repaired["png_named.JPEG"]
    assert set(rejected) == {"truncated.JPEG", "empty.JPEG", "notes.JPEG"}
    assert rejected["empty.JPEG"] == "empty file"
    _, samples = _read_all(tmp_path / "out", "train")
    for s in samples:  # every written sample is an RGB JPEG
        img = Image.open(io.BytesIO(s["jpg"]))
        assert img.format == "JPEG" and img.mode == "RGB"


def test_check_image_rejects_truncated_jpeg():
    full = _jpeg(_photo(300, 200))
    with pytest.raises(RejectedImage, match="not a readable image"):
        check_image(full[:-400])


def test_interrupted_run_resumes_keeping_complete_shards(tmp_path):
    src = _tree(tmp_path / "src")
    out = tmp_path / "out"
    m1 = write_shards(src, out, samples_per_shard=4, workers=1, progress=False)
    # simulate an interrupted run: one shard never finished (only its temp file), one lost its record
    (out / "train-000002.tar").rename(out / "train-000002.tar.tmp")
    (out / ".parts" / "train-000004.tar.json").unlink()
    mtime_kept = (out / "train-000000.tar").stat().st_mtime_ns
    (out / "manifest.json").unlink()
    m2 = write_shards(src, out, samples_per_shard=4, workers=1, progress=False)
    assert (out / "train-000000.tar").stat().st_mtime_ns == mtime_kept  # complete shard kept
    assert [s["sha256"] for s in m2["train"]["shards"]] == [s["sha256"] for s in m1["train"]["shards"]]
    assert m2["train"]["samples"] == 21


def test_missing_train_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"neither an ImageFolder tree \(.*/train/<wnid>/\*.JPEG\)"):
        write_shards(tmp_path, tmp_path / "out", progress=False)


def _sizes(dst, split):
    _, samples = _read_all(dst, split)
    return [Image.open(io.BytesIO(s["jpg"])).size for s in samples]


def test_original_bytes_are_the_default_and_the_manifest_says_so(tmp_path):
    m = write_shards(_tree(tmp_path / "src"), tmp_path / "out", samples_per_shard=50, workers=1, progress=False)
    pre = m["preprocessing"]
    assert pre["mode"] == "original" and pre["shorter_side"] is None and pre["flag"] is None
    assert m["train"]["shorter_side"] == {"min": 90, "max": 90}  # the originals' range, as written


def test_alexnet256_is_shorter_side_256_then_the_central_square(tmp_path):
    src = tmp_path / "src"
    d = src / "train" / "n01"
    d.mkdir(parents=True)
    # pixels encode x: after resize to 512x256 the central square spans the middle half
    xs = np.linspace(0, 255, 400)[None, :, None].repeat(200, 0).repeat(3, 2).astype(np.uint8)
    Image.fromarray(xs).save(d / "wide.JPEG", quality=95)
    _photo(90, 120).save(d / "tall_small.JPEG", quality=90)
    m = write_shards(src, tmp_path / "out", alexnet256=True, workers=1, progress=False)
    assert m["preprocessing"]["mode"] == "alexnet256" and m["preprocessing"]["shorter_side"] == 256
    assert m["preprocessing"]["flag"] == "--alexnet256"
    assert _sizes(tmp_path / "out", "train") == [(256, 256), (256, 256)]
    assert m["train"]["shorter_side"] == {"min": 256, "max": 256}
    _, samples = _read_all(tmp_path / "out", "train")
    wide = next(s for s in samples if json.loads(s["json"])["path"].endswith("wide.JPEG"))
    row = np.asarray(Image.open(io.BytesIO(wide["jpg"])))[128, :, 0].astype(float)
    assert abs(row[0] - 64) < 6 and abs(row[-1] - 191) < 6  # the central half of the x ramp


def test_resize_shorter_and_its_manifest_record(tmp_path):
    m = write_shards(_tree(tmp_path / "src"), tmp_path / "out", resize_shorter=60, workers=1, progress=False)
    assert m["preprocessing"]["shorter_side"] == 60 and m["preprocessing"]["flag"] == "--resize-shorter 60"
    assert set(_sizes(tmp_path / "out", "val")) == {(80, 60)}  # 120x90 -> 80x60, aspect kept
    with pytest.raises(ValueError, match="--alexnet256 already sets"):
        write_shards(tmp_path / "src", tmp_path / "out2", resize_shorter=60, alexnet256=True, progress=False)


def test_rerun_with_other_preprocessing_rewrites_every_shard(tmp_path):
    src = _tree(tmp_path / "src")
    out = tmp_path / "out"
    write_shards(src, out, samples_per_shard=8, workers=1, progress=False)
    write_shards(src, out, samples_per_shard=8, resize_shorter=45, workers=1, progress=False)
    assert set(_sizes(out, "train")) == {(60, 45)}  # no stale original-size shard kept


# -- issue 17: unreadable inputs, empty classes, an output folder that cannot take the shards -------

def test_unreadable_inputs_are_rejected_with_their_errno(tmp_path):
    from cnnrepro.data.ilsvrc import detect_source

    src = _tree(tmp_path / "src", classes=("n01", "n02"), train=3, val=1)
    d = src / "train" / "n01"
    (d / "folder.JPEG").mkdir()  # a folder named like an image
    os.mkfifo(d / "pipe.JPEG")  # opening it would block for good
    (d / "dangling.JPEG").symlink_to(tmp_path / "nowhere.JPEG")
    # a real I/O error that root meets too: reading address 0 of a process's memory gives EIO
    (d / "mem.JPEG").symlink_to("/proc/self/mem")
    source = detect_source(src)
    (src / "train" / "n02" / "n02_1.JPEG").unlink()  # gone between the scan and the read
    m = write_shards(src, tmp_path / "out", samples_per_shard=4, workers=1, progress=False, source=source)
    rejected = {os.path.basename(r["path"]): r["reason"] for r in m["train"]["rejected"]}
    assert rejected == {"folder.JPEG": "unreadable: a folder",
                        "pipe.JPEG": "unreadable: not a regular file (FIFO, socket or device)",
                        "dangling.JPEG": "unreadable: ENOENT (No such file or directory)",
                        "mem.JPEG": "unreadable: EIO (Input/output error)",
                        "n02_1.JPEG": "unreadable: ENOENT (No such file or directory)"}
    assert m["train"]["inputs"] == 10 and m["train"]["samples"] == 5


def test_empty_class_folder_keeps_every_later_index(tmp_path):
    from cnnrepro.data.shards import EmptyClassWarning

    src = _tree(tmp_path / "src", classes=("n01", "n02", "n03"), train=3, val=2)
    for f in (src / "train" / "n02").iterdir():
        f.unlink()
    with pytest.warns(EmptyClassWarning, match=r"1 class\(es\) .* no train input .*n02 \(index 1\)"):
        m = write_shards(src, tmp_path / "out", samples_per_shard=4, workers=1, progress=False)
    assert [c["wnid"] for c in m["classes"]] == ["n01", "n02", "n03"]
    assert m["empty_classes"] == {"train": [{"index": 1, "wnid": "n02"}]}
    for split in ("train", "val"):
        _, samples = _read_all(tmp_path / "out", split)
        for s in samples:
            assert int(s["cls"]) == ["n01", "n02", "n03"].index(json.loads(s["json"])["wnid"])


def test_output_under_a_file_is_one_error_naming_it(tmp_path, capsys):
    from cnnrepro.cli import main

    src = _tree(tmp_path / "src", classes=("n01", "n02"), train=2, val=1)
    (tmp_path / "afile").write_text("")
    rc = main(["shards", str(src), str(tmp_path / "afile" / "out"), "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot write the shards to {tmp_path}/afile/out" in err and "choose another DST" in err


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 1.5 MB tmpfs (root can mount here; skipped where it cannot)."""
    import subprocess

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def _big_tree(root, n=24):
    for split, k in (("train", n), ("val", 4)):
        for c in ("n01", "n02"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(k):  # noise JPEGs of ~100 kB: a few fill the tmpfs
                arr = np.random.default_rng(i + 100 * len(c + split)).integers(0, 255, (300, 300, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{c}_{i}.JPEG", quality=95)
    return root


@pytest.mark.parametrize("workers", [1, 2])
def test_disk_full_is_one_error_naming_the_fix(tmp_path, small_tmpfs, workers):
    from cnnrepro.data.shards import ShardWriteError

    src = _big_tree(tmp_path / "src")
    with pytest.raises(ShardWriteError, match=rf"cannot write the shards to {small_tmpfs}/out: .*ENOSPC "
                                              r"\(No space left on device\); free space .* rerun the same command"):
        write_shards(src, small_tmpfs / "out", samples_per_shard=4, workers=workers, progress=False)


def test_read_only_output_is_one_error(tmp_path, small_tmpfs):
    import subprocess

    from cnnrepro.data.shards import ShardWriteError

    src = _tree(tmp_path / "src", classes=("n01", "n02"), train=2, val=1)
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    with pytest.raises(ShardWriteError, match=rf"{small_tmpfs}/out: EROFS .* choose another DST"):
        write_shards(src, small_tmpfs / "out", workers=1, progress=False)


def test_ctrl_c_with_workers_exits_130_in_one_line(tmp_path):
    """Ctrl-C reaches the whole foreground process group, as a terminal sends it."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    src = _big_tree(tmp_path / "src", n=60)
    out = tmp_path / "out"
    exe = str(Path(sys.executable).with_name("cnnrepro"))
    p = subprocess.Popen([exe, "shards", str(src), str(out), "--workers", "2", "--samples-per-shard", "2",
                          "--resize-shorter", "290"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (out / ".parts").is_dir() or not any((out / ".parts").iterdir()):
            assert p.poll() is None and time.time() < deadline, "the conversion ended before it could be interrupted"
            time.sleep(0.05)
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:  # the hang this test is about: end the group so the test run goes on
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 130
    lines = [ln for ln in err.splitlines() if ln.strip() and "shards ->" not in ln and "\r" not in ln]
    assert lines == [f"cnnrepro: interrupted; the complete shards in {out} are kept: rerun the same command to finish"]
    with pytest.raises(ProcessLookupError):  # no worker outlives the command
        os.killpg(p.pid, 0)
