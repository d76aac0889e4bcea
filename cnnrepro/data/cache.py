"""Where cnnrepro keeps what it makes once and reuses: the demo and MNIST shards, the benchmark
sets, and the record of shards whose sha256 has been checked (data/verify.py).

The verified-shards record lives in the user's cache folder, not beside the shards, because shared
datasets are often read-only.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = ["cache_dir", "verified_path", "stat_key", "load_verified", "save_verified", "remember_verified"]


def cache_dir() -> Path:
    """``$CNNREPRO_CACHE``, default ``~/.cache/cnnrepro``."""
    return Path(os.environ.get("CNNREPRO_CACHE", Path.home() / ".cache" / "cnnrepro"))


def verified_path(root: Path) -> Path:
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "verified" / f"{digest}.json"


def stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def load_verified(root: Path) -> dict:
    try:
        cache = json.loads(verified_path(root).read_text())
        return cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):  # no cache yet, or one cut short: hash again
        return {}


def save_verified(root: Path, cache: dict) -> None:
    path = verified_path(root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # ranks of one job may write at once
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache only costs hashing again next time


def remember_verified(root: str | Path, manifest: dict) -> None:
    """Record the shards the writer has just hashed as verified (their sha256 is the manifest's)."""
    root = Path(root)
    cache = {}
    for sh in (sh for split in ("train", "val") if split in manifest for sh in manifest[split]["shards"]):
        cache[sh["name"]] = {"stat": stat_key(root / sh["name"]), "sha256": sh["sha256"]}
    save_verified(root, cache)
