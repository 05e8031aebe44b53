"""Atomic file writes: every file another process may read while we write it (URL files,
metadata.json, sweep.json, reports, prepared data) goes through here."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write DATA to a temporary file beside PATH, fsync it, then rename it over PATH, so a reader
    sees the old file or the new one, never half of one. MODE defaults to what open() would give
    (0666 less the umask; mkstemp alone makes 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
