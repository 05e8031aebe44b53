"""Turn `http://host:port` or `auto:JOBID` into a server's base URL (`run start` for the grading
server, `llm-ready` for an LLM server: one wait loop, `resolve_auto`, for both).

For `auto:JOBID` the job is looked up with `scontrol show job -o` (hetjob: component 0). While it
is pending we wait (bounded); once it runs, the URL comes from the server's URL file (written
atomically after the server listens, host-only) or else from the job's output file, where only the
server's own line counts: the first line that is exactly MARK<url> (see server_url_in_file). A job
Slurm restarted may have appended to its output, so its first line can be an earlier start's: for it
only the URL file counts.

Which competition a grading job serves is checked from every source we have, and any one naming a
different competition is a hard error: the job's --comment (`competition=<C>`, set by
slurm_grading_server.sh and slurm_hetjob.sh), the script arguments in its Command (the first
argument of those two scripts is the competition), and the state directories named
<comp>_<jobid>. When no source names a competition (a job submitted by hand) we go on: the
final word is `wait_ready` (readiness.py), which requires /health to name the expected competition.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from mlebench_hpc.errors import HelperError
from mlebench_hpc.net import normalize_url
from mlebench_hpc.run.record import competition_of, run_dir_name
from mlebench_hpc.slurm import query as slurm_query
from mlebench_hpc.slurm.query import JobInfo, SlurmError

URL_MARK = "GRADING_SERVER_URL="
_COMMENT_COMP = re.compile(r"(?:^|[\s,;])competition=([A-Za-z0-9._-]+)")
_SCRIPT_COMP = re.compile(
    r"(?:^|/)(?:slurm_grading_server|slurm_hetjob)\.sh\s+([A-Za-z0-9][A-Za-z0-9._-]*)(?:\s|$)"
)
POLL_SECS = 2.0
PROGRESS_SECS = 30.0
# A URL file older than the job's StartTime by more than this is a previous run's (requeue).
STALE_SLACK_SECS = 30.0
# The server's line comes within its first few KiB; a file is never read further than this.
SCAN_BYTES = 1024 * 1024


def server_url_in_file(path: Path, mark: str = URL_MARK) -> str | None:
    """The URL the server itself printed in its job output PATH: the first complete line that is
    exactly MARK<url> (default GRADING_SERVER_URL=), within the file's first SCAN_BYTES.

    The server prints that line once it listens and before anyone can know its URL, so no line a
    client made (a logged request path, the agent's own output in a hetjob, an LLM server's request
    log) can come before it; a later marked line, however exact, is never taken. A line still being
    written (no newline yet) is ignored."""
    try:
        with path.open("rb") as f:
            head = f.read(SCAN_BYTES)
    except OSError:
        return None
    # The whole line is the mark and the URL (`GRADING_SERVER_URL=http://node:port`), nothing around it.
    pattern = re.compile(re.escape(mark.encode()) + rb"(https?://[^\s'\"<>]+)")
    for line in head.split(b"\n")[:-1]:  # the piece after the last newline is not a complete line
        m = pattern.fullmatch(line)
        if m:
            try:
                return normalize_url(m.group(1).decode("ascii", "strict"))
            except (UnicodeDecodeError, ValueError):
                continue
    return None


def read_url_file(path: Path, not_before: float | None = None) -> str | None:
    try:
        st = path.stat()
        if not_before is not None and st.st_mtime < not_before - STALE_SLACK_SECS:
            return None  # written by an earlier run of a requeued job
        text = path.read_text(encoding="ascii", errors="replace").strip()
        return normalize_url(text.splitlines()[0]) if text else None
    except (OSError, ValueError, IndexError):
        return None


def expand_output_path(raw: str, job: JobInfo, job_id: str) -> Path | None:
    """scontrol already expands %j, %x, ... in StdOut; expand the common ones if it did not."""
    if not raw:
        return None
    base = job_id.split("+")[0].split("_")[0]
    subs = {
        "%%": "%",
        "%j": job.job_id,
        "%A": job.get("ArrayJobId", base),
        "%a": job.get("ArrayTaskId", "0"),
        "%x": job.name,
        "%u": job.get("UserId", "").split("(")[0],
        "%N": job.get("BatchHost"),
    }
    if "%" in raw:
        raw = re.sub(r"%%|%[jAaxuN]", lambda m: subs[m.group(0)], raw)
    path = Path(raw)
    if not path.is_absolute() and job.get("WorkDir"):
        path = Path(job.get("WorkDir")) / path
    return path


def _start_epoch(job: JobInfo) -> float | None:
    try:
        return time.mktime(time.strptime(job.get("StartTime"), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def _job_ids(job: JobInfo, job_id: str) -> list[str]:
    ids = [job_id.split("+")[0], job.job_id, job.get("HetJobId")]
    return [i for i in dict.fromkeys(ids) if i]


def state_dir_competitions(state_dir: Path | None, job_ids: list[str]) -> dict[str, Path]:
    """competition -> its state directory <comp>_<jobid> for these job ids."""
    found: dict[str, Path] = {}
    if state_dir is None or not state_dir.is_dir():
        return found
    for jid in job_ids:
        for d in state_dir.glob(run_dir_name("*", jid)):
            comp = competition_of(d.name, jid)
            if comp and d.is_dir():
                found[comp] = d
    return found


def competition_claims(job: JobInfo, state_comps: dict[str, Path]) -> list[tuple[str, str]]:
    """(competition, where it was seen) from the job's comment, command line and state dirs."""
    claims: list[tuple[str, str]] = []
    m = _COMMENT_COMP.search(job.get("Comment"))
    if m:
        claims.append((m.group(1), f"its --comment says competition={m.group(1)}"))
    m = _SCRIPT_COMP.search(job.get("Command"))
    if m:
        claims.append((m.group(1), f"its command is {job.get('Command')}"))
    for comp, d in state_comps.items():
        claims.append((comp, f"its state directory is {d}"))
    return claims


def default_state_dir() -> Path | None:
    for var in ("MLEBENCH_HPC_STATE_DIR", "MH_STATE_BASE"):
        if os.environ.get(var):
            return Path(os.environ[var])
    try:
        from mlebench_hpc.config import config_value

        base = config_value("OUTPUT_BASE")
    except Exception:  # noqa: BLE001 - a broken config must not stop discovery from the job output
        base = None
    return Path(base) / ".state" if base else None


def restarted(job: JobInfo) -> bool:
    """Slurm restarted the job (requeue, preemption): its output may hold an earlier start's lines."""
    return job.get("Restarts", "0") not in ("0", "")


def _no_hint(job_id: str) -> str:
    return ""


@dataclass(frozen=True)
class ServerJob:
    """What differs between waiting for a grading server job and for an LLM server job."""

    kind: str  # how messages name the job: "grading job", "LLM server job"
    mark: str  # its own line in its output once it listens: MARK<url>
    url_file: Callable[[str], Path | None]  # job id -> the URL file it writes (None: none known)
    check: Callable[[str, JobInfo, list[str]], None]  # (id, job, its ids): HelperError, serves another
    url_instead: str  # what to pass instead of auto:JOBID where there is no Slurm
    start_one: str  # how to start one, for when it has ended
    more_time: str  # what to do when it did not come up in time ({job}: its id)
    caller: str  # prefix of the progress lines on stderr
    gone_hint: Callable[[str], str] = _no_hint  # why Slurm may have forgotten the job


def find_url(job: JobInfo, job_id: str, server: ServerJob) -> str | None:
    """The running JOB's URL: its URL file (unless an earlier start's), else its own output line."""
    not_before = _start_epoch(job)
    for jid in _job_ids(job, job_id):
        path = server.url_file(jid)
        url = read_url_file(path, not_before) if path is not None else None
        if url:
            return url
    if restarted(job):
        return None  # its output may begin with an earlier start's line: only the URL file counts
    out = expand_output_path(job.get("StdOut"), job, job_id)
    return server_url_in_file(out, server.mark) if out else None


def resolve_auto(job_id: str, server: ServerJob, timeout: float) -> str:
    """The URL of SERVER's job JOB_ID, waiting at most TIMEOUT seconds while it is pending or
    starting; HelperError (one line) when it cannot come: no Slurm, no such job, the wrong server,
    ended, or the deadline."""
    if not slurm_query.slurm_available():
        raise HelperError(
            f"auto:{job_id} needs Slurm, but scontrol is not on PATH: pass {server.url_instead} instead"
        )
    if not slurm_query.valid_job_id(job_id):
        raise HelperError(f"auto:{job_id}: {job_id!r} is not a Slurm job id (e.g. auto:12345)")
    start = time.monotonic()
    deadline = start + timeout
    next_progress = start + PROGRESS_SECS
    checked = False
    while True:
        try:
            job = slurm_query.main_record(job_id)
        except SlurmError as exc:
            raise HelperError(str(exc)) from None
        if job is None:
            hint = server.gone_hint(job_id)
            raise HelperError(f"{server.kind} {job_id} not found{hint}: check the id with squeue -u $USER")
        if not checked:
            server.check(job_id, job, _job_ids(job, job_id))
            checked = True
        state = job.state
        out = expand_output_path(job.get("StdOut"), job, job_id)
        if state in slurm_query.ENDED_STATES:
            ended = job.get("EndTime", "unknown time")
            raise HelperError(
                f"{server.kind} {job_id} is {state} (ended {ended}; output {out}): start a new one with "
                f"{server.start_one}"
            )
        if state in slurm_query.WAITING_STATES:
            waiting = f"job {job_id} is {state} (reason: {job.get('Reason', 'none')})"
        else:  # RUNNING (or a state this version does not list): the URL may be there already
            url = find_url(job, job_id, server)
            if url:
                return url
            waiting = f"job {job_id} is {state} but has not published its URL yet (output {out})"
            if restarted(job):
                file = server.url_file(job_id.split("+")[0])
                waiting = (
                    f"job {job_id} was restarted by Slurm and has no URL file{f' {file}' if file else ''} "
                    "yet (its output may hold an earlier start's URL, so only the file counts)"
                )
        now = time.monotonic()
        if now >= deadline:
            raise HelperError(
                f"gave up after {timeout:.0f}s: {waiting}; look at squeue -j {job_id}, and "
                + server.more_time.format(job=job_id)
            )
        if now >= next_progress:
            click.echo(f"{server.caller}: waiting {now - start:.0f}s/{timeout:.0f}s: {waiting}", err=True)
            next_progress = now + PROGRESS_SECS
        time.sleep(max(0.0, min(POLL_SECS, deadline - now)))


def grading_server(competition: str, state_dir: Path | None) -> ServerJob:
    """A grading server job for COMPETITION, its URL file in STATE_DIR/<comp>_<jobid>/url."""

    def url_file(jid: str) -> Path | None:
        return state_dir / run_dir_name(competition, jid) / "url" if state_dir is not None else None

    def check(job_id: str, job: JobInfo, job_ids: list[str]) -> None:
        for comp, where in competition_claims(job, state_dir_competitions(state_dir, job_ids)):
            if comp != competition:
                raise HelperError(
                    f"grading job {job_id} serves competition {comp}, not {competition} "
                    f"({where}): pass the job id of a {competition} grading server"
                )

    def gone_hint(job_id: str) -> str:
        gone = state_dir_competitions(state_dir, [job_id.split("+")[0]])
        if not gone:
            return ""
        return (
            f" (a state directory {next(iter(gone.values()))} exists, so it probably ended and Slurm "
            "has forgotten it)"
        )

    return ServerJob(
        kind="grading job",
        mark=URL_MARK,
        url_file=url_file,
        check=check,
        url_instead="the grading server's URL (http://host:port)",
        start_one=f"sbatch scripts_hpc/slurm_grading_server.sh {competition}",
        more_time="submit the agent job with --dependency=after:{job}, so that it starts once the grading "
        "job runs",
        caller="run start",
        gone_hint=gone_hint,
    )


def resolve_spec(spec: str, competition: str, timeout: float, state_dir: Path | None) -> str:
    """The grading server's base URL for SPEC: http://host:port, or auto:JOBID resolved."""
    if spec.startswith("auto:"):
        return resolve_auto(spec[len("auto:") :].strip(), grading_server(competition, state_dir), timeout)
    try:
        return normalize_url(spec)
    except ValueError as exc:
        raise HelperError(f"{exc}: pass http://host:port or auto:JOBID") from None
