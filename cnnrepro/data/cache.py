"""Where cnnrepro keeps what it makes once and reuses: the demo and MNIST shards, the benchmark
sets, and the record of shards whose sha256 has been checked (data/verify.py).

The verified-shards record lives in the user's cache folder, not beside the shards, because shared
datasets are often read-only.

Every rank of a job (and every job of a user) may start on an empty cache at once: a build runs
under ``build_lock``, so one process builds and the others wait for it, then use its result.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cnnrepro.errors import UserError

__all__ = ["cache_dir", "build_lock", "verified_path", "stat_key", "load_verified", "save_verified",
           "remember_verified"]


def cache_dir() -> Path:
    """``$CNNREPRO_CACHE``, default ``~/.cache/cnnrepro``."""
    return Path(os.environ.get("CNNREPRO_CACHE", Path.home() / ".cache" / "cnnrepro"))


@contextmanager
def build_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold the exclusive build lock of ``folder`` (its ``.build.lock`` file) for the ``with`` body.

    A POSIX record lock (``fcntl.lockf``), not ``flock``: NFS carries record locks to the server
    (lockd / NFSv4), so the ranks of a multi-node job on a shared cache exclude each other too, and
    the kernel (or the NFS server) releases the lock of a process that dies, so no stale lock stays
    behind to block the next job. The caller checks again under the lock whether the build is done.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".build.lock"
    with open(path, "a+") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise _no_lock(path, e) from None
            print(f"cnnrepro: waiting for another process building {what} ({path})", file=sys.stderr, flush=True)
            try:
                fcntl.lockf(f, fcntl.LOCK_EX)
            except OSError as e2:
                raise _no_lock(path, e2) from None
        try:
            yield
        finally:
            fcntl.lockf(f, fcntl.LOCK_UN)


def _no_lock(path: Path, e: OSError) -> UserError:
    # e.g. ENOLCK: an NFS mount without lockd (nolock)
    return UserError(f"{path}: cannot lock the cache folder ({e.strerror}); point CNNREPRO_CACHE at a folder on a "
                     f"file system with file locks (a node-local disk works: each node then builds its own copy)")


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
