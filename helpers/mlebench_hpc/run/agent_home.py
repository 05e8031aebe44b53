"""The agent's writable /home/agent: a per-run copy of the image's AGENT_DIR.

Upstream's start scripts write into /home/agent (`cd $AGENT_DIR`, full_instructions.txt,
workspaces/), which is read-only in a SIF. So each attempt of a run gets its own copy, made by the
host from the image file itself (images/sif.py: nothing of the image runs) into RUN/agent/, and
bound read-write at /home/agent; never shared between runs or attempts (an earlier attempt's copy
is removed first). What the image holds is data: names are checked, links are recreated as links
(never followed: nothing on the host reads this directory afterwards), special files are skipped,
setuid bits dropped, and the copy is bounded in files and bytes.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from mlebench_hpc.images.sif import ImageError, SifImage

IMAGE_AGENT_DIR = "/home/agent"  # upstream's AGENT_DIR build argument
MAX_ENTRIES = 500_000
MAX_BYTES = 8 * 1024**3


@dataclass(frozen=True)
class Copied:
    files: int
    dirs: int
    links: int
    skipped: int
    bytes: int

    def record(self) -> dict[str, int]:
        return {"files": self.files, "dirs": self.dirs, "links": self.links, "skipped": self.skipped,
                "bytes": self.bytes}  # fmt: skip


def _clear(dest: Path) -> None:
    """Remove an earlier attempt's copy (the agent wrote it: links in it are removed, never followed)."""
    try:
        st = dest.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(dest)  # fd-based on Linux: does not follow links planted inside
    else:
        dest.unlink()


def copy_agent_dir(
    image: Path,
    dest: Path,
    src: str = IMAGE_AGENT_DIR,
    max_entries: int = MAX_ENTRIES,
    max_bytes: int = MAX_BYTES,
) -> Copied:
    """Copy SRC of the agent SIF to DEST (made fresh). An image without SRC gets an empty DEST."""
    _clear(dest)
    dest.mkdir(mode=0o755, parents=True)
    files = dirs = links = skipped = total = 0
    with SifImage(image) as img:
        top = img.lookup(src)
        if top is None:
            return Copied(0, 0, 0, 0, 0)
        if top.kind != "dir":
            raise ImageError(
                f"{src} in {image} is not a directory ({top.kind}): the agent's files must be there"
            )
        for entry in img.walk(src, max_entries):
            if entry.path == src:
                continue
            host = dest / entry.path[len(src) + 1 :]
            if entry.kind == "dir":
                host.mkdir(mode=0o700)
                os.chmod(host, (entry.mode & 0o777) | 0o700)  # the user must be able to write in it
                dirs += 1
            elif entry.kind == "file":
                total += entry.size
                if total > max_bytes:
                    raise ImageError(f"{src} of {image} holds more than {max_bytes} bytes: refused")
                fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    for block in img.iter_bytes(entry.path, max_bytes):
                        out.write(block)
                os.chmod(host, (entry.mode & 0o777) | 0o600)
                files += 1
            elif entry.kind == "symlink" and entry.target and "\0" not in entry.target:
                os.symlink(entry.target, host)
                links += 1
            else:
                skipped += 1  # devices, FIFOs, sockets, unreadable links: not an agent's files
    return Copied(files, dirs, links, skipped, total)
