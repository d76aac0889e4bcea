"""Checking shards against their manifest: sizes at every start, sha256 on demand, cached.

Three levels, from cheap to complete:

* ``check_sizes``: every shard of the given splits exists and has the size the manifest records
  (a stat per shard). The DataModule runs it at setup, so a shard cut short or missing stops the
  run before the first step.
* ``verify_shards``: the sha256 of every shard against the manifest. The result of a shard that
  matched is cached under ``CNNREPRO_CACHE/verified/``, keyed by the shard's size, mtime, ctime
  and inode, so a second check of unchanged shards reads nothing. The DataModule runs it on the
  validation shards at setup (a flipped label there changes a top-1 silently), and
  ``cnnrepro shards --verify DST`` on every shard.
* while streaming, ``stream.py`` counts each shard's samples against the manifest.

The cache lives in the user's cache folder, not beside the shards, because shared datasets are
often read-only. A ctime cannot be set by a user, so a shard edited and given its old mtime back
is still hashed again.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cnnrepro.errors import UserError

from .cache import load_verified, remember_verified, save_verified, stat_key
from .shards import ManifestError, read_manifest, sha256_file

__all__ = ["ShardCheckError", "check_sizes", "verify_shards", "remember_verified", "verify_command"]


class ShardCheckError(UserError):
    """Shards disagree with their manifest (missing, wrong size or sha256); the message names each one."""


def _shards(manifest: dict, splits) -> list[dict]:
    return [sh for split in splits if split in manifest for sh in manifest[split]["shards"]]


def rewrite_hint(root: Path, manifest: dict) -> str:
    """The command that rewrites the damaged shards of ``root`` (and only those)."""
    flag = (manifest.get("preprocessing") or {}).get("flag")
    cmd = f"cnnrepro shards {manifest.get('source', 'SRC')} {root}"
    if manifest.get("samples_per_shard"):
        cmd += f" --samples-per-shard {manifest['samples_per_shard']}"
    if manifest.get("seed"):
        cmd += f" --seed {manifest['seed']}"
    if flag:
        cmd += f" {flag}"
    return f"rewrite them with `{cmd}` (it rewrites exactly the damaged shards and keeps the rest)"


def _size_problems(root: Path, manifest: dict, splits) -> dict[str, str]:
    problems = {}
    for sh in _shards(manifest, splits):
        path = root / sh["name"]
        try:
            size = path.stat().st_size
        except OSError as e:
            problems[sh["name"]] = f"{path}: missing ({e.strerror})"
            continue
        if "bytes" in sh and size != sh["bytes"]:
            problems[sh["name"]] = f"{path}: {size} bytes, the manifest says {sh['bytes']} (truncated or overwritten)"
    return problems


def check_sizes(root: str | Path, manifest: dict, splits=("train", "val")) -> list[str]:
    """Problems of the shards of ``splits``: missing, or not the size the manifest records.

    Manifests of version 1 hold no sizes: their shards are only checked to exist."""
    return list(_size_problems(Path(root), manifest, splits).values())


def verify_shards(root: str | Path, manifest: dict, splits=("train", "val"), *, progress: bool = False) -> list[str]:
    """Problems of the shards of ``splits`` after hashing every one not cached as verified."""
    root = Path(root)
    sized = _size_problems(root, manifest, splits)
    problems = list(sized.values())
    cache = load_verified(root)
    todo = [sh for sh in _shards(manifest, splits) if sh["name"] not in sized]
    if progress:
        from tqdm import tqdm

        todo = tqdm(todo, unit="shard", desc=f"sha256 {root}")
    changed = False
    for sh in todo:
        path = root / sh["name"]
        key = stat_key(path)
        hit = cache.get(sh["name"])
        if hit and hit.get("stat") == key and hit.get("sha256") == sh["sha256"]:
            continue
        if sha256_file(path) == sh["sha256"]:
            cache[sh["name"]] = {"stat": key, "sha256": sh["sha256"]}
        else:
            cache.pop(sh["name"], None)
            problems.append(f"{path}: sha256 differs from the manifest (damaged: flipped bits, labels or pixels)")
        changed = True
    if changed:
        save_verified(root, cache)
    return problems


def raise_problems(root: Path, manifest: dict, problems: list[str]) -> None:
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ShardCheckError(f"{len(problems)} shard(s) disagree with {root / 'manifest.json'}: "
                              + "; ".join(problems[:5]) + more + "; " + rewrite_hint(root, manifest))


def verify_remote(root: str, manifest: dict, splits=("train", "val"), *, progress: bool = False) -> list[str]:
    """Problems of the shards of a remote root: missing or of another size (one listing), then the
    sha256 of every other one, streamed (nothing is cached: the store may change under us)."""
    from .remote import CorruptSampleError, ShardStream, join, size_problems

    shards = _shards(manifest, splits)
    sized = size_problems(root, manifest, shards)
    problems = list(sized.values())
    todo = [sh for sh in shards if sh["name"] not in sized]
    if progress:
        from tqdm import tqdm

        todo = tqdm(todo, unit="shard", desc=f"sha256 {root}")
    for sh in todo:
        s = ShardStream(join(root, sh["name"]), size=sh.get("bytes"), sha256=sh["sha256"])
        try:
            s.finish()  # reads the object to its end, then checks size and sha256
        except CorruptSampleError as e:
            problems.append(str(e).split("; upload the shard again")[0])
        finally:
            s.close()
    return problems


def verify_command(dst: str | Path) -> int:
    """`cnnrepro shards --verify DST`: hash every shard; 0 if all match, else 1 after naming each bad one.
    DST may be a remote root (data/remote.py): its shards are streamed and hashed."""
    from .remote import check_root, is_remote

    remote = is_remote(dst)
    root = check_root(dst) if remote else Path(dst)
    manifest = read_manifest(root)
    if manifest.get("format") == "imagefolder":
        raise ManifestError(f"{root}/manifest.json describes an unconverted tree: there are no shards to verify")
    problems = (verify_remote if remote else verify_shards)(root, manifest, progress=True)
    n = len(_shards(manifest, ("train", "val")))
    if not problems:
        print(f"{root}: all {n} shards match manifest.json (size and sha256)")
        return 0
    for p in problems:
        print(f"BAD {p}", file=sys.stderr)
    fix = (f"rewrite and upload them with `cnnrepro shards {manifest.get('source', 'SRC')} {root}` (it uploads "
           f"exactly the shards that differ from the ones it would write)" if remote else rewrite_hint(root, manifest))
    print(f"{len(problems)} of {n} shards are bad: {fix}", file=sys.stderr)
    return 1
