"""Atomic file writes: a temp file beside the target, fsync, rename; the temp file never outlives an error.

A crash or a full disk therefore leaves either the old file or the new one, never half a file and no
``.tmp`` litter. Symlinks at the target are replaced (the rename acts on the link), never written through.
"""

from __future__ import annotations

import os
from pathlib import Path


def temp_path(path: Path) -> Path:
    """The temp file of `path`: hidden, beside it (same file system, so the rename is atomic)."""
    return path.with_name(f".{path.name}.tmp")


def write_bytes_atomic(path: Path, data: bytes | memoryview, *, durable: bool = True) -> Path:
    """Write `data` to `path` atomically (see the module docstring); `durable` fsyncs before the rename.

    Raises:
        OSError: the write failed (disk full, I/O error); the temp file is deleted, `path` is untouched.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str, *, durable: bool = True) -> Path:
    """:func:`write_bytes_atomic` of `text` encoded as UTF-8."""
    return write_bytes_atomic(path, text.encode("utf-8"), durable=durable)
