"""Checkpoint writes that a kill, a full disk or a preemption cannot tear: ``AtomicCheckpointIO``."""

import errno
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch
from fsspec.core import strip_protocol
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

TMP_SUFFIX = ".tmp"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into ``<path>.tmp`` in the same directory, fsync, then ``os.replace``.

    Lightning's own save goes through an fsspec transaction whose temp file lives in ``$TMPDIR``
    (Lightning-AI/pytorch-lightning#20270, fsspec#1827); when that is another filesystem (node-local
    /tmp, checkpoints on NFS/Lustre) the final move is copy + delete and a kill mid-copy truncates the
    checkpoint. A rename within one directory is atomic, so readers see the old file or the new one,
    never a partial one. Remote paths (s3://...) keep Lightning's behaviour.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(strip_protocol(str(path))) if str(path).startswith("file:") else Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + TMP_SUFFIX)
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
        except BaseException as e:
            tmp.unlink(missing_ok=True)  # never leave a partial file behind; the previous checkpoint is intact
            if is_disk_full(e):
                free = shutil.disk_usage(target.parent).free
                raise OSError(
                    errno.ENOSPC,
                    f"no space left on {target.parent} ({free / 2**20:.1f} MiB free) while saving {target.name}; "
                    f"the previous {target.name} is intact. Free some space or move the run directory",
                ) from e
            raise
        os.replace(tmp, target)
        _fsync_dir(target.parent)  # make the rename itself durable


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC anywhere in the chain: torch reports a full disk as "unexpected pos", the OSError as its context."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be a checkpoint (missing, empty, truncated, another kind of file), None if it can.

    Cheap: a ``torch.save`` file is a zip archive whose central directory sits at its end, so reading
    that directory catches empty, truncated and foreign files without loading any tensor. Directories
    (sharded checkpoints of distributed strategies) and remote paths are left to Lightning.
    """
    if "://" in str(path):
        return None
    p = Path(path)
    if not p.exists():
        return "no such file"
    if p.is_dir():
        return None
    size = p.stat().st_size
    if size == 0:
        return "an empty file (0 bytes)"
    if not zipfile.is_zipfile(p):
        return f"not a torch.save archive ({size} bytes): truncated, corrupted, or another kind of file"
    with zipfile.ZipFile(p) as archive:
        if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in archive.namelist()):
            return "a zip archive without data.pkl: not written by torch.save"
    return None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
