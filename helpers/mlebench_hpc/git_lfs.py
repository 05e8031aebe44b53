"""Git LFS pointers: what a clone without `git lfs pull` holds instead of upstream's leaderboards."""

from __future__ import annotations

from pathlib import Path

# The first bytes of every pointer file (the spec's `version` line).
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"


def is_lfs_pointer(path: Path) -> bool:
    """PATH starts like a Git LFS pointer file. Raises OSError when it cannot be read."""
    with Path(path).open("rb") as fh:
        return fh.read(len(LFS_POINTER_PREFIX)) == LFS_POINTER_PREFIX
