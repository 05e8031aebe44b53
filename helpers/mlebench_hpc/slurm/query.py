"""Every read of Slurm's state (`scontrol`, `squeue`, `sinfo`, `sacct`), for URL discovery, readiness,
the state of sweep tasks and runs (`job_records`: one batched squeue for many jobs, read by column
name), a job's cost (`show_job(detail=True)`, `sacct_rows`) and `doctor`.

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


def _run(argv: list[str], timeout: float = SCONTROL_TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]} is not on PATH: is Slurm installed here?") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{' '.join(argv)} did not answer in {timeout:.0f}s: is slurmctld up?") from None


def show_job(job_id: str, detail: bool = False) -> list[JobInfo] | None:
    """All records of a job (one per hetjob component / array task), or None if Slurm does not
    know it (never existed, or finished longer than MinJobAge ago). DETAIL (`-d`) adds JOB_GRES,
    the generic resources (GPUs, with their type) Slurm allocated."""
    proc = _run(["scontrol", "show", "job", "-o", *(["-d"] if detail else []), job_id])
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


# ------------------------------------------------------------------ many jobs at once
# squeue --Format columns (name:0| = unpadded, '|' after it); the header line names them, and the
# reader goes by those names. Reason comes last: the only free text.
_FORMAT_COLUMNS: dict[str, str] = {
    "JobArrayID": "JOBID",
    "State": "STATE",
    "exit_code": "EXIT_CODE",
    "EndTime": "END_TIME",
    "RestartCnt": "RESTART_COUNT",
    "NodeList": "NODELIST",
    "Cluster": "CLUSTER",
    "Reason": "REASON",
}
_IDS_PER_CALL = 400  # keeps the command line short on clusters with very long job ids


@dataclass(frozen=True)
class JobRecord:
    """One job, array task (`123_4`) or hetjob component (`123+0`) as Slurm's controller holds it
    (finished jobs for MinJobAge seconds after they end)."""

    job_id: str
    state: str
    reason: str = ""
    nodes: str = ""
    exit_status: int | None = None  # the raw wait status squeue reports (exit code << 8 | signal)
    end_time: str = ""
    restarts: int = 0
    cluster: str = ""

    @property
    def ended(self) -> bool:
        """Never runs its script again (COMPLETING: processes still being killed, not yet ended)."""
        return self.state in ENDED_STATES and self.state != "COMPLETING"

    @property
    def exit_text(self) -> str:
        """`exit 2`, `signal 9`, or '' when Slurm did not say."""
        if self.exit_status is None:
            return ""
        if self.exit_status & 0x7F:
            return f"signal {self.exit_status & 0x7F}"
        return f"exit {self.exit_status >> 8}"


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else None


def parse_squeue_format(text: str) -> dict[str, JobRecord]:
    """squeue --Format output (header line first, '|' between columns) -> records by job id."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return {}
    header = [h.strip() for h in lines[0].split("|")]
    out: dict[str, JobRecord] = {}
    for line in lines[1:]:
        row = dict(zip(header, (v.strip() for v in line.split("|", len(header) - 1)), strict=False))
        job = row.get("JOBID", "")
        if not job:
            continue
        reason = row.get("REASON", "")
        out[job] = JobRecord(
            job_id=job,
            state=row.get("STATE", "UNKNOWN").split()[0] if row.get("STATE") else "UNKNOWN",
            reason="" if reason in ("None", "(null)") else reason,
            nodes=row.get("NODELIST", ""),
            exit_status=_int(row.get("EXIT_CODE", "")),
            end_time="" if row.get("END_TIME") in ("N/A", "Unknown", "NONE") else row.get("END_TIME", ""),
            restarts=_int(row.get("RESTART_COUNT", "")) or 0,
            cluster=row.get("CLUSTER", ""),
        )
    return out


def job_records(job_ids: list[str]) -> dict[str, JobRecord] | None:
    """Every job, array task and hetjob component Slurm still knows among JOB_IDS (an array job id
    brings all its tasks), in one squeue call per 400 ids; None when Slurm cannot be asked (not
    installed, controller down): then nobody may conclude that a job is gone."""
    if not slurm_available():
        return None
    ids = sorted({j for j in job_ids if valid_job_id(j)})
    fmt = ",".join(f"{col}:0|" for col in _FORMAT_COLUMNS)[:-1]  # no '|' after the last column
    out: dict[str, JobRecord] = {}
    for start in range(0, len(ids), _IDS_PER_CALL):
        chunk = ids[start : start + _IDS_PER_CALL]
        try:
            proc = _run(["squeue", "-a", "-r", "-t", "all", "-j", ",".join(chunk), "-O", fmt])
        except SlurmError:
            return None
        if proc.returncode != 0:
            if "Invalid job id" in proc.stderr + proc.stdout:
                continue  # squeue says so for a single unknown id only: Slurm knows none of them
            return None
        out.update(parse_squeue_format(proc.stdout))
    return out


def slurm_config_value(name: str) -> str | None:
    """One key of `scontrol show config` (ClusterName, AccountingStorageType, ...), or None when it
    cannot be asked or is not set."""
    try:
        proc = _run(["scontrol", "show", "config"])
    except SlurmError:
        return None
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == name:
            return value.strip() or None
    return None


def cluster_name() -> str | None:
    """ClusterName of the controller in force, or None when it cannot be asked."""
    return slurm_config_value("ClusterName")


def accounting_enabled() -> bool:
    """The site keeps Slurm accounting (slurmdbd): `sacct` can tell what a finished job used."""
    if not slurm_available() or shutil.which("sacct") is None:
        return False
    storage = slurm_config_value("AccountingStorageType") or "accounting_storage/none"
    return storage != "accounting_storage/none"


# sacct columns for a job's cost: per hetjob component (JobID 123+0) and per step (123+0.batch).
SACCT_COLUMNS = (
    "JobID",
    "JobName",
    "State",
    "ElapsedRaw",
    "AllocTRES",
    "NodeList",
    "MaxRSS",
    "TRESUsageInMax",
)


def parse_sacct_parsable2(text: str) -> list[dict[str, str]]:
    """`sacct --parsable2` output (a header line, then '|' between fields) -> one dict per line by
    column name. NodeList is the only column that can hold a '|'-free free text; none holds '|'."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return []
    header = lines[0].split("|")
    return [dict(zip(header, line.split("|"), strict=False)) for line in lines[1:]]


def sacct_rows(job_ids: list[str]) -> list[dict[str, str]] | None:
    """What Slurm's accounting holds for JOB_IDS (their allocations and steps; a hetjob's id brings
    its components, `<array>_<index>` one task), in one sacct call per 400 ids; None when it cannot
    say (sacct missing or failing)."""
    ids = sorted({j for j in job_ids if valid_job_id(j)})
    if not ids or shutil.which("sacct") is None:
        return None
    out: list[dict[str, str]] = []
    for start in range(0, len(ids), _IDS_PER_CALL):
        argv = ["sacct", "-j", ",".join(ids[start : start + _IDS_PER_CALL]), "--parsable2"]
        try:
            proc = _run([*argv, "--format=" + ",".join(SACCT_COLUMNS)])
        except SlurmError:
            return None
        if proc.returncode != 0:
            return None
        out += parse_sacct_parsable2(proc.stdout)
    return out


def partitions(timeout: float = SCONTROL_TIMEOUT) -> list[str]:
    """The partitions `sinfo` lists; SlurmError with sinfo's last line when it fails."""
    proc = _run(["sinfo", "-h", "-o", "%P %a %D"], timeout)
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip()
        raise SlurmError(f"sinfo failed: {out.splitlines()[-1][:160] if out else proc.returncode}")
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def valid_job_id(job_id: str) -> bool:
    """123, 123+0 (hetjob component), 123_4 (array task)."""
    return re.fullmatch(r"\d+(?:\+\d+|_\d+)?", job_id) is not None


def time_left(job_id: str) -> str | None:
    """Slurm's time left for JOB_ID as squeue prints it (`[[D-]HH:]MM:SS`, `UNLIMITED`), or None
    when Slurm cannot say (no squeue, job unknown): the caller's budget then stands alone."""
    if not valid_job_id(job_id) or not slurm_available():
        return None
    try:
        proc = _run(["squeue", "-h", "-j", job_id, "-o", "%L"])
    except SlurmError:
        return None
    lines = proc.stdout.split() if proc.returncode == 0 else []
    return lines[0] if lines else None


_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def slurm_secs(text: str | None) -> int | None:
    """Slurm's `[[D-]HH:]MM:SS` (squeue %L, sbatch --time) in seconds; None for UNLIMITED, unknown,
    or what is not such a time."""
    m = _SLURM_TIME.match((text or "").strip())
    if not m:
        return None
    days, *parts = m.groups()
    nums = [int(p) for p in parts if p is not None]
    if days is not None and len(nums) == 1:  # D-HH
        nums = [nums[0], 0, 0]
    h, mi, s = ([0, 0] + nums)[-3:] if len(nums) < 3 else nums
    return int(days or 0) * 86400 + h * 3600 + mi * 60 + s


def step_id(job_id: str, name: str) -> str | None:
    """The id (JOBID.STEP) of JOB_ID's first running step named NAME, or None (no such step, or
    Slurm cannot be asked)."""
    if not valid_job_id(job_id) or not slurm_available():
        return None
    try:
        proc = _run(["squeue", "-h", "-s", "-j", job_id, "-o", "%i %j"])
    except SlurmError:
        return None
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        step, _, step_name = line.strip().partition(" ")
        if step_name.strip() == name:
            return step
    return None


def restarts(job_id: str) -> int | None:
    """How many times Slurm restarted JOB_ID (requeue, preemption), or None when it cannot say."""
    records = job_records([job_id])
    if records is None or job_id not in records:
        return None
    return records[job_id].restarts


@click.command("slurm-restarts")
@click.argument("job_id")
def slurm_restarts_cmd(job_id: str) -> None:
    """Print how many times Slurm restarted JOB_ID (empty when Slurm cannot say)."""
    n = restarts(job_id)
    click.echo("" if n is None else str(n))


@click.command("slurm-step")
@click.argument("job_id")
@click.argument("name")
def slurm_step_cmd(job_id: str, name: str) -> None:
    """Print the id of JOB_ID's running step named NAME (nothing when there is none)."""
    step = step_id(job_id, name)
    if step:
        click.echo(step)
