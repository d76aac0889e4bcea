"""Reading an unconverted ImageNet (``--data.format imagefolder``) through the shard streams.

For users who have not run ``cnnrepro shards`` yet: the tree (or any form ``ilsvrc.detect_source``
recognises: ``SRC/train/<wnid>/`` + ``SRC/val/<wnid>/``, the Kaggle layout) is cut into groups of
files that play the part of shards (``stream.ShardInfo`` with ``files``), so training and
validation run through the very same ``TrainStream`` / ``EvalStream`` code: the same transforms,
the same exact steps per rank, the same exactly-once validation.

What the shards give and this reader cannot:
* no write-time check: a truncated or empty file fails when it is first read (naming the file),
  instead of being listed and left out; CMYK, grayscale and PNG-named-.JPEG files are converted
  to RGB on every read (``transforms.decode_rgb``);
* the training RGB mean and PCA (AlexNet Sec. 2 and 4.1) are estimated from a seeded sample of
  ``stats_files`` training images instead of all of them;
* one file open per image, which on NFS or object storage is far slower than one tar stream.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from .ilsvrc import Source, detect_source, read_item
from .stream import ShardInfo

__all__ = ["folder_manifest", "FILES_PER_GROUP"]

FILES_PER_GROUP = 1000  # files per pseudo-shard, as `cnnrepro shards`' default samples per shard


def folder_manifest(
    root: str | Path, *, seed: int = 0, files_per_group: int = FILES_PER_GROUP, stats_files: int = 1000,
    source: Source | None = None,
) -> tuple[dict, dict[str, list[ShardInfo]]]:
    """(a manifest shaped like the shard writer's, {split: groups of files as ShardInfo})."""
    from .shards import _rgb_moments, rgb_stats_from_moments  # one definition of the statistics

    root = Path(root)
    source = source or detect_source(root)
    cls_of = source.class_index()
    groups: dict[str, list[ShardInfo]] = {}
    manifest: dict = {
        "version": 1,
        "format": "imagefolder",
        "source": str(root.resolve()),
        "source_form": source.form,
        "source_description": source.description,
        "eval_set": source.eval_set,
        "classes": [{"index": i, "wnid": w, "name": source.names.get(w, w)} for i, w in enumerate(source.wnids)],
        # as the shard writer: an empty class keeps its index and is listed (it warns when writing)
        "empty_classes": {split: [{"index": cls_of[w], "wnid": w} for w in ws]
                          for split, ws in source.empty_classes().items()},
        "preprocessing": {"mode": "original", "flag": None, "shorter_side": None, "square": False,
                          "bytes": "files read as they are, converted to RGB when decoded"},
    }
    for split, items in source.splits.items():
        pairs = [(it, cls_of[it.wnid]) for it in items]
        if split == "train":
            # as the shard writer does: groups mix classes, so that the shuffle buffer sees a mixed stream
            random.Random(seed).shuffle(pairs)
        groups[split] = [
            ShardInfo(str(root), len(chunk), tuple(chunk))
            for chunk in (pairs[k : k + files_per_group] for k in range(0, len(pairs), files_per_group))
        ]
        manifest[split] = {"inputs": len(pairs), "samples": len(pairs),
                           "shards": [{"name": f"{split}-files-{i:06d}", "count": g.count} for i, g in enumerate(groups[split])],
                           "rejected": [], "repaired": []}
    train = source.splits.get("train", [])  # an ImageNetV2 folder is a test set: no training split
    if train and stats_files > 0:
        rng = random.Random(seed)
        sample = rng.sample(train, min(stats_files, len(train)))
        s1, s2, n, used = np.zeros(3), np.zeros((3, 3)), 0, 0
        for it in sample:
            try:
                a, b, k = _rgb_moments(read_item(root, it))
            except Exception:  # noqa: BLE001  an unreadable file fails later, when training reads it
                continue
            s1, s2, n, used = s1 + a, s2 + b, n + k, used + 1
        if n:
            manifest["rgb_stats"] = {**rgb_stats_from_moments(s1, s2, n),
                                     "estimated_from": f"{used} training images drawn with seed {seed}"}
    return manifest, groups
