"""Checkpoint writes that a kill, a full disk or a preemption cannot tear: ``AtomicCheckpointIO``."""

import os
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
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)  # make the rename itself durable


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
