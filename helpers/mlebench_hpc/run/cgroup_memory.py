"""The peak memory of this process's Slurm job on this node, from the job's cgroup (task/cgroup with
ConstrainRAMSpace): the kernel keeps it, the agent cannot write it. Read by the job's own
host-side scripts at their end (`run cost`), never from anything the agent wrote.

cgroup v1: memory.max_usage_in_bytes of `.../job_<id>/` (page cache included, as the kernel counts
a cgroup's usage); cgroup v2: memory.peak (kernel 5.19+). None where neither can be read."""

from __future__ import annotations

import re
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
_JOB_DIR = re.compile(r"^(.*?/job_\d+)(?:/|$)")


def job_cgroup_dirs(proc_cgroup: str, root: Path = CGROUP_ROOT) -> list[Path]:
    """The job-level cgroup directories named in /proc/self/cgroup text: the v1 memory
    controller's, then the v2 unified one's."""
    out = []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        m = _JOB_DIR.match(path)
        if m is None:
            continue
        if "memory" in controllers.split(","):
            out.insert(0, root / "memory" / m.group(1).lstrip("/"))
        elif controllers == "":
            out.append(root / m.group(1).lstrip("/"))
    return out


def job_peak_mem_mb(root: Path = CGROUP_ROOT) -> float | None:
    """Peak memory (MiB) of this job's cgroup on this node so far, or None."""
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return None
    for d in job_cgroup_dirs(text, root):
        for name in ("memory.max_usage_in_bytes", "memory.peak"):
            try:
                value = (d / name).read_text().strip()
            except OSError:
                continue
            if value.isdigit():
                return int(value) / (1024 * 1024)
    return None
