"""Where a run lives and how its phases talk to bash: the one place that builds a run's path and
its subdirectories, and the shell assignments the jobs `eval`."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from mlebench_hpc.errors import HelperError
from mlebench_hpc.run.record import run_dir_name

# What the agent container gets (submission/ logs/ code/) and the overlays of its image's files
RUN_SUBDIRS = ("submission", "logs", "code", "overlay")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def shell(values: Mapping[str, object], export: bool = False) -> str:
    """NAME='value' lines for bash's eval; every value quoted (nothing in it is ever run)."""
    prefix = "export " if export else ""
    return "".join(f"{prefix}{k}={shlex.quote('' if v is None else str(v))}\n" for k, v in values.items())


def group_name() -> str:
    return env("MH_GROUP") or env("RUN_GROUP")


def run_path(competition: str, job_id: str, group: str | None = None, base: str | None = None) -> Path:
    """OUTPUT_BASE/<group>/<competition>_<jobid>: the run of JOB_ID (a sweep task's id is
    <array>_<index>, the same after a requeue). BASE: OUTPUT_BASE when the caller has the config's."""
    base = base or env("OUTPUT_BASE")
    if not base:
        raise HelperError(
            "OUTPUT_BASE is not set: run this through the scripts_hpc/ jobs (they load the config)"
        )
    return run_in_group(Path(base) / (group if group is not None else group_name()), competition, job_id)


def run_in_group(group_dir: Path, competition: str, job_id: str) -> Path:
    """GROUP_DIR/<competition>_<jobid>: the run of JOB_ID in a group directory."""
    return group_dir / run_dir_name(competition, job_id)


def make_run_dir(run: Path) -> Path:
    for sub in RUN_SUBDIRS:
        (run / sub).mkdir(parents=True, exist_ok=True)
    return run


def resolve_run(run: Path | None, competition: str | None, job_id: str | None) -> Path:
    """A phase's run: RUN as given, or the run of COMPETITION for this job (--job-id, else MH_JOB_ID)."""
    if run is not None:
        return run
    job = job_id or env("MH_JOB_ID")
    if not competition or not job:
        raise HelperError(
            "give the run directory, or --competition C (and --job-id J unless MH_JOB_ID is set)"
        )
    return run_path(competition, job)
