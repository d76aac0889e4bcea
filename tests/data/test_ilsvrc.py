"""The official ILSVRC2012 archives and the Kaggle layout: real tars of real JPEGs, a real meta.mat.

The devkit's meta.mat lists its synsets in its own order (ILSVRC2012_ID 1..1000), not sorted by
WNID; the fixture below deliberately scrambles that order so that a pipeline that used the
devkit ID (minus one) as the class index, instead of mapping ID -> WNID -> sorted index, fails.
Every image's colour encodes its true class, so the check reads the pixels, not our own labels.
"""

import csv
import io
import json
import os
import tarfile

import numpy as np
import pytest
import scipy.io
import webdataset as wds
from PIL import Image

from cnnrepro.data.ilsvrc import SourceError, detect_source, devkit_labels, read_item
from cnnrepro.data.shards import read_manifest, write_shards

WNIDS_SORTED = ["n01440764", "n01443537", "n01530575", "n02102040"]
# meta.mat order (ILSVRC2012_ID 1..4): deliberately not sorted
META_ORDER = ["n02102040", "n01440764", "n01530575", "n01443537"]
VAL_CLASSES = [2, 0, 3, 3, 1, 0, 2, 1, 3]  # sorted index of val image i+1


def _colour(cls: int) -> int:
    return 30 + 60 * cls


def _jpeg(cls: int, seed: int, w=64, h=48, mode="RGB") -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.full((h, w, 3), _colour(cls), dtype=np.int16) + rng.integers(-6, 7, (h, w, 3))
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _tar_bytes(members: dict[str, bytes], mode="w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            _add(tf, name, data)
    return buf.getvalue()


def _meta_mat() -> bytes:
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    rows = [(i + 1, w, f"class {w}", "a gloss", 0, np.zeros((1, 0)), 0, 3) for i, w in enumerate(META_ORDER)]
    # a WordNet node above the leaves, as the real meta.mat has (IDs 1001..1860): not a class
    rows.append((5, "n00001740", "entity", "the root", 4, np.array([1, 2, 3, 4]), 19, 12))
    arr = np.zeros((len(rows), 1), dtype=[(f, "O") for f in fields])
    for i, r in enumerate(rows):
        arr[i, 0] = r
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": arr})
    return buf.getvalue()


def _ground_truth() -> bytes:
    ids = [META_ORDER.index(WNIDS_SORTED[c]) + 1 for c in VAL_CLASSES]
    return ("\n".join(map(str, ids)) + "\n").encode()


def _val_name(i: int) -> str:
    return f"ILSVRC2012_val_{i:08d}.JPEG"


def _write_archives(root, labels="devkit"):
    root.mkdir(parents=True)
    inner = {}
    for c, w in enumerate(WNIDS_SORTED):
        files = {f"{w}_{k}.JPEG": _jpeg(c, 10 * c + k) for k in range(3)}
        if c == 1:
            files[f"{w}_cmyk.JPEG"] = _jpeg(c, 99, mode="CMYK")  # one of ImageNet's 22 CMYK JPEGs
        inner[f"{w}.tar"] = _tar_bytes(files)
    (root / "ILSVRC2012_img_train.tar").write_bytes(_tar_bytes(inner))
    val = {_val_name(i + 1): _jpeg(c, 500 + i) for i, c in enumerate(VAL_CLASSES)}
    (root / "ILSVRC2012_img_val.tar").write_bytes(_tar_bytes(val))
    if labels == "devkit":
        dk = {"ILSVRC2012_devkit_t12/data/meta.mat": _meta_mat(),
              "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": _ground_truth(),
              "ILSVRC2012_devkit_t12/readme.txt": b"devkit"}
        (root / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(_tar_bytes(dk, mode="w:gz"))
    else:
        _write_loc_csv(root / "LOC_val_solution.csv")
    return root


def _write_loc_csv(path):
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["ImageId", "PredictionString"])
        for i, c in enumerate(VAL_CLASSES):
            w = WNIDS_SORTED[c]
            wr.writerow([_val_name(i + 1)[:-5], f"{w} 1 2 30 40 {w} 5 6 20 20 "])


def _decoded_class(jpg: bytes) -> int:
    mean = np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"), dtype=np.float64).mean()
    return int(round((mean - 30) / 60))


def _samples(dst, split):
    m = read_manifest(dst)
    out = []
    for s in m[split]["shards"]:
        out += list(wds.WebDataset(str(dst / s["name"]), shardshuffle=False))
    return m, out


def test_devkit_ids_map_through_wnids_to_sorted_indices():
    labels, names = devkit_labels(_meta_mat(), _ground_truth())
    assert set(names) == set(WNIDS_SORTED)  # the WordNet node above the leaves is not a class
    assert [labels[_val_name(i + 1)[:-5]] for i in range(len(VAL_CLASSES))] == [WNIDS_SORTED[c] for c in VAL_CLASSES]


@pytest.mark.parametrize("labels", ["devkit", "loc_csv"])
def test_official_archives_to_shards_with_the_sorted_wnid_index(tmp_path, labels):
    src = _write_archives(tmp_path / "src", labels)
    source = detect_source(src)
    assert source.form == "archives"
    assert "ILSVRC2012_img_train.tar with 13 images in 4 class tars" in source.description
    # bytes read by offset from inside the nested tars are the original files
    it = next(i for i in source.splits["train"] if i.path.endswith("n01530575_1.JPEG"))
    assert read_item(src, it) == _jpeg(2, 21)
    m = write_shards(src, tmp_path / "out", samples_per_shard=4, workers=2, progress=False)
    assert [c["wnid"] for c in m["classes"]] == WNIDS_SORTED
    if labels == "devkit":
        assert m["classes"][0]["name"] == "class n01440764"  # words from meta.mat
    assert m["train"]["samples"] == 13 and m["val"]["samples"] == len(VAL_CLASSES)
    assert [os.path.basename(r["path"]) for r in m["train"]["repaired"]] == ["n01443537_cmyk.JPEG"]
    for split in ("train", "val"):
        _, samples = _samples(tmp_path / "out", split)
        for s in samples:
            assert int(s["cls"]) == _decoded_class(s["jpg"]), json.loads(s["json"])
    _, val = _samples(tmp_path / "out", "val")
    assert [int(s["cls"]) for s in val] == VAL_CLASSES  # filename order kept
    assert json.loads(val[0]["json"])["path"] == "ILSVRC2012_img_val.tar/" + _val_name(1)


def test_kaggle_layout_with_loc_val_solution(tmp_path):
    src = tmp_path / "kaggle"
    base = src / "ILSVRC" / "Data" / "CLS-LOC"
    for c, w in enumerate(WNIDS_SORTED):
        (base / "train" / w).mkdir(parents=True)
        for k in range(2):
            (base / "train" / w / f"{w}_{k}.JPEG").write_bytes(_jpeg(c, k))
    (base / "val").mkdir()
    for i, c in enumerate(VAL_CLASSES):
        (base / "val" / _val_name(i + 1)).write_bytes(_jpeg(c, 500 + i))
    _write_loc_csv(src / "LOC_val_solution.csv")
    (src / "LOC_synset_mapping.txt").write_text("".join(f"{w} name of {w}\n" for w in WNIDS_SORTED))
    assert detect_source(src).form == "kaggle"
    m = write_shards(src, tmp_path / "out", samples_per_shard=5, workers=1, progress=False)
    assert m["classes"][3] == {"index": 3, "wnid": "n02102040", "name": "name of n02102040"}
    _, val = _samples(tmp_path / "out", "val")
    assert [int(s["cls"]) for s in val] == VAL_CLASSES
    assert all(int(s["cls"]) == _decoded_class(s["jpg"]) for s in val)


def test_val_tar_without_labels_is_refused_naming_the_files(tmp_path):
    src = _write_archives(tmp_path / "src")
    (src / "ILSVRC2012_devkit_t12.tar.gz").unlink()
    with pytest.raises(SourceError, match="ILSVRC2012_devkit_t12.tar.gz.*LOC_val_solution.csv"):
        detect_source(src)


def test_val_image_missing_from_ground_truth_is_refused(tmp_path):
    src = _write_archives(tmp_path / "src", labels="loc_csv")
    rows = (src / "LOC_val_solution.csv").read_text().splitlines()
    (src / "LOC_val_solution.csv").write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(SourceError, match=r"ILSVRC2012_val_00000009.JPEG has no label"):
        detect_source(src)


def test_unknown_folder_is_refused_saying_what_was_expected(tmp_path):
    with pytest.raises(SourceError, match="neither an ImageFolder tree.*archives.*Kaggle"):
        detect_source(tmp_path)


def test_cli_says_which_form_it_found(tmp_path, capsys):
    from cnnrepro.commands.shards import main  # `cnnrepro shards`, in process (tests/test_cli.py runs the script)

    src = _write_archives(tmp_path / "src")
    assert main("shards", [str(src), str(tmp_path / "out"), "--workers", "1", "--samples-per-shard", "8"]) == 0
    out = capsys.readouterr().out
    assert "found: ILSVRC2012 archives" in out and "labelled by ILSVRC2012_devkit_t12.tar.gz" in out
    assert "val: 9 samples in 2 shards; 0 repaired, 0 rejected (of 9 files)" in out



# -- an empty class keeps its index (issue 17) ------------------------------------------------------

def test_kaggle_empty_class_folder_keeps_every_index(tmp_path):
    from cnnrepro.data.shards import EmptyClassWarning

    src = tmp_path / "kaggle"
    base = src / "ILSVRC" / "Data" / "CLS-LOC"
    for c, w in enumerate(WNIDS_SORTED):
        (base / "train" / w).mkdir(parents=True)
        for k in range(2 if c != 1 else 0):  # the second class's folder is empty
            (base / "train" / w / f"{w}_{k}.JPEG").write_bytes(_jpeg(c, k))
    (base / "val").mkdir()
    for i, c in enumerate(VAL_CLASSES):
        (base / "val" / _val_name(i + 1)).write_bytes(_jpeg(c, 500 + i))
    _write_loc_csv(src / "LOC_val_solution.csv")
    with pytest.warns(EmptyClassWarning, match=r"n01443537 \(index 1\)"):
        m = write_shards(src, tmp_path / "out", samples_per_shard=5, workers=1, progress=False)
    assert [c["wnid"] for c in m["classes"]] == WNIDS_SORTED
    assert m["empty_classes"] == {"train": [{"index": 1, "wnid": "n01443537"}]}
    for split in ("train", "val"):  # every label is still the class its pixels encode
        _, samples = _samples(tmp_path / "out", split)
        assert all(int(s["cls"]) == _decoded_class(s["jpg"]) for s in samples)


def test_archives_with_an_empty_class_tar_keep_the_devkit_classes(tmp_path):
    from cnnrepro.data.shards import EmptyClassWarning

    src = _write_archives(tmp_path / "src")
    inner = {f"{w}.tar": _tar_bytes({f"{w}_{k}.JPEG": _jpeg(c, 10 * c + k) for k in range(3)} if c != 2 else {})
             for c, w in enumerate(WNIDS_SORTED)}
    (src / "ILSVRC2012_img_train.tar").write_bytes(_tar_bytes(inner))
    with pytest.warns(EmptyClassWarning, match="n01530575"):
        m = write_shards(src, tmp_path / "out", samples_per_shard=5, workers=1, progress=False)
    assert [c["wnid"] for c in m["classes"]] == WNIDS_SORTED
    assert m["empty_classes"]["train"] == [{"index": 2, "wnid": "n01530575"}]
    _, val = _samples(tmp_path / "out", "val")
    assert [int(s["cls"]) for s in val] == VAL_CLASSES
