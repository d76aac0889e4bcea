"""The one base class of the errors a user can fix.

Anything raised as a `UserError` (or a subclass) reaches the `cnnrepro` entry point, which prints
it as a single line, `cnnrepro: error: <message>`, and exits 2: the message must name the file, key
or flag at fault and say how to fix it. Everything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import errno
from pathlib import Path

__all__ = ["UserError", "unwritable", "WRITE_ERRNOS"]

# the write failures a user fixes (space, quota, a read-only or foreign folder), not bugs
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class UserError(Exception):
    """A mistake in the user's input, files or environment, reported as one line (exit code 2)."""


def unwritable(path: str | Path, what: str, e: BaseException, *, full: bool | None = None) -> UserError:
    """The one-line error of a write that failed for a reason the user fixes.

    ``full``: the caller measured the file system as full (torch.save reports a full disk as a
    RuntimeError "file write failed", without an errno).
    """
    path = Path(path)
    code = getattr(e, "errno", None)
    if full or code in (errno.ENOSPC, errno.EDQUOT):
        why = "no space left on device" if code != errno.EDQUOT else "disk quota exceeded"
        fix = f"free space on the file system holding {path.parent} (or point --run.dir elsewhere) and rerun"
    elif code in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = {errno.EROFS: "read-only file system"}.get(code, "permission denied")
        fix = f"make {path.parent} writable (or point --run.dir at a writable folder) and rerun"
    else:
        why, fix = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, f"check {path.parent}"
    return UserError(f"cannot write the {what} {path}: {why}; {fix}")
