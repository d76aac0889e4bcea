"""The forms ImageNet arrives in, read into one list of labelled inputs per split.

``detect_source(SRC)`` recognises:

* **tree**: an ImageFolder tree ``SRC/train/<wnid>/*.JPEG`` (and ``SRC/val/<wnid>/*.JPEG``);
* **archives**: the official ILSVRC2012 files in one folder:
  ``ILSVRC2012_img_train.tar`` (a tar of 1000 per-class tars ``<wnid>.tar``),
  ``ILSVRC2012_img_val.tar`` (50,000 flat ``ILSVRC2012_val_%08d.JPEG``) labelled by
  ``ILSVRC2012_devkit_t12.tar.gz`` (or that folder extracted) or by ``LOC_val_solution.csv``;
* **kaggle**: the Kaggle ImageNet layout ``SRC/ILSVRC/Data/CLS-LOC/train/<wnid>/*.JPEG``, the
  flat ``SRC/ILSVRC/Data/CLS-LOC/val/*.JPEG`` and ``SRC/LOC_val_solution.csv``;
* **imagenetv2**: an ImageNetV2 test set (Recht et al. 2019), ``SRC/<class index>/*.jpeg``: a
  validation split only (see ``_imagenetv2_source``).

The class index is always the position of the WNID in sorted order (what ImageFolder, the
Caffe/Torch/TF ImageNet pipelines and every released checkpoint use). The devkit's ground
truth is *not* in that order: ``ILSVRC2012_validation_ground_truth.txt`` gives, for the
val images in filename order, the 1-based ``ILSVRC2012_ID`` of ``data/meta.mat``'s synsets, whose
order is the devkit's own. So a label goes ID -> WNID (meta.mat) -> sorted index.

Archive members are never extracted: the scan records each JPEG's byte offset and size inside
the (uncompressed) outer tar, and the shard writer's processes read them with one seek each.
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
import tarfile
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from cnnrepro.errors import UserError

__all__ = ["Item", "Items", "Source", "detect_source", "scan_tree", "read_item", "devkit_labels", "SourceError"]

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12"
LOC_CSV = "LOC_val_solution.csv"
SYNSET_MAPPING = "LOC_synset_mapping.txt"
VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG$", re.IGNORECASE)


class SourceError(ValueError, UserError):
    """SRC is not a form we can read, or its parts disagree; the message names the file."""


@dataclass(frozen=True)
class Item:
    """One input file: where to read its bytes, what to call it, its WNID."""

    path: str  # shown in the manifest: relative to SRC, archive members as tar/member
    wnid: str
    file: str  # relative to SRC: the file holding the bytes
    offset: int = 0
    size: int = -1  # -1: the whole file


class Items(Sequence):
    """A split's inputs in a compact form: a Sequence of Items, built when accessed.

    A list of Item objects costs ~0.36 KB per file (the object, its dict, the path string and the
    list's tuples), ~0.5 GB for ImageNet's 1.33M training files, held by the shard writer for the
    whole conversion. Here a file of a tree costs its name's UTF-8 bytes plus 12 bytes: the folder
    part of its path and its WNID are indexes into small tables (1,000 class folders), the names
    sit in one buffer, and archive members' tar and offsets in arrays made only when they exist."""

    def __init__(self, items=()):
        self._dirs: list[str] = []
        self._wnids: list[str] = []
        self._files: list[str] = []  # an Item's ``file`` when it is not its path (archive members)
        self._index: dict[tuple[int, str], int] = {}  # (table, string) -> position in that table
        self._names = bytearray()
        self._ends = array("I")  # end of each name in _names (past 4 GiB of names: OverflowError)
        self._dir, self._wnid = array("I"), array("I")
        # made only when a file is not its path (archive members; -1 for the others), as are the
        # offsets and sizes when a member has them
        self._file: array | None = None
        self._offset: array | None = None
        self._size: array | None = None
        for it in items:
            self.append(it)

    def _intern(self, table: list[str], which: int, value: str) -> int:
        k = self._index.get((which, value))
        if k is None:
            k = self._index[(which, value)] = len(table)
            table.append(value)
        return k

    def append(self, item: Item) -> None:
        d, _, name = item.path.rpartition("/")
        self._names += name.encode("utf-8")
        self._ends.append(len(self._names))
        self._dir.append(self._intern(self._dirs, 0, d))
        self._wnid.append(self._intern(self._wnids, 1, item.wnid))
        before = len(self) - 1  # items before this one
        if item.file != item.path and self._file is None:
            self._file = array("i", [-1]) * before
        if self._file is not None:
            self._file.append(-1 if item.file == item.path else self._intern(self._files, 2, item.file))
        if (item.offset, item.size) != (0, -1) and self._offset is None:
            self._offset, self._size = array("q", [0]) * before, array("q", [-1]) * before
        if self._offset is not None:
            self._offset.append(item.offset)
            self._size.append(item.size)

    def __len__(self) -> int:
        return len(self._ends)

    def _item(self, i: int) -> Item:
        start = self._ends[i - 1] if i else 0
        name = self._names[start:self._ends[i]].decode("utf-8")
        d = self._dirs[self._dir[i]]
        path = f"{d}/{name}" if d else name
        f = -1 if self._file is None else self._file[i]
        if self._offset is None:
            return Item(path, self._wnids[self._wnid[i]], path if f < 0 else self._files[f])
        return Item(path, self._wnids[self._wnid[i]], path if f < 0 else self._files[f], self._offset[i], self._size[i])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._item(k) for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._item(i)

    def __iter__(self):
        return (self._item(i) for i in range(len(self)))

    def wnids_present(self) -> set[str]:
        return {self._wnids[k] for k in set(self._wnid)}


@dataclass
class Source:
    form: str  # "tree" | "archives" | "kaggle"
    root: Path
    splits: dict[str, Items]
    # sorted: the class index is the position here. Taken from the class list (the devkit's, or
    # every class folder / per-class tar, empty ones included), never from the images found, so
    # that an empty class cannot shift the index of every class after it
    wnids: list[str]
    names: dict[str, str] = field(default_factory=dict)
    description: str = ""
    # what the val split is when it is not (a part of) ILSVRC-2012 val: "imagenetv2-matched-frequency", ...
    eval_set: str | None = None

    def class_index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.wnids)}

    def empty_classes(self) -> dict[str, list[str]]:
        """{split: WNIDs of the class list with no input file in that split} (splits with none left out)."""
        out = {}
        for split, items in self.splits.items():
            present = items.wnids_present() if isinstance(items, Items) else {it.wnid for it in items}
            empty = sorted(set(self.wnids) - present)
            if empty:
                out[split] = empty
        return out


def read_item(root: str | Path, item: Item) -> bytes:
    """The bytes of one input. Raises OSError (with its errno where the system gave one) for a file
    that cannot be read: gone since the scan, a broken link, a folder, a FIFO, an I/O error."""
    path = Path(root) / item.file
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        # opening a FIFO would block for good, and a folder is no image: refuse before opening
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (FIFO, socket or device)"
        raise OSError(f"{kind}")
    with open(path, "rb") as f:
        if item.offset:
            f.seek(item.offset)
        return f.read(item.size)


# -- trees -------------------------------------------------------------------------------------

def class_folders(root: Path, rel: str) -> list[str]:
    """The names of the class folders under root/rel, sorted, empty ones included."""
    return sorted(p.name for p in (root / rel).iterdir() if p.is_dir())


def scan_tree(root: Path, rel: str) -> Items:
    """Every entry of root/rel/<wnid>/, sorted, as Items with paths relative to root.

    Entries that are not regular files (sub-folders, FIFOs, broken links) are listed too: the
    shard writer then rejects each with its reason instead of dropping it unseen."""
    out = Items()
    for cls in class_folders(root, rel):
        for name in sorted(os.listdir(root / rel / cls)):  # the order of sorted Paths of one folder
            p = f"{rel}/{cls}/{name}"
            out.append(Item(p, cls, p))
    return out


def _flat_dir(root: Path, rel: str, labels: dict[str, str], labels_from: str) -> Items:
    out = Items()
    for f in sorted((root / rel).iterdir()):
        if not f.is_dir():
            wnid = _label_for(f.name, labels, labels_from)
            out.append(Item(f"{rel}/{f.name}", wnid, f"{rel}/{f.name}"))
    return out


def _synset_names(path: Path) -> dict[str, str]:
    # LOC_synset_mapping.txt: "n01440764 tench, Tinca tinca"
    names = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                wnid, _, name = line.partition(" ")
                names[wnid] = name.strip()
    return names


# -- the official archives ---------------------------------------------------------------------

def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:")  # uncompressed only: we read members by offset
    except tarfile.ReadError as e:
        raise SourceError(f"{path}: not an uncompressed tar ({e}); ImageNet's image archives are plain .tar") from None


def _scan_train_tar(root: Path) -> tuple[Items, list[str]]:
    """(items sorted by path, sorted WNIDs of every per-class tar, empty ones included) of the
    train tar of per-class tars, with absolute offsets into the outer tar."""
    path = root / TRAIN_TAR
    blocks, wnids = [], []  # one class tar's items at a time as Item objects (issue 13: flat memory)
    with _open_tar(path) as outer:
        for m in outer:
            if not m.isfile():
                continue
            if not m.name.endswith(".tar"):
                raise SourceError(f"{path}: member {m.name!r} is not a per-class <wnid>.tar")
            wnid = Path(m.name).stem
            wnids.append(wnid)
            try:
                inner = tarfile.open(fileobj=outer.extractfile(m), mode="r:")
            except tarfile.ReadError as e:
                raise SourceError(f"{path}: member {m.name} is not a tar ({e})") from None
            with inner:
                members = sorted((im for im in inner if im.isfile()), key=lambda im: im.name)
                blocks.append((f"{m.name}/", Items(Item(f"{TRAIN_TAR}/{m.name}/{im.name}", wnid, TRAIN_TAR,
                                                        m.offset_data + im.offset_data, im.size) for im in members)))
    blocks.sort(key=lambda b: b[0])
    # the paths are TRAIN_TAR/<class tar>/<member>: sorted class by class unless a class tar's
    # "name/" begins another's (a malformed archive), which needs the sort over every path
    if any(b[0].startswith(a[0]) for a, b in pairwise(blocks)):
        return Items(sorted((it for _, b in blocks for it in b), key=lambda it: it.path)), sorted(set(wnids))
    items = Items()
    for _, b in blocks:
        for it in b:
            items.append(it)
    return items, sorted(set(wnids))


def _scan_val_tar(root: Path, labels: dict[str, str], labels_from: str) -> Items:
    path = root / VAL_TAR
    items = []
    with _open_tar(path) as tf:
        for m in tf:
            if m.isfile():
                wnid = _label_for(Path(m.name).name, labels, labels_from)
                items.append(Item(f"{VAL_TAR}/{m.name}", wnid, VAL_TAR, m.offset_data, m.size))
    return Items(sorted(items, key=lambda it: it.path))  # 50,000 at most in ImageNet


def _label_for(filename: str, labels: dict[str, str], labels_from: str) -> str:
    key = Path(filename).stem
    if key not in labels:
        raise SourceError(f"validation image {filename} has no label in {labels_from}")
    return labels[key]


def _devkit_files(root: Path) -> tuple[bytes, bytes, str] | None:
    """(meta.mat bytes, ground-truth bytes, where) from the devkit tar.gz or its extracted folder."""
    gt_name = "data/ILSVRC2012_validation_ground_truth.txt"
    folder = root / DEVKIT
    if (folder / "data" / "meta.mat").exists():
        return (folder / "data/meta.mat").read_bytes(), (folder / gt_name).read_bytes(), str(folder)
    tgz = root / f"{DEVKIT}.tar.gz"
    if not tgz.exists():
        return None
    found = {}
    with tarfile.open(tgz, mode="r:*") as tf:
        for m in tf:
            for want in ("data/meta.mat", gt_name):
                if m.isfile() and m.name.endswith(want):
                    found[want] = tf.extractfile(m).read()
    missing = [w for w in ("data/meta.mat", gt_name) if w not in found]
    if missing:
        raise SourceError(f"{tgz} holds no {', '.join(missing)}: is it the ILSVRC2012 task 1&2 devkit?")
    return found["data/meta.mat"], found[gt_name], str(tgz)


def devkit_labels(meta_mat: bytes, ground_truth: bytes, where: str = "devkit") -> tuple[dict[str, str], dict[str, str]]:
    """({val image stem: WNID}, {WNID: words}) from the devkit's meta.mat and ground truth.

    meta.mat's ``synsets`` lists the 1000 leaf classes (num_children == 0, ILSVRC2012_ID 1..1000)
    and the WordNet nodes above them; line i of the ground truth is the ILSVRC2012_ID of
    ILSVRC2012_val_{i:08d}.JPEG. Returns labels as WNIDs: the caller maps WNIDs to sorted indices.
    """
    import scipy.io  # the devkit's meta.mat is a MATLAB v5 file

    try:
        synsets = scipy.io.loadmat(io.BytesIO(meta_mat), squeeze_me=True)["synsets"]
    except Exception as e:
        raise SourceError(f"{where}: data/meta.mat is not readable as the devkit's synsets ({e})") from None
    id_to_wnid, names = {}, {}
    for s in synsets.ravel():
        if int(s["num_children"]) == 0:
            id_to_wnid[int(s["ILSVRC2012_ID"])] = str(s["WNID"])
            names[str(s["WNID"])] = str(s["words"])
    labels = {}
    for i, line in enumerate(ground_truth.decode().split(), start=1):
        cid = int(line)
        if cid not in id_to_wnid:
            raise SourceError(f"{where}: ground truth line {i} has ILSVRC2012_ID {cid}, not a leaf synset of meta.mat")
        labels[f"ILSVRC2012_val_{i:08d}"] = id_to_wnid[cid]
    return labels, names


def loc_csv_labels(path: Path) -> dict[str, str]:
    """{ImageId: WNID} from Kaggle's LOC_val_solution.csv (the first box's WNID: all boxes of an
    ILSVRC2012 val image carry its one class)."""
    labels = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                labels[row["ImageId"]] = row["PredictionString"].split()[0]
            except (KeyError, IndexError):
                raise SourceError(f"{path}: expected columns ImageId,PredictionString with a WNID first; got {row}") from None
    return labels


def _val_labels(root: Path) -> tuple[dict[str, str], dict[str, str], str] | None:
    dk = _devkit_files(root)
    if dk is not None:
        labels, names = devkit_labels(*dk)
        return labels, names, dk[2]
    if (root / LOC_CSV).exists():
        return loc_csv_labels(root / LOC_CSV), {}, str(root / LOC_CSV)
    return None


def _check_classes(train_wnids: set[str], val: list[Item], where: str) -> None:
    unknown = sorted({it.wnid for it in val} - train_wnids)
    if unknown:
        raise SourceError(f"{where} labels validation images with classes absent from the training set: {unknown[:5]}")


def detect_source(src: str | Path) -> Source:
    """Recognise the form of SRC and list its inputs; SourceError says what was expected."""
    root = Path(src)
    if not root.is_dir():
        raise SourceError(f"{root}: not a folder")
    if (root / "train").is_dir():
        return _tree_source(root, "", "tree")
    kaggle = root / "ILSVRC" / "Data" / "CLS-LOC"
    if (kaggle / "train").is_dir():
        return _kaggle_source(root, kaggle)
    if (root / TRAIN_TAR).is_file():
        return _archive_source(root)
    if any(p.is_dir() and p.name.isdigit() for p in root.iterdir()):
        return _imagenetv2_source(root)
    raise SourceError(
        f"{root}: found neither an ImageFolder tree ({root}/train/<wnid>/*.JPEG), nor the official archives "
        f"({root}/{TRAIN_TAR}, {VAL_TAR}, {DEVKIT}.tar.gz), nor the Kaggle layout ({root}/ILSVRC/Data/CLS-LOC/train), "
        f"nor an ImageNetV2 folder ({root}/<class index 0..999>/*.jpeg)"
    )


# ImageNetV2 (Recht et al. 2019, "Do ImageNet Classifiers Generalize to ImageNet?", arXiv 1902.10811;
# github.com/modestyachts/ImageNetV2): three test sets of 10,000 images, 10 per class (its README:
# "three test sets with 10,000 new images each"), released as imagenetv2-matched-frequency.tar.gz,
# imagenetv2-threshold0.7.tar.gz and imagenetv2-top-images.tar.gz, which extract to
# imagenetv2-<variant>-format-val/. Its code/make_imagenet_folders.py names each class folder
# str(label), label being the WNID's position in the sorted WNIDs: the folders are "0".."999", the
# very class indices of ILSVRC-2012 (sorted WNIDs, as ours). torchvision's ImageFolder sorts those
# names as strings ("10" < "2"), which gives 990 of the 1000 classes another class's index; here the
# label is int(folder name), and a folder that is not a plain integer 0..999 is refused.
IMAGENETV2_CLASSES = 1000
IMAGENETV2_VARIANTS = ("matched-frequency", "threshold0.7", "top-images")
_V2_NAME = re.compile(r"imagenetv2-(" + "|".join(re.escape(v) for v in IMAGENETV2_VARIANTS) + r")(?![\w.])",
                      re.IGNORECASE)


def imagenetv2_variant(root: Path) -> str:
    """The ImageNetV2 set a folder holds, from its name (the release's own folder or archive name)."""
    m = _V2_NAME.search(Path(os.path.abspath(root)).name)  # a symlink's own name, not its target's
    if m is None:
        raise SourceError(
            f"{root}: an ImageNetV2 folder (class folders 0..999), but its name does not say which of the three "
            f"test sets it is ({', '.join('imagenetv2-' + v for v in IMAGENETV2_VARIANTS)}), and their numbers "
            f"differ by points: keep the release's folder name (imagenetv2-<set>-format-val) or point --data.root "
            f"at a symlink so named")
    return f"imagenetv2-{m.group(1).lower()}"


def _imagenetv2_source(root: Path) -> Source:
    eval_set = imagenetv2_variant(root)
    items, labels = [], []
    for p in root.iterdir():
        if not p.is_dir():
            continue
        # a plain decimal integer: "007" would be class 7 twice over with "7", and int() takes "٣"
        if not (p.name.isascii() and p.name.isdigit() and p.name == str(int(p.name))):
            raise SourceError(f"{p}: an ImageNetV2 folder holds only class folders named by their class index "
                              f"0..{IMAGENETV2_CLASSES - 1}; move {p.name!r} out of {root}")
        if int(p.name) >= IMAGENETV2_CLASSES:
            raise SourceError(f"{p}: class index {p.name} is outside ILSVRC-2012's 0..{IMAGENETV2_CLASSES - 1}: "
                              f"this is not an ImageNetV2 folder")
        labels.append(int(p.name))
    for label in sorted(labels):  # integer order: the item list reads as the class indices
        for f in sorted((root / str(label)).iterdir()):
            rel = f"{label}/{f.name}"
            items.append(Item(rel, str(label), rel))
    # the class list is the integers 0..max (ImageNetV2: 0..999), so position == int(folder name)
    # even with a class folder missing (it keeps its index and is listed as empty)
    classes = [str(i) for i in range(max(labels) + 1)]
    desc = (f"ImageNetV2 {eval_set}: {len(items)} test files in {len(labels)} class folders named by class index "
            f"(labels = int(folder name))")
    return Source("imagenetv2", root, {"val": items}, classes, {c: c for c in classes}, desc, eval_set)


def _tree_source(root: Path, prefix: str, form: str) -> Source:
    base = f"{prefix}train" if prefix else "train"
    splits = {"train": scan_tree(root, base)}
    wnids = class_folders(root, base)
    val_dir = f"{prefix}val" if prefix else "val"
    if (root / val_dir).is_dir():
        splits["val"] = scan_tree(root, val_dir)
        _check_classes(set(wnids), splits["val"], f"{root}/{val_dir}")
    names = _synset_names(root / SYNSET_MAPPING)
    desc = f"ImageFolder tree: {len(splits['train'])} training files in {len(wnids)} class folders"
    desc += f", {len(splits['val'])} validation files" if "val" in splits else ", no val/ folder"
    return Source(form, root, splits, wnids, {w: names.get(w, w) for w in wnids}, desc)


def _kaggle_source(root: Path, base: Path) -> Source:
    rel = base.relative_to(root).as_posix()
    splits = {"train": scan_tree(root, f"{rel}/train")}
    wnids = class_folders(root, f"{rel}/train")
    desc = f"Kaggle ImageNet layout: {len(splits['train'])} training files in {len(wnids)} class folders"
    if (base / "val").is_dir():
        if not (root / LOC_CSV).exists():
            raise SourceError(f"{base}/val is a flat folder: its labels must be in {root}/{LOC_CSV}")
        splits["val"] = _flat_dir(root, f"{rel}/val", loc_csv_labels(root / LOC_CSV), str(root / LOC_CSV))
        _check_classes(set(wnids), splits["val"], str(root / LOC_CSV))
        desc += f", {len(splits['val'])} validation files labelled by {LOC_CSV}"
    names = _synset_names(root / SYNSET_MAPPING)
    return Source("kaggle", root, splits, wnids, {w: names.get(w, w) for w in wnids}, desc)


def _archive_source(root: Path) -> Source:
    train, wnids = _scan_train_tar(root)
    splits = {"train": train}
    desc = f"ILSVRC2012 archives: {TRAIN_TAR} with {len(train)} images in {len(wnids)} class tars"
    names: dict[str, str] = _synset_names(root / SYNSET_MAPPING)
    if (root / VAL_TAR).is_file():
        got = _val_labels(root)
        if got is None:
            raise SourceError(
                f"{root}/{VAL_TAR} needs its labels: put {DEVKIT}.tar.gz (the ILSVRC2012 devkit) or {LOC_CSV} "
                f"beside it"
            )
        labels, dk_names, where = got
        if dk_names and set(dk_names) != set(wnids):
            extra, missing = sorted(set(dk_names) - set(wnids)), sorted(set(wnids) - set(dk_names))
            raise SourceError(
                f"{where} lists {len(dk_names)} classes but {TRAIN_TAR} has {len(wnids)} class tars "
                f"(only in devkit: {extra[:5]}, only in train: {missing[:5]}): they are not from the same release"
            )
        names = {**names, **dk_names}
        splits["val"] = _scan_val_tar(root, labels, where)
        _check_classes(set(wnids), splits["val"], where)
        desc += f"; {VAL_TAR} with {len(splits['val'])} images labelled by {Path(where).name}"
    else:
        desc += f"; no {VAL_TAR}"
    return Source("archives", root, splits, wnids, {w: names.get(w, w) for w in wnids}, desc)
