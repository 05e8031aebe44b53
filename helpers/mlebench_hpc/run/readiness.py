"""Before the agent starts (`run start`): wait, bounded and with backoff, until the grading server's
/health answers 200 and names the expected competition, then check that it takes the run's token.

Fails at once (HelperError, exit 2) when a server answers for another competition, when something
that is not our grading server answers on that port, or when the grading job (JOB) or local server
process (PID) is gone; fails at the deadline with the last error seen."""

from __future__ import annotations

import os
import time
from pathlib import Path

import requests

from mlebench_hpc.errors import HelperError
from mlebench_hpc.run.discovery import expand_output_path
from mlebench_hpc.slurm import query as slurm_query
from mlebench_hpc.slurm.query import SlurmError

FIRST_DELAY = 0.2
MAX_DELAY = 5.0


# job id -> its output file, remembered in case Slurm forgets the job between two rounds
_outputs: dict[str, str] = {}


def check_job_alive(job_id: str, what: str = "grading job") -> None:
    """Raise HelperError when the job (WHAT, for the message) is unknown to Slurm or has ended."""
    try:
        job = slurm_query.main_record(job_id)
    except SlurmError as exc:
        raise HelperError(f"cannot check {what} {job_id}: {exc}") from None
    if job is None:
        out = _outputs.get(job_id, "file")
        raise HelperError(f"{what} {job_id} ended (no longer known to Slurm): see its output {out}")
    _outputs[job_id] = str(expand_output_path(job.get("StdOut"), job, job_id))
    if job.state in slurm_query.ENDED_STATES:
        raise HelperError(f"{what} {job_id} ended ({job.state}): see its output {_outputs[job_id]}")


def check_pid_alive(pid: int, what: str = "grading server process") -> None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise HelperError(f"{what} {pid} exited: see its log") from None
    except PermissionError:
        pass  # exists, owned by someone else
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                raise HelperError(f"{what} {pid} exited: see its log")
    except OSError:
        pass


def probe(session: requests.Session, url: str, competition: str, timeout: float) -> str | None:
    """None when ready; else the reason it is not (yet). Raises HelperError for a wrong server."""
    try:
        resp = session.get(f"{url}/health", timeout=timeout)
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    if resp.status_code != 200:
        return f"HTTP {resp.status_code} from {url}/health"
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "competition" not in body:
        raise HelperError(
            f"{url}/health answered 200 without naming a competition ({resp.text[:80]!r}): "
            "that is not an mlebench-hpc grading server; check the URL"
        )
    if body["competition"] != competition:
        raise HelperError(
            f"grading server at {url} serves {body['competition']}, not {competition}: "
            f"point the agent at a {competition} grading server"
        )
    return None


def check_token(session: requests.Session, url: str, token: str, timeout: float) -> None:
    """Prove the server takes this run's token: POST /validate with the token and no file must be
    refused for the missing file (400), not for the token (401/403)."""
    try:
        resp = session.post(f"{url}/validate", headers={"X-Grading-Token": token}, timeout=timeout)
    except requests.RequestException as exc:
        raise HelperError(
            f"grading server at {url} did not answer the token check ({type(exc).__name__})"
        ) from None
    if resp.status_code in (401, 403):
        raise HelperError(
            f"grading server at {url} refuses this run's token (HTTP {resp.status_code}): it is another "
            "run's server, or it was restarted; use auto:<grading job id> or the URL its job printed"
        )


def check_token_file(url: str, token_file: Path) -> None:
    """check_token with the run's token file (its first line)."""
    token = (token_file.read_text().splitlines() or [""])[0].strip()
    with requests.Session() as session:
        session.trust_env = False  # an http_proxy from the environment must not intercept this
        check_token(session, url, token, timeout=30.0)


def wait_ready(url: str, competition: str, timeout: float, job: str | None, pid: int | None) -> float:
    start = time.monotonic()
    deadline = start + timeout
    delay = FIRST_DELAY
    last = "no attempt made"
    with requests.Session() as session:
        session.trust_env = False  # an http_proxy from the environment must not intercept this
        while True:
            if job:
                check_job_alive(job)
            if pid:
                check_pid_alive(pid)
            remaining = deadline - time.monotonic()
            reason = probe(session, url, competition, max(0.1, min(MAX_DELAY, remaining)))
            if reason is None:
                return time.monotonic() - start
            last = reason
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HelperError(
                    f"grading server at {url} not ready after {timeout:.0f}s; last error: {last}"
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_DELAY)
