"""ImageNet-ReaL labels (--data.real_labels, data/real.py): real.json checked, each image found by its
ILSVRC2012_val_ file number in real shards and real trees, ReaL's counts summed once across 2 gloo ranks.

real.json's format (github.com/google-research/reassessed-imagenet, README): a list of 50,000 lists,
entry i = the labels of ILSVRC2012_val_{i+1:08d}.JPEG; an empty list = the image is left out."""

import io
import json

import numpy as np
import pytest
import torch
import webdataset as wds
from ddp_runner import run_ranks
from PIL import Image

from cnnrepro.data.real import (
    REAL_IMAGES,
    RealLabelsError,
    RealSampleError,
    load_real_labels,
    real_hits,
    val_number,
)
from cnnrepro.data.stream import EvalStream, ShardInfo
from cnnrepro.data.transforms import CenterCrop

# ILSVRC2012_val_ numbers of the test images: first, last and in between, not in order
NUMBERS = [17, 1, 50_000, 4242, 3, 999, 25_000, 8]


def write_real(path, labels: dict[int, list[int]]) -> None:
    """A real.json of 50,000 entries: ``labels`` {file number: list}, every other entry [0]."""
    data = [[0] for _ in range(REAL_IMAGES)]
    for n, ls in labels.items():
        data[n - 1] = ls
    path.write_text(json.dumps(data))


def jpeg(rng) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def write_val_shards(root, numbers, per_shard=3, path=lambda n: f"val/n0000000{n % 10}/ILSVRC2012_val_{n:08d}.JPEG"):
    """Real val shards as `cnnrepro shards` writes them (jpg, cls, json with the source path)."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(0, len(numbers), per_shard):
        url = root / f"val-{k // per_shard:06d}.tar"
        with wds.TarWriter(str(url)) as sink:
            for j, n in enumerate(numbers[k:k + per_shard]):
                sample = {"__key__": f"val{k + j:08d}", "jpg": jpeg(rng), "cls": str(n % 10)}
                if path is not None:
                    sample["json"] = json.dumps({"path": path(n), "wnid": "n00000000"})
                sink.write(sample)
        out.append(ShardInfo(str(url), len(numbers[k:k + per_shard])))
    return out


def test_real_json_is_checked_and_read_in_file_order(tmp_path):
    p = tmp_path / "real.json"
    write_real(p, {1: [], 2: [970, 795], 50_000: [5, 6, 7]})
    real = load_real_labels(p)
    assert real.table.shape == (REAL_IMAGES, 3)
    assert real.table[0].tolist() == [-1, -1, -1]  # ILSVRC2012_val_00000001: no label
    assert real.table[1].tolist() == [970, 795, -1]
    assert real.table[REAL_IMAGES - 1].tolist() == [5, 6, 7]
    assert real.labelled == REAL_IMAGES - 1 and len(real.sha256) == 64

    for data, words in [({"a": 1}, "a JSON dict"), ([[1]] * 10, "a list of 10 entries")]:
        p.write_text(json.dumps(data))
        with pytest.raises(RealLabelsError, match=words) as e:
            load_real_labels(p)
        assert str(p) in str(e.value) and "\n" not in str(e.value)
    bad = [[1]] * REAL_IMAGES
    bad[41] = [1000]
    p.write_text(json.dumps(bad))
    with pytest.raises(RealLabelsError, match="entry 41 .ILSVRC2012_val_00000042. is \\[1000\\]"):
        load_real_labels(p)
    p.write_text("[[1], ")
    with pytest.raises(RealLabelsError, match="not valid JSON"):
        load_real_labels(p)


def test_val_number_comes_from_the_file_name_or_is_refused():
    assert val_number("val/n01440764/ILSVRC2012_val_00000293.JPEG", "x") == 293
    assert val_number("ILSVRC2012_img_val.tar/ILSVRC2012_val_00050000.JPEG", "x") == 50_000
    for bad in ("val/n01440764/img_001.JPEG", "ILSVRC2012_val_00050001.JPEG", None):
        with pytest.raises(RealSampleError, match="sample s in shard.tar") as e:
            val_number(bad, "sample s in shard.tar")
        assert "\n" not in str(e.value)


def test_real_hits_count_a_prediction_in_the_set_and_leave_out_unlabelled_images():
    table = torch.tensor([[3, -1], [-1, -1], [1, 2]], dtype=torch.int16)
    logits = torch.eye(4)[[3, 0, 0]].double()  # predictions 3, 0, 0
    hits, labelled = real_hits(table, logits, torch.tensor([1, 2, 3]))
    assert (hits.item(), labelled.item()) == (1.0, 2.0)  # image 2 has no label: in neither count


@pytest.mark.parametrize("workers", [0, 2])
def test_the_eval_stream_carries_each_images_file_number_from_shards_and_trees(tmp_path, workers):
    shards = write_val_shards(tmp_path, NUMBERS)
    ds = EvalStream(shards, batch_size=2, transform=CenterCrop(8, 8), num_workers=workers, sources=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    got = {}
    for _x, y, idx, nums in loader:
        got.update(zip(idx.tolist(), nums.tolist()))
    assert [got[i] for i in range(len(NUMBERS))] == NUMBERS

    # an unconverted tree: the file's own path
    from cnnrepro.data.imagefolder import folder_manifest

    tree = tmp_path / "tree"
    rng = np.random.default_rng(1)
    for n in NUMBERS:
        (tree / "train" / f"n{n % 3:08d}").mkdir(parents=True, exist_ok=True)
        d = tree / "val" / f"n{n % 3:08d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"ILSVRC2012_val_{n:08d}.JPEG").write_bytes(jpeg(rng))
    _, groups = folder_manifest(tree, files_per_group=3)
    ds = EvalStream(groups["val"], batch_size=2, transform=CenterCrop(8, 8), sources=True)
    nums = torch.cat([b[3] for b in ds]).tolist()
    assert sorted(nums) == sorted(NUMBERS)
    names = [it.path for g in groups["val"] for it, _ in g.files]
    assert nums == [int(p[-13:-5]) for p in names]  # each image its own number, in stream order
    # without ReaL the batches are as before: (x, y, index)
    assert len(next(iter(EvalStream(groups["val"], batch_size=2, transform=CenterCrop(8, 8))))) == 3


def test_a_sample_without_an_ilsvrc_val_name_stops_the_stream_naming_it(tmp_path):
    shards = write_val_shards(tmp_path, NUMBERS[:4], per_shard=2, path=lambda n: f"photos/img{n}.jpg")
    ds = EvalStream(shards, batch_size=2, transform=CenterCrop(8, 8), num_workers=1, sources=True)
    with pytest.raises(RealSampleError) as e:
        list(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=1))
    msg = str(e.value)
    assert "val00000000" in msg and "val-000000.tar" in msg and "photos/img17.jpg" in msg and "\n" not in msg.strip()
    # shards with no .json member (e.g. written by another tool): named too
    (tmp_path / "nojson").mkdir()
    shards = write_val_shards(tmp_path / "nojson", NUMBERS[:2], path=None)
    with pytest.raises(RealSampleError, match="no source path"):
        list(EvalStream(shards, batch_size=2, transform=CenterCrop(8, 8), sources=True))


@pytest.mark.slow
def test_real_counts_are_summed_once_across_two_gloo_ranks(tmp_path):
    """Two real DDP processes (gloo), one loader worker each, over uneven shards: every image's
    ReaL verdict counted once, the reduced counts equal one process's and a count done by hand."""
    import importlib.util
    from pathlib import Path

    shards = write_val_shards(tmp_path, NUMBERS, per_shard=3)  # 3 + 3 + 2 images
    spec = importlib.util.spec_from_file_location("ddp_eval_worker", Path(__file__).with_name("ddp_eval_worker.py"))
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    # the worker's fixed scores: predictions known in advance, so real.json can put some in and some out
    ds = EvalStream(shards, batch_size=8, transform=CenterCrop(8, 8), sources=True)
    x, _y, _idx, nums = next(iter(ds))
    pred = dict(zip(nums.tolist(), worker.scores(x).argmax(1).tolist()))
    labels = {n: ([pred[n], (pred[n] + 1) % 10] if k % 3 == 0 else [] if k % 3 == 1 else [(pred[n] + 1) % 10])
              for k, n in enumerate(NUMBERS)}
    real_json = tmp_path / "real.json"
    write_real(real_json, labels)
    want_correct = sum(1 for n in NUMBERS if pred[n] in labels[n])
    want_labelled = sum(1 for n in NUMBERS if labels[n])
    assert 0 < want_correct < want_labelled < len(NUMBERS)

    one: dict = {"path": str(real_json)}
    worker.evaluate(shards, rank=0, world=1, workers=0, real=one)
    assert (one["correct"], one["labelled"]) == (want_correct, want_labelled)

    _, logs, ranks = run_ranks([[s.url, s.count] for s in shards], tmp_path, 2, 1, f"real={real_json}",
                               timeout=120)
    assert ranks is not None, logs
    seen = [n for r in ranks for n in r["real"]["numbers"]]
    assert sorted(seen) == sorted(NUMBERS)  # each image scored once, by one rank
    for r in ranks:  # the counts reduced over both ranks, identical on each
        assert (r["real"]["correct"], r["real"]["labelled"]) == (want_correct, want_labelled)
