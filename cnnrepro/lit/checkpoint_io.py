"""Checkpoint files that are complete or absent, never truncated."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from cnnrepro.errors import WRITE_ERRNOS, UserError, unwritable

__all__ = ["AtomicCheckpointIO", "read_checkpoint_hparams"]


def read_checkpoint_hparams(path: str | Path) -> dict[str, Any]:
    """The model hyperparameters of the Lightning checkpoint ``path``; a damaged file is a UserError.

    torch's own errors for a zero-byte, truncated or foreign file name neither the file nor the fix
    (a zero-byte file reads as "failed finding central directory" or an EOFError deep in pickle).
    """
    path = Path(path)
    fix = "pass a complete checkpoint written by `cnnrepro fit` (a run folder's checkpoints/last.ckpt or best-epochNNN.ckpt)"
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"--ckpt_path {path}: the file is empty (0 bytes), e.g. a copy or a write that was cut off; {fix}")
    try:
        # mmap: the weights are not read, only the pickled structure
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch raises RuntimeError, EOFError, UnpicklingError, ... for a bad file)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--ckpt_path {path}: not a readable checkpoint ({size} bytes; torch.load: {reason[:160]}); "
                        f"{fix}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UserError(f"--ckpt_path {path}: a torch file but not a Lightning checkpoint (no state_dict); {fix}")
    return dict(ckpt.get("hyper_parameters") or {})


def _chain(e: BaseException | None):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary file beside the target, fsync, then rename over the target.

    ``os.replace`` is atomic on POSIX file systems (also NFS and Lustre for a same-directory
    rename), so a kill at any moment leaves either the previous complete ``last.ckpt`` or the new
    complete one, never a truncated file. Lightning's default writes through an fsspec transaction
    that does not fsync; after a node crash the renamed file could still be empty.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as e:
            # torch.save's zip writer reports a full disk as a RuntimeError ("file write failed",
            # or "unexpected pos" raised while handling the OSError): look down the chain, else
            # measure the free space while the partial file still holds it
            cause = next((c for c in _chain(e) if isinstance(c, OSError) and c.errno in WRITE_ERRNOS), None)
            if cause is None and not (isinstance(e, RuntimeError) and "write" in str(e)):
                raise
            full = cause is None and shutil.disk_usage(path.parent).free < (1 << 20)
            raise unwritable(path, "checkpoint", cause or e, full=full) from None
        finally:
            if tmp.exists():
                tmp.unlink()
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
