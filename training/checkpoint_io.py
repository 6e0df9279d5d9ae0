"""Atomic checkpoint writing: a checkpoint file is either the old one or the complete new one, never half.

A run killed while writing ``last.ckpt`` (SIGKILL, a full disk, a failing ``torch.save``) must leave
the previous ``last.ckpt`` readable, since ``--ckpt_path last`` resumes from it. Each checkpoint is
written to a temporary file in the same folder, flushed and fsync'ed, then moved over the target
with ``os.replace`` (atomic within one filesystem) and the folder fsync'ed so the rename itself is
durable. ``train.py`` installs this as the strategy's CheckpointIO.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` through a same-folder temporary file, fsync and ``os.replace``.

    On any failure the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (not possible on every platform; ignored where not)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO whose ``save_checkpoint`` is atomic for local paths (remote URLs,
    e.g. ``s3://``, fall back to Lightning's own transactional writer)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        if "://" in str(path) and not str(path).startswith("file://"):
            return super().save_checkpoint(checkpoint, path)
        atomic_torch_save(checkpoint, str(path).removeprefix("file://"))
