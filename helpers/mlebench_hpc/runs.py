"""Runs on disk: a typed view of RUN/metadata.json, the file only the host writes.

Nothing here looks at what the agent wrote (submission/, logs/, code/): whether a run has a
submission is what the host recorded when it collected one (mlebench_hpc.untrusted)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlebench_hpc.run_status import (
    AGENT_KILLED_SERVER,
    EXITED,
    FAILED,
    INFRASTRUCTURE_CAUSES,
    NOT_ENDED,
    RunStatus,
)

METADATA = "metadata.json"


def run_dir_name(competition: str, job_id: str) -> str:
    """`<competition>_<jobid>`: the directory of a run, and of its job's host-only state (URL file,
    token). A sweep task's job id is `<array>_<index>` (array_task_id)."""
    return f"{competition}_{job_id}"


def competition_of(dir_name: str, job_id: str) -> str | None:
    """The competition of a run_dir_name() made for JOB_ID, or None when DIR_NAME is not one.
    (Competition ids may hold `_`: only the job id, known, tells where the name splits.)"""
    suffix = f"_{job_id}"
    if not job_id or not dir_name.endswith(suffix) or len(dir_name) == len(suffix):
        return None
    return dir_name[: -len(suffix)]


def array_task_id(array_job_id: object, index: object) -> str:
    """The id Slurm knows an array task by: `<array job id>_<index>`."""
    return f"{array_job_id}_{index}"


def _as_int(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Run:
    path: Path
    meta: dict[str, Any]

    @property
    def competition(self) -> str:
        return str(self.meta.get("competition_id", ""))

    @property
    def seed(self) -> int | None:
        return _as_int(self.meta.get("seed"))

    @property
    def agent_id(self) -> str:
        """The agent variant it ran ('' in runs made before sweeps recorded it: attribution.py)."""
        return str(self.meta.get("agent_id") or "")

    @property
    def status_text(self) -> str:
        return str(self.meta.get("status", ""))

    @property
    def status(self) -> RunStatus | None:
        return RunStatus.parse(self.meta.get("status", ""))

    @property
    def exit_code(self) -> int | None:
        return _as_int(self.meta.get("exit_code"))

    @property
    def has_submission(self) -> bool:
        """The host collected a submission when the agent ended (mlebench_hpc.untrusted): the
        agent's own directory is never looked at, so a planted link counts for nothing."""
        return str(self.meta.get("submission_exists", "")).lower() == "true"

    @property
    def requeue_count(self) -> int:
        return _as_int(self.meta.get("requeue_count", 0)) or 0

    @property
    def restart_count(self) -> int:
        """Slurm's restart count of the attempt that last wrote this record (0: the first)."""
        return _as_int(self.meta.get("slurm_restart_count", 0)) or 0

    # ---- sweep bookkeeping (slurm_sweep_task.sh)
    @property
    def from_sweep(self) -> bool:
        return str(self.meta.get("sweep_task_index", "")) != ""

    @property
    def array_job_id(self) -> str:
        return str(self.meta.get("sweep_array_job_id") or "")

    @property
    def slurm_job_id(self) -> str:
        """The id Slurm knows this run's job by: `<array>_<index>` for a sweep task, else the agent
        job's (a hetjob's id names its components); '' for a run made without Slurm."""
        if self.from_sweep:
            return (
                array_task_id(self.array_job_id, self.meta["sweep_task_index"]) if self.array_job_id else ""
            )
        job = str(self.meta.get("agent_job_id") or "")
        return "" if job.startswith("local-") else job

    @property
    def attempt_start(self) -> str:
        return str(self.meta.get("attempt_start") or self.meta.get("start") or "")

    # ---- how it ended
    @property
    def not_ended(self) -> bool:
        """Its record says it has not ended (starting, running, requeued). A record without a
        status was not written by our jobs: nobody judges it."""
        return self.status in NOT_ENDED

    @property
    def infrastructure_failure(self) -> str:
        """Why the infrastructure failed this attempt (e.g. its grading server died), or ''."""
        failure = self.meta.get("failure")
        if isinstance(failure, dict) and failure.get("cause") in INFRASTRUCTURE_CAUSES:
            return str(failure.get("reason") or failure.get("cause"))
        return ""

    def _agent_killed_server_note(self) -> str:
        failure = self.meta.get("failure")
        if isinstance(failure, dict) and failure.get("cause") == AGENT_KILLED_SERVER:
            return "; the agent's own uploads killed its grading server"
        return ""

    @property
    def done(self) -> bool:
        """The agent exited (not stopped by us) and left a submission, with everything it was
        promised (a live grading server) working until it ended."""
        return self.status in EXITED and self.has_submission and not self.infrastructure_failure

    @property
    def failed(self) -> bool:
        return self.status in FAILED and not self.done

    def ended_text(self) -> str:
        """How the run ended, in one line (for `status` and the report's superseded runs)."""
        sub = "submission present" if self.has_submission else "no submission"
        slurm = self.meta.get("slurm_end")
        status = self.status_text or RunStatus.STARTING.value
        if isinstance(slurm, dict):
            details = ", ".join(
                str(x) for x in (slurm.get("exit"), slurm.get("reason")) if x
            )  # Slurm's words, not ours
            said = slurm.get("record_said") or RunStatus.RUNNING.value
            if slurm.get("state") == "UNKNOWN":
                note = slurm.get("note") or "Slurm no longer knows the job"
                return f"{status}: {note} (record said {said})"
            return (
                f"{status}: Slurm {slurm.get('state')}{f' ({details})' if details else ''} "
                f"while the record said {said}"
            )
        why = self.infrastructure_failure
        if why:
            return f"failed (exit {self.exit_code}, {sub}): {why}"
        if self.status == RunStatus.TIMEOUT and self.has_submission:
            return f"finished (at its time limit, {sub})"
        if self.status in EXITED:
            word = (RunStatus.FINISHED if self.done else RunStatus.FAILED).value
            return f"{word} (exit {self.exit_code}, {sub}){self._agent_killed_server_note()}"
        if self.status == RunStatus.CANCELLED:
            return f"cancelled ({sub})"
        if self.status == RunStatus.INTEGRITY_FAILED:
            return "integrity check failed: the agent never ran"
        return f"{status} ({sub})"


def read_run(run_dir: Path) -> Run | None:
    """The run in RUN_DIR, or None when its metadata is missing, being written or broken."""
    try:
        meta = json.loads((run_dir / METADATA).read_text())
    except (OSError, ValueError):
        return None
    return Run(run_dir, meta) if isinstance(meta, dict) else None


def scan_runs(group_dir: Path) -> list[Run]:
    """Every run directly below a group directory (hidden directories are not runs)."""
    runs: list[Run] = []
    for meta_path in sorted(group_dir.glob(f"*/{METADATA}")):
        if meta_path.parent.name.startswith("."):
            continue
        run = read_run(meta_path.parent)
        if run is not None:
            runs.append(run)
    return runs
