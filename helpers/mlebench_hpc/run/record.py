"""The run record: RUN/metadata.json, the file only the host writes, as one typed, frozen value.

`RunRecord.load` validates what it reads (types of the fields every reader relies on, the schema
version); `mlebench_hpc.run.store` is the one writer (lock, attempt fence, atomic write). Run
statuses and failure causes are the enums below: no other module spells them.

Nothing here looks at what the agent wrote (submission/, logs/, code/): whether a run has a
submission is what the host recorded when it collected one (mlebench_hpc.untrusted)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from mlebench_hpc.errors import HelperError

# The record's layout; a record from a newer layout is refused, never misread. Version 1 is the first
# written with the number (records without it are read as version 1: the same fields).
SCHEMA_VERSION = 1


class RunStatus(str, Enum):
    STARTING = "starting"  # the sweep task made the run dir; the agent has not started
    RUNNING = "running"  # the agent job recorded its start
    REQUEUED = "requeued"  # stopped for a requeue into the same run dir (time limit, preemption)
    FINISHED = "finished"  # the agent exited 0
    FAILED = "failed"  # the agent exited non-zero, the pair failed before it started, or the job died
    TIMEOUT = "timeout"  # the agent's time limit (or Slurm's) stopped it
    CANCELLED = "cancelled"  # scancel (or Slurm's KILL, recorded by a reader)
    INTEGRITY_FAILED = "integrity_failed"  # the isolation check failed: the agent never ran
    LOST = "lost"  # the record said running, and Slurm no longer knows the job: how it ended is unknown

    @classmethod
    def parse(cls, value: object) -> RunStatus | None:
        try:
            return cls(str(value))
        except ValueError:
            return None


# The record says the run has not ended: only Slurm can tell whether it is still alive.
NOT_ENDED = frozenset({RunStatus.STARTING, RunStatus.RUNNING, RunStatus.REQUEUED})
# The agent exited by itself (not stopped by us).
EXITED = frozenset({RunStatus.FINISHED, RunStatus.FAILED, RunStatus.TIMEOUT})
# Counted as a failed attempt of the pair (two, and a sweep stops running it).
FAILED = frozenset({RunStatus.FAILED, RunStatus.TIMEOUT})


class FailureCause(str, Enum):
    """metadata.json `failure.cause`: why the host says an attempt failed (or, for the agent's own
    uploads killing its server, why it did not fail the attempt)."""

    GRADING_SERVER_DIED = "grading_server_died"  # the agent could not validate any more
    LLM_SERVER_DIED = "llm_server_died"  # the agent lost its model (LLM_BASE_URL=job or auto:)
    # The grading server died while validating the agent's own uploads (its host-only record of the
    # requests in flight says so): the agent's doing. The run keeps the status the agent's run gave
    # and counts as a normal attempt; a resume does not run it again.
    AGENT_KILLED_SERVER = "grading_server_killed_by_agent_requests"

    @classmethod
    def parse(cls, value: object) -> FailureCause | None:
        try:
            return cls(str(value))
        except ValueError:
            return None


# The infrastructure failed the agent: the attempt is a failure even with a submission, and a
# resume runs the pair again.
INFRASTRUCTURE_CAUSES = frozenset({FailureCause.GRADING_SERVER_DIED, FailureCause.LLM_SERVER_DIED})

# How a Slurm job state that ended a run whose record still said running is recorded.
_SLURM_END: dict[str, RunStatus] = {
    "CANCELLED": RunStatus.CANCELLED,
    "PREEMPTED": RunStatus.CANCELLED,
    "REVOKED": RunStatus.CANCELLED,
    "TIMEOUT": RunStatus.TIMEOUT,
    "DEADLINE": RunStatus.TIMEOUT,
}


def status_after_slurm_end(state: str) -> RunStatus:
    """CANCELLED/PREEMPTED -> cancelled, TIMEOUT/DEADLINE -> timeout; anything else (NODE_FAIL,
    OUT_OF_MEMORY, FAILED, BOOT_FAIL, and COMPLETED without the run saying so) -> failed."""
    return _SLURM_END.get(state, RunStatus.FAILED)


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
    if isinstance(value, bool):
        return None
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _as_bool(value: object) -> bool:
    """Records written before the store typed it hold "true"/"false" strings."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


class RecordError(HelperError):
    """A run record that cannot be read as one (a newer layout, a field of the wrong type)."""


@dataclass(frozen=True)
class Failure:
    """metadata.json `failure`: the host's word on why the attempt failed (or did not)."""

    cause: FailureCause | None  # None: a cause this version does not know (kept in `details`)
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def infrastructure(self) -> bool:
        return self.cause in INFRASTRUCTURE_CAUSES

    @classmethod
    def parse(cls, value: object) -> Failure | None:
        if not isinstance(value, dict):
            return None
        cause = FailureCause.parse(value.get("cause"))
        return cls(cause, str(value.get("reason") or value.get("cause") or ""), dict(value))

    def to_json(self) -> dict[str, Any]:
        return {
            **self.details,
            "cause": self.cause.value if self.cause else self.details.get("cause"),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class RunRecord:
    """One run's metadata.json, typed where readers decide something (`meta` keeps every key)."""

    path: Path
    meta: Mapping[str, Any]
    competition: str = ""
    seed: int | None = None
    agent_id: str = ""  # '' in runs made before sweeps recorded it (sweep/attribution.py)
    status: RunStatus | None = None
    status_text: str = ""
    exit_code: int | None = None
    submission_exists: bool = False
    failure: Failure | None = None
    requeue_count: int = 0
    restart_count: int = 0  # Slurm's restart count of the attempt that last wrote this record

    @classmethod
    def from_json(cls, path: Path, meta: Mapping[str, Any]) -> RunRecord:
        """The record of META (a JSON object). A newer schema is refused: RecordError."""
        version = meta.get("schema_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION:
            raise RecordError(
                f"{path / METADATA} has schema_version {version!r}, newer than this checkout's "
                f"{SCHEMA_VERSION}: update mlebench-hpc (git pull, make install)"
            )
        return cls(
            path=path,
            meta=meta,
            competition=str(meta.get("competition_id") or ""),
            seed=_as_int(meta.get("seed")),
            agent_id=str(meta.get("agent_id") or ""),
            status=RunStatus.parse(meta.get("status", "")),
            status_text=str(meta.get("status") or ""),
            exit_code=_as_int(meta.get("exit_code")),
            submission_exists=_as_bool(meta.get("submission_exists")),
            failure=Failure.parse(meta.get("failure")),
            requeue_count=_as_int(meta.get("requeue_count", 0)) or 0,
            restart_count=_as_int(meta.get("slurm_restart_count", 0)) or 0,
        )

    @property
    def has_submission(self) -> bool:
        """The host collected a submission when the agent ended (mlebench_hpc.untrusted): the
        agent's own directory is never looked at, so a planted link counts for nothing."""
        return self.submission_exists

    # ---- sweep bookkeeping (slurm_sweep_task.sh, through `run prepare`)
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
        """Why the infrastructure failed this attempt (its grading or LLM server died), or ''."""
        if self.failure is not None and self.failure.infrastructure:
            return self.failure.reason
        return ""

    def _agent_killed_server_note(self) -> str:
        if self.failure is not None and self.failure.cause == FailureCause.AGENT_KILLED_SERVER:
            return "; the agent's own uploads killed its grading server"
        return ""

    @property
    def done(self) -> bool:
        """The agent exited (not stopped by us) and left a submission, with everything it was
        promised (a live grading server, its LLM server) working until it ended."""
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


def read_run(run_dir: Path) -> RunRecord | None:
    """The run in RUN_DIR, or None when its metadata is missing, being written or broken; a record
    of a newer schema raises RecordError (one line: update the checkout)."""
    try:
        meta = json.loads((run_dir / METADATA).read_text())
    except (OSError, ValueError):
        return None
    return RunRecord.from_json(run_dir, meta) if isinstance(meta, dict) else None


def scan_runs(group_dir: Path) -> list[RunRecord]:
    """Every run directly below a group directory (hidden directories are not runs)."""
    runs: list[RunRecord] = []
    for meta_path in sorted(group_dir.glob(f"*/{METADATA}")):
        if meta_path.parent.name.startswith("."):
            continue
        run = read_run(meta_path.parent)
        if run is not None:
            runs.append(run)
    return runs
