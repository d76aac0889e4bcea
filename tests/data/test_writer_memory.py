"""The shard writer's memory stays flat with the tree's size (issue 13), and its output is the
one main's writer (86b932d, which held a list of Item objects per split) gave: shards and manifest
sha256-equal on a fixture tree of fixed bytes.

The expected digests were printed by main's writer on this same tree (the JPEG bytes below are a
constant, so the shards depend on nothing but the writer; the manifest's source path is replaced
by SRC before hashing). The memory figures are tracemalloc's, in bytes per input file; a list of
Item objects costs ~360 (the object, its dict, the path string, the writer's tuples)."""

import base64
import hashlib
import json
import os
import subprocess
import sys
import tracemalloc

import pytest

from cnnrepro.data.ilsvrc import detect_source
from cnnrepro.data.shards import EmptyClassWarning, write_shards

JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAYEBQYFBAYGBQYHBwYIChAKCgkJChQODwwQFxQYGBcUFhYaHSUfGhsjHBYWICwgIyYnKSopGR8t"
    "MC0oMCUoKSj/2wBDAQcHBwoIChMKChMoGhYaKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCj/wAAR"
    "CAAIAAgDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEG"
    "E1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWG"
    "h4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEB"
    "AQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYk"
    "NOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0"
    "tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwDlLH4UdP8AR/0ooopiP//Z")


def fixture_tree(root, counts=(("n001", 7, 2), ("n002", 5, 2), ("n003", 0, 1), ("n004", 9, 2))):
    """train/<wnid>/ and val/<wnid>/ with the given numbers of files (one class empty in train),
    one empty file (rejected), all other files the same 8x8 JPEG."""
    for wnid, train, val in counts:
        for split, n in (("train", train), ("val", val)):
            d = root / split / wnid
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (d / f"{wnid}_{i}.JPEG").write_bytes(JPEG)
    (root / "train" / "n004" / "n004_empty.JPEG").write_bytes(b"")
    return root


def digests(dst, src) -> dict:
    out = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(dst.glob("*.tar"))}
    text = (dst / "manifest.json").read_text().replace(str(src), "SRC")
    out["manifest.json"] = hashlib.sha256(text.encode()).hexdigest()
    return out


MAIN_DIGESTS = {  # printed by main's writer (86b932d) on fixture_tree, samples_per_shard=4, 1 and 2 workers alike
    "train-000000.tar": "198bbdbb514885a4171d684fa36d78af5e86a0e803b8caa1eabbc8bab8b3b1a6",
    "train-000001.tar": "6a6b939f1add46b1deaa95a96d4a32992a0c1b70af5d8cfd31bdcf555a96fc5f",
    "train-000002.tar": "0a990477daa7cd4e0d9e53691b10ab38c47dc4e4651c3e47d29a9f570294e7d8",
    "train-000003.tar": "5efaed7c552cdf7b2fe1620cce4b0af2e463c5cf571cfa84b57e0abd81b69262",
    "train-000004.tar": "1efee182014a0ee4c3effe7fb5ecf8d58a1a55f08bd7d4528f8eeaa751f0d350",
    "train-000005.tar": "55f0406a9a546b06dca5920225a22a676bc502bd49352dffd46b51a927ae068c",
    "val-000000.tar": "457c75797d9a190c678954b889aac9d6fa09eaf0b61ec3bf9c8fe06d3f09ac1e",
    "val-000001.tar": "599d603b9dbd15549e9a31210c971e5890570af5dd80c1ce3ed9cbbdfb429a34",
    "manifest.json": "41a8c47e77d6bca5670d39b110415afb74a79df2a2869f44558a5126599534b1",
}


@pytest.mark.parametrize("workers", [1, 2])
def test_the_writer_writes_the_bytes_mains_writer_wrote(tmp_path, workers):
    src = fixture_tree(tmp_path / "src")
    with pytest.warns(EmptyClassWarning, match="n003"):
        write_shards(src, tmp_path / "out", samples_per_shard=4, workers=workers, progress=False)
    assert digests(tmp_path / "out", src.resolve()) == MAIN_DIGESTS


def _many_files(root, n, classes=10):
    """A tree of ``n`` training files (empty: the scan lists names, it reads no bytes)."""
    for c in range(classes):
        (root / "train" / f"n{c:08d}").mkdir(parents=True)
    for i in range(n):
        (root / "train" / f"n{i % classes:08d}" / f"n{i % classes:08d}_{i:08d}.JPEG").touch()
    return root


def test_the_scan_holds_a_few_dozen_bytes_per_file(tmp_path):
    tree = _many_files(tmp_path / "t", 4000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        source = detect_source(tree)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(source.splits["train"]) == 4000
    # a name here is 23 bytes ("n00000001_00000001.JPEG"); 12 more for its indexes and end offset.
    # main's scan (a list of Item objects): 210 bytes a file on this test
    assert held / 4000 < 80, f"{held / 4000:.0f} bytes per file"


_PEAKS = """
import gc, json, sys, tracemalloc
from cnnrepro.data.shards import write_shards
peaks = {}
for tree in sys.argv[1:]:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    write_shards(tree, tree + "-shards", samples_per_shard=200, workers=1, progress=False)
    peaks[tree] = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
print(json.dumps(peaks))
"""


@pytest.mark.slow  # ~10 s idle, ~30 s on a loaded 2-core machine
def test_the_writers_peak_grows_by_a_few_dozen_bytes_per_file(tmp_path):
    """Peak traced memory of write_shards at 400 and 3,000 files of one JPEG each, after a warm-up
    conversion (imports, caches), in a fresh interpreter (no other test's leftovers): the slope per
    file. The shard being written is a constant and cancels out; what grows is each split's input
    list (~40 bytes a file here, plus the reallocations of its growing buffers), the shuffled
    order (4) and the shards' records (~1.5 KB a shard: ~8 bytes a file). main's writer (86b932d):
    388 bytes a file on this test."""
    trees = {}
    for n in (20, 400, 3000):
        tree = trees[n] = tmp_path / f"t{n}"
        for c in range(10):
            (tree / "train" / f"n{c:08d}").mkdir(parents=True)
        for i in range(n):
            (tree / "train" / f"n{i % 10:08d}" / f"n{i % 10:08d}_{i:08d}.JPEG").write_bytes(JPEG)
    p = subprocess.run([sys.executable, "-c", _PEAKS, *map(str, trees.values())], capture_output=True, text=True,
                       check=False, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert p.returncode == 0, p.stderr[-2000:]
    peaks = json.loads(p.stdout.strip().splitlines()[-1])
    slope = (peaks[str(trees[3000])] - peaks[str(trees[400])]) / 2600
    print(f"writer peak: {slope:.0f} bytes per file")
    assert slope < 150, f"{slope:.0f} bytes per file ({peaks})"
