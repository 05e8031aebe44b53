"""The run record: RUN/metadata.json, the file only the host writes, as one typed, frozen value.

`RunRecord.from_json` (and `read_run`, `scan_runs` over it) validates what it reads: every field a
reader decides on (FIELDS) holds its type, or a form an earlier version of this project wrote (a
seed as "3", submission_exists as "true"), and is read in its typed form; anything else, and a
record of a newer schema version, is refused with RecordError (one line: the file, the field, the
value). `mlebench_hpc.run.store` is the one writer (lock, attempt fence, the whole record checked
and written in its typed form, atomic write). Run statuses and failure causes are the enums below:
no other module spells them.

Nothing here looks at what the agent wrote (submission/, logs/, code/): whether a run has a
submission is what the host recorded when it collected one (mlebench_hpc.untrusted)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from mlebench_hpc.errors import HelperError
from mlebench_hpc.printable import printable

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


class RecordError(HelperError):
    """A run record that cannot be read as one: not a JSON object, a newer layout, a field holding
    neither its type nor a form an earlier version wrote. One line: the file (when known), then why."""

    def __init__(self, reason: str, file: Path | None = None) -> None:
        self.reason = reason
        self.file = file
        super().__init__(printable(f"{file}: {reason}" if file is not None else f"run record: {reason}"))


# ---------------------------------------------------------------- the typed fields
class _Bad(ValueError):
    """A field's value is none of its forms."""


_DECIMAL = re.compile(r"[0-9]+")
_SIGNED_DECIMAL = re.compile(r"-?[0-9]+")
_VALUE_CHARS = 60


def _short(value: object) -> str:
    """VALUE as the one-line message quotes it: its repr, cut."""
    text = repr(value)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 3] + "..."


def _text(value: object, legacy: bool) -> str:
    if isinstance(value, str):
        return value
    raise _Bad


def _count(value: object, legacy: bool) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise _Bad


def _count_or_text(value: object, legacy: bool) -> int:
    """A count the first versions wrote as text (`--set time_limit_secs=600`: "600")."""
    if legacy and isinstance(value, str) and _DECIMAL.fullmatch(value):
        return int(value)
    return _count(value, legacy)


def _optional_count(value: object, legacy: bool) -> int | None:
    """sweep_task_index: versions before the Python phases wrote the array index as text ("3")."""
    return None if value is None else _count_or_text(value, legacy)


def _seed(value: object, legacy: bool) -> int | None:
    """Earlier versions wrote `--set seed="${MH_SEED:-}"`: "3" in a sweep, "" outside one."""
    if legacy and value == "":
        return None
    return _optional_count(value, legacy)


def _exit_code(value: object, legacy: bool) -> int | None:
    """Earlier versions wrote `--set exit_code="$rc"`: "0", "124"."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if legacy and isinstance(value, str) and _SIGNED_DECIMAL.fullmatch(value):
        return int(value)
    raise _Bad


def _flag(value: object, legacy: bool) -> bool:
    """Earlier versions wrote `--set submission_exists=false` (and "true"): text, in any case."""
    if isinstance(value, bool):
        return value
    if legacy and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _Bad


def _status(value: object, legacy: bool) -> str:
    status = RunStatus.parse(value) if isinstance(value, str) else None
    if status is None:
        raise _Bad
    return status.value


def _failure(value: object, legacy: bool) -> dict[str, Any] | None:
    if value is None:
        return None
    if (
        isinstance(value, dict)
        and isinstance(value.get("cause"), str)
        and FailureCause.parse(value["cause"]) is not None
        and isinstance(value.get("reason"), str)
    ):
        return dict(value)
    raise _Bad


def _object_or_null(value: object, legacy: bool) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise _Bad


_Parse = Callable[[object, bool], Any]

# Every field a reader decides on: how it is read (legacy: the forms earlier versions wrote too) and
# what it must be. A field may be absent (records older than it): RunRecord gives its default.
FIELDS: dict[str, tuple[_Parse, str]] = {
    "competition_id": (_text, "text"),
    "agent_id": (_text, "text"),
    "agent_job_id": (_text, "text"),
    "sweep_array_job_id": (_text, "text"),
    "sweep_task_index": (_optional_count, "an integer >= 0 or null"),
    "seed": (_seed, "an integer >= 0 or null"),
    "status": (_status, "a run status (" + ", ".join(s.value for s in RunStatus) + ")"),
    "exit_code": (_exit_code, "an integer or null"),
    "submission_exists": (_flag, "true or false"),
    "failure": (_failure, "null or {cause: " + "|".join(c.value for c in FailureCause) + ", reason: text}"),
    "requeue_count": (_count, "an integer >= 0"),
    "slurm_restart_count": (_count, "an integer >= 0"),
    "agent_secs_used": (_count, "an integer >= 0"),
    "time_limit_secs": (_count_or_text, "an integer >= 0"),
    "slurm_end": (_object_or_null, "null or an object"),
}


def _schema_version(value: object, file: Path | None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RecordError(f"schema_version={_short(value)} is not an integer >= 1", file)
    if value > SCHEMA_VERSION:
        raise RecordError(
            f"schema_version {value!r} is newer than this checkout's {SCHEMA_VERSION}: "
            "update mlebench-hpc (git pull, make install)",
            file,
        )


def typed_fields(values: Mapping[str, Any], file: Path | None = None, legacy: bool = True) -> dict[str, Any]:
    """A copy of VALUES (a record, or a writer's updates to one) with every field of FIELDS in its
    typed form; other keys as they are. LEGACY: the forms earlier versions wrote are read too (a
    record on disk); without it only the typed form is (what a writer writes). Anything else, and a
    newer schema_version, raise RecordError naming the field, its value and FILE."""
    if "schema_version" in values:
        _schema_version(values["schema_version"], file)
    out = dict(values)
    for key, (parse, expected) in FIELDS.items():
        if key in out:
            try:
                out[key] = parse(out[key], legacy)
            except _Bad:
                what = "" if legacy else "not written: "
                raise RecordError(f"{what}{key}={_short(out[key])} is not {expected}", file) from None
    return out


@dataclass(frozen=True)
class Failure:
    """metadata.json `failure`: the host's word on why the attempt failed (or did not)."""

    cause: FailureCause
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)  # every key, cause and reason included

    @property
    def infrastructure(self) -> bool:
        return self.cause in INFRASTRUCTURE_CAUSES

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> Failure:
        """The failure of a record's `failure` as typed_fields() checked it."""
        return cls(FailureCause(value["cause"]), value["reason"], dict(value))

    def to_json(self) -> dict[str, Any]:
        return {**self.details, "cause": self.cause.value, "reason": self.reason}


@dataclass(frozen=True)
class RunRecord:
    """One run's metadata.json, typed where readers decide something (`meta` keeps every key, the
    fields of FIELDS in their typed form)."""

    path: Path
    meta: Mapping[str, Any]
    competition: str = ""
    seed: int | None = None  # None: a run made outside a sweep
    agent_id: str = ""  # '' in runs made before sweeps recorded it (sweep/attribution.py)
    # None: the record has no status. Every job records one when it makes the run, but a record
    # written by other means (by hand, a writer of a single key) has none, and nobody judges it.
    status: RunStatus | None = None
    exit_code: int | None = None
    submission_exists: bool = False
    failure: Failure | None = None
    requeue_count: int = 0
    restart_count: int = 0  # Slurm's restart count of the attempt that last wrote this record
    agent_job_id: str = ""  # the agent job's id ('' in a sweep task that failed before its agent)
    array_job_id: str = ""  # a sweep task's array job ('' outside a sweep, or a sweep without Slurm)
    sweep_task_index: int | None = None  # a sweep task's index in its array; None outside a sweep

    @classmethod
    def from_json(cls, path: Path, meta: Mapping[str, Any]) -> RunRecord:
        """The record of META (a JSON object) of the run in PATH. A field that holds neither its
        type nor a form an earlier version wrote, or a newer schema, is refused: RecordError."""
        typed = typed_fields(meta, path / METADATA)
        failure = typed.get("failure")
        status = typed.get("status")
        return cls(
            path=path,
            meta=typed,
            competition=typed.get("competition_id", ""),
            seed=typed.get("seed"),
            agent_id=typed.get("agent_id", ""),
            status=RunStatus(status) if status is not None else None,
            exit_code=typed.get("exit_code"),
            submission_exists=typed.get("submission_exists", False),
            failure=Failure.of(failure) if failure is not None else None,
            requeue_count=typed.get("requeue_count", 0),
            restart_count=typed.get("slurm_restart_count", 0),
            agent_job_id=typed.get("agent_job_id", ""),
            array_job_id=typed.get("sweep_array_job_id", ""),
            sweep_task_index=typed.get("sweep_task_index"),
        )

    @property
    def status_text(self) -> str:
        """The recorded status word, '' when there is none."""
        return self.status.value if self.status is not None else ""

    @property
    def has_submission(self) -> bool:
        """The host collected a submission when the agent ended (mlebench_hpc.untrusted): the
        agent's own directory is never looked at, so a planted link counts for nothing."""
        return self.submission_exists

    # ---- sweep bookkeeping (slurm_sweep_task.sh, through `run prepare`)
    @property
    def from_sweep(self) -> bool:
        return self.sweep_task_index is not None

    @property
    def slurm_job_id(self) -> str:
        """The id Slurm knows this run's job by: `<array>_<index>` for a sweep task, else the agent
        job's (a hetjob's id names its components); '' for a run made without Slurm."""
        if self.sweep_task_index is not None:
            return array_task_id(self.array_job_id, self.sweep_task_index) if self.array_job_id else ""
        return "" if self.agent_job_id.startswith("local-") else self.agent_job_id

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
    """The run in RUN_DIR, or None when its metadata.json is missing, not JSON or not a JSON object;
    a record that cannot be read as one (a field of the wrong type, a newer schema) raises
    RecordError."""
    try:
        meta = json.loads((run_dir / METADATA).read_text())
    except (OSError, ValueError):
        return None
    return RunRecord.from_json(run_dir, meta) if isinstance(meta, dict) else None


def scan_runs(group_dir: Path) -> list[RunRecord]:
    """Every run directly below a group directory (hidden directories are not runs). A record that
    cannot be read as one raises RecordError: a reader of the group (status, sweep-plan) stops with
    its one line rather than judge the group without it."""
    runs: list[RunRecord] = []
    for meta_path in sorted(group_dir.glob(f"*/{METADATA}")):
        if meta_path.parent.name.startswith("."):
            continue
        run = read_run(meta_path.parent)
        if run is not None:
            runs.append(run)
    return runs
