"""Thin wrappers over `scontrol show job -o` and `squeue`, for URL discovery and readiness.

Only reading: nothing here submits, cancels or changes a job. The cluster in force is whatever
SLURM_CONF (or /etc/slurm) says, as for the user's own `scontrol`."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

import click

# States after which the job never runs its script again (COMPLETING: the script has ended).
ENDED_STATES = frozenset(
    {
        "COMPLETED",
        "COMPLETING",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)
# States in which the job may still start (or restart, after a requeue).
WAITING_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SUSPENDED",
        "STOPPED",
        "SIGNALING",
        "STAGE_OUT",
        "RESV_DEL_HOLD",
    }
)

# A key of `scontrol show job -o`: CamelCase words, some with '/' or ':' (CPUs/Task, ReqB:S:C:T).
# Values can hold spaces (Command= with its arguments, JobName=, Comment=), so a value runs
# until the next " Key=" rather than the next space.
_KEY = re.compile(r"(?:^|(?<=\s))([A-Z][A-Za-z0-9_/:]*)=")
SCONTROL_TIMEOUT = 30.0


class HelperError(click.ClickException):
    """One line saying what is wrong and what to do; exit status 2 like the bash library."""

    exit_code = 2


class SlurmError(Exception):
    """scontrol/squeue failed for a reason other than an unknown job (controller down, ...)."""


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    fields: dict[str, str]

    def get(self, key: str, default: str = "") -> str:
        value = self.fields.get(key, default)
        return default if value in ("(null)", "") else value

    @property
    def state(self) -> str:
        # JobState can carry a suffix in some versions ("CANCELLED by 1000"): keep the word.
        return self.get("JobState", "UNKNOWN").split()[0]

    @property
    def name(self) -> str:
        return self.get("JobName")


def slurm_available() -> bool:
    return shutil.which("scontrol") is not None


def parse_scontrol_oneline(line: str) -> dict[str, str]:
    """`Key=value Key2=value with spaces ...` -> dict (values may contain '=' and spaces)."""
    fields: dict[str, str] = {}
    matches = list(_KEY.finditer(line))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        fields.setdefault(m.group(1), line[m.end() : end].strip())
    return fields


def parse_scontrol_output(text: str) -> list[dict[str, str]]:
    return [parse_scontrol_oneline(line) for line in text.splitlines() if "JobId=" in line]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=SCONTROL_TIMEOUT, check=False)
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]} is not on PATH: is Slurm installed here?") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(
            f"{' '.join(argv)} did not answer in {SCONTROL_TIMEOUT:.0f}s: is slurmctld up?"
        ) from None


def show_job(job_id: str) -> list[JobInfo] | None:
    """All records of a job (one per hetjob component / array task), or None if Slurm does not
    know it (never existed, or finished longer than MinJobAge ago)."""
    proc = _run(["scontrol", "show", "job", "-o", job_id])
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip()
        if "Invalid job id" in err:
            return None
        why = err.splitlines()[-1] if err else f"exit {proc.returncode}"
        raise SlurmError(f"scontrol show job {job_id} failed: {why}")
    records = parse_scontrol_output(proc.stdout)
    if not records:
        return None
    return [JobInfo(r.get("JobId", job_id), r) for r in records]


def main_record(job_id: str) -> JobInfo | None:
    """The record that runs the batch script: hetjob component 0 (offset 0) or the first one."""
    base = job_id.split("+")[0]
    records = show_job(job_id)
    if records is None:
        return None
    for rec in records:
        if rec.get("HetJobOffset") == "0" and rec.get("HetJobId", base) == base:
            return rec
    return records[0]


def squeue_state(job_id: str) -> str | None:
    """State as squeue reports it, or None when the job is no longer listed."""
    proc = _run(["squeue", "-h", "-j", job_id, "-o", "%T"])
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip()
        if "Invalid job id" in err:
            return None
        raise SlurmError(f"squeue -j {job_id} failed: {err}")
    lines = proc.stdout.split()
    return lines[0] if lines else None


def valid_job_id(job_id: str) -> bool:
    """123, 123+0 (hetjob component), 123_4 (array task)."""
    return re.fullmatch(r"\d+(?:\+\d+|_\d+)?", job_id) is not None
