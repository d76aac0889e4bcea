"""ImageNet-ReaL: the reassessed labels of the ILSVRC-2012 validation set (``--data.real_labels``).

Beyer et al. 2020, "Are we done with ImageNet?" (arXiv 2006.07159); the labels are the
``real.json`` of github.com/google-research/reassessed-imagenet. Its README states the format we
check here: "a list of 50 000 lists"; "the first list holds all valid labels for the file
``ILSVRC2012_val_00000001.JPEG``, the second list holds all valid labels for the file
``ILSVRC2012_val_00000002.JPEG``, etc."; and "lists can be empty, in which case the file should not
be included in the evaluation, nor in computing mean accuracy" (3,163 of the 50,000 are empty in the
released file, so ReaL accuracy is over 46,837 images). A prediction is correct when it is one of
the image's ReaL labels (the README's ``pred in real_labels[i]``). The class indices are those of
the sorted-WNID order (0..999), the order every ILSVRC-2012 pipeline and this project use.

The paper reports ReaL accuracy of the top-1 prediction only; timm's ``real_labels.py`` also
reports a "top-5" (any of the five in the set), which the paper does not define: not built here.

Images are matched by their original file number, parsed from the source path each sample
carries (``ILSVRC2012_val_(\\d{8})``: a shard's ``.json`` member, an unconverted tree's file path),
never by their position, so a subset, another order or several ranks score the right image.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnrepro.errors import UserError

from .remote import CorruptSampleError

__all__ = [
    "REAL_IMAGES",
    "REAL_SOURCE",
    "RealLabels",
    "RealLabelsError",
    "RealSampleError",
    "load_real_labels",
    "real_hits",
    "val_number",
]

REAL_IMAGES = 50_000  # ILSVRC2012_val_00000001 .. 00050000
REAL_CLASSES = 1000
VAL_FILE = re.compile(r"ILSVRC2012_val_(\d{8})")
REAL_SOURCE = "Beyer et al. 2020, arXiv 2006.07159; github.com/google-research/reassessed-imagenet real.json"
FIX = "give --data.real_labels the real.json of github.com/google-research/reassessed-imagenet, unchanged"


class RealLabelsError(UserError):
    """real.json is not the ReaL file, or the data is not the set it labels; the message says which."""


class RealSampleError(CorruptSampleError):
    """A sample that ReaL cannot label (no ``ILSVRC2012_val_`` name). A CorruptSampleError only for
    its unwrapping of the DataLoader worker's traceback into our one line: the sample is not damaged."""


@dataclass(frozen=True)
class RealLabels:
    """real.json, checked: ``table[n - 1]`` holds the labels of ``ILSVRC2012_val_{n:08d}``, padded
    with -1 to the longest list (a dense tensor: one gather per batch on the device)."""

    path: str
    sha256: str
    table: torch.Tensor  # REAL_IMAGES x width, int16
    labelled: int  # images with at least one ReaL label

    def record(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "images_labelled": self.labelled, "source": REAL_SOURCE}


def load_real_labels(path: str | Path) -> RealLabels:
    """real.json read and checked; a RealLabelsError names the file and the first bad entry."""
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RealLabelsError(f"--data.real_labels {path}: cannot be read ({e.strerror}); {FIX}") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RealLabelsError(f"--data.real_labels {path}: not valid JSON ({e}); {FIX}") from None
    if not isinstance(data, list) or len(data) != REAL_IMAGES:
        what = f"a list of {len(data)} entries" if isinstance(data, list) else f"a JSON {type(data).__name__}"
        raise RealLabelsError(f"--data.real_labels {path}: {what}, not ReaL's list of {REAL_IMAGES} lists (one per "
                              f"ILSVRC2012_val_ image, in file order); {FIX}")
    width = 1
    for i, labels in enumerate(data):
        if not isinstance(labels, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) and 0 <= c < REAL_CLASSES for c in labels):
            raise RealLabelsError(f"--data.real_labels {path}: entry {i} (ILSVRC2012_val_{i + 1:08d}) is "
                                  f"{json.dumps(labels)[:60]}, not a list of class indices 0..{REAL_CLASSES - 1}; {FIX}")
        width = max(width, len(labels))
    table = torch.full((REAL_IMAGES, width), -1, dtype=torch.int16)
    for i, labels in enumerate(data):
        if labels:
            table[i, : len(labels)] = torch.tensor(labels, dtype=torch.int16)
    return RealLabels(str(path.resolve()), hashlib.sha256(raw).hexdigest(), table, sum(1 for x in data if x))


def val_number(source: str | None, where: str) -> int:
    """n of the ``ILSVRC2012_val_{n:08d}`` file a sample was made from (1..50,000); ``where`` names
    the sample in the error."""
    m = VAL_FILE.search(source or "")
    if m is None or not 1 <= int(m.group(1)) <= REAL_IMAGES:
        got = f"its source is {source!r}" if source else "it carries no source path (no .json member)"
        raise RealSampleError(
            f"--data.real_labels: {where}: {got}, not an ILSVRC2012_val_NNNNNNNN file (1..{REAL_IMAGES}): ReaL labels "
            f"only the ILSVRC-2012 validation images, matched by file name; evaluate the original val images (a tree or "
            f"archives with their file names, or shards written from them by `cnnrepro shards`), or drop "
            f"--data.real_labels")
    return int(m.group(1))


def real_hits(table: torch.Tensor, logits: torch.Tensor, nums: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ReaL-correct top-1 predictions, images with a ReaL label) of a batch, as float64 counts: the
    top-1 (argmax of ``logits``, the protocol's ranking) is correct when it is one of its image's
    ReaL labels; an image with none is in neither count (the README: "should not be included in
    the evaluation, nor in computing mean accuracy"). ``nums``: ILSVRC2012_val_ numbers (1-based);
    ``table``: ``RealLabels.table`` on the logits' device."""
    labels = table[nums.to(table.device) - 1].long()  # B x width, -1 = no label
    pred = logits.argmax(dim=1)  # the top-1 of MulticlassAccuracy(top_k=1)
    return (labels == pred[:, None]).any(dim=1).sum().double(), (labels >= 0).any(dim=1).sum().double()
