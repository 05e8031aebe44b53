"""`mlebench-hpc llm-ready`: the OpenAI-compatible endpoint an agent will use, resolved and checked
before the agent starts (and by the LLM server job before it publishes its URL).

SPEC is a base URL ending in /v1 (`http://node:8000/v1`), or `auto:JOBID` for an LLM server job of
ours (slurm_llm_server.sh): its URL comes from OUTPUT_BASE/.state/llm/<jobid>/url, else from the
job's own line in its output (the first that is exactly `LLM_SERVER_URL=<url>`, printed before any
client knew the URL; never after a restart); while the job is pending we wait.
Then GET <url>/models must answer and list the model: we wait (bounded, backoff 0.5 s doubling to
5 s) while nothing answers or the server says it is still loading (5xx), and fail at once, with one
line, when it answers for other models, refuses the key, is not OpenAI-compatible, or when the
server job or process (--job/--pid) is gone. The URL is printed on stdout."""

from __future__ import annotations

import stat
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import click
import requests

from mlebench_hpc import slurm_query
from mlebench_hpc.atomic import write_atomic
from mlebench_hpc.discovery import (
    default_state_dir,
    expand_output_path,
    normalize_url,
    restarted,
    server_url_in_file,
)
from mlebench_hpc.errors import HelperError
from mlebench_hpc.readiness import check_job_alive, check_pid_alive
from mlebench_hpc.slurm_query import SlurmError

URL_MARK = "LLM_SERVER_URL="
STATE_SUBDIR = "llm"  # OUTPUT_BASE/.state/llm/<jobid>/url: apart from the grading servers' <comp>_<jobid>
FIRST_DELAY = 0.5
MAX_DELAY = 5.0
PROGRESS_SECS = 30.0


def normalize_llm_url(url: str) -> str:
    """An http(s) base URL whose path ends in /v1, without a trailing slash; raise HelperError."""
    try:
        url = normalize_url(url)
    except ValueError as exc:
        raise HelperError(f"{exc}: LLM_BASE_URL must be http://host:port/v1 or auto:JOBID") from None
    if not urlsplit(url).path.endswith("/v1"):
        raise HelperError(
            f"{url} does not end in /v1: LLM_BASE_URL is the OpenAI-compatible base URL, e.g. "
            f"http://{urlsplit(url).netloc}/v1"
        )
    return url


def read_api_key(path: Path) -> str:
    """The key in a file of its own (first line), which only its owner may read."""
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise HelperError(f"LLM_API_KEY_FILE={path} cannot be read ({exc}): fix the path") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise HelperError(f"LLM_API_KEY_FILE={path} is readable by others: chmod 600 {path}")
    key = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not key:
        raise HelperError(f"LLM_API_KEY_FILE={path} is empty: put the key on its first line")
    return key


def url_file(state_base: Path, job_id: str) -> Path:
    return state_base / STATE_SUBDIR / job_id / "url"


def _read_url(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
        return normalize_url(text.splitlines()[0]) if text else None
    except (OSError, ValueError, IndexError):
        return None


def resolve_auto(job_id: str, timeout: float, state_base: Path | None) -> tuple[str, float]:
    """(URL, seconds left) of LLM server job JOB_ID, waiting while it is pending or starting."""
    if not slurm_query.slurm_available():
        raise HelperError(
            f"auto:{job_id} needs Slurm (scontrol): pass the endpoint's URL (http://host:port/v1)"
        )
    if not slurm_query.valid_job_id(job_id):
        raise HelperError(f"auto:{job_id}: {job_id!r} is not a Slurm job id (e.g. auto:12345)")
    start = time.monotonic()
    deadline, next_progress = start + timeout, start + PROGRESS_SECS
    base = job_id.split("+")[0]
    while True:
        try:
            job = slurm_query.main_record(job_id)
        except SlurmError as exc:
            raise HelperError(str(exc)) from None
        if job is None:
            raise HelperError(f"LLM server job {job_id} not found: check the id with squeue -u $USER")
        if "slurm_grading_server.sh" in job.get("Command"):
            raise HelperError(f"job {job_id} is a grading server, not an LLM server: pass the LLM job's id")
        out = expand_output_path(job.get("StdOut"), job, job_id)
        if job.state in slurm_query.ENDED_STATES:
            raise HelperError(
                f"LLM server job {job_id} is {job.state} (output {out}): start one with "
                "sbatch scripts_hpc/slurm_llm_server.sh <model>"
            )
        if job.state in slurm_query.WAITING_STATES:
            waiting = f"job {job_id} is {job.state} (reason: {job.get('Reason', 'none')})"
        else:
            found = _read_url(url_file(state_base, base)) if state_base else None
            if not found and out and not restarted(job):
                found = server_url_in_file(out, URL_MARK)
            if found:
                return found, deadline - time.monotonic()
            waiting = f"job {job_id} is {job.state} but has not published its URL yet (output {out})"
        now = time.monotonic()
        if now >= deadline:
            raise HelperError(
                f"gave up after {timeout:.0f}s: {waiting}; raise --timeout or see squeue -j {job_id}"
            )
        if now >= next_progress:
            click.echo(f"llm-ready: waiting {now - start:.0f}s/{timeout:.0f}s: {waiting}", err=True)
            next_progress = now + PROGRESS_SECS
        time.sleep(max(0.0, min(2.0, deadline - now)))


def probe(session: requests.Session, url: str, model: str, key: str | None, timeout: float) -> str | None:
    """None when URL/models lists MODEL; else why not yet. Raises HelperError when waiting cannot help."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        resp = session.get(f"{url}/models", headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    if resp.status_code in (401, 403):
        hint = "check LLM_API_KEY_FILE" if key else "set LLM_API_KEY_FILE to a file holding the key"
        raise HelperError(f"{url}/models refused the request (HTTP {resp.status_code}): {hint}")
    if resp.status_code in (404, 405):
        raise HelperError(
            f"{url}/models answered HTTP {resp.status_code}: not an OpenAI-compatible base URL "
            "(it ends in /v1 for vLLM, llama.cpp and SGLang)"
        )
    if resp.status_code != 200:
        return f"HTTP {resp.status_code} from {url}/models (still loading?)"
    try:
        data = resp.json().get("data")
        ids = [str(m["id"]) for m in data]
    except (ValueError, AttributeError, KeyError, TypeError):
        raise HelperError(
            f"{url}/models answered 200 without an OpenAI model list ({resp.text[:80]!r}): check LLM_BASE_URL"
        ) from None
    if model not in ids:
        served = ", ".join(ids[:10]) or "no model"
        raise HelperError(
            f"the LLM endpoint {url} serves {served}, not {model}: set LLM_MODEL to one of them"
        )
    return None


def wait_llm_ready(
    url: str, model: str, timeout: float, key: str | None, job: str | None, pid: int | None
) -> float:
    """Seconds it took until URL/models listed MODEL; HelperError at the deadline."""
    start = time.monotonic()
    deadline, next_progress = start + timeout, start + PROGRESS_SECS
    delay, last = FIRST_DELAY, "no attempt made"
    with requests.Session() as session:
        session.trust_env = False  # an http_proxy of the environment must not intercept a node-local URL
        while True:
            if job:
                check_job_alive(job, what="LLM server job")
            if pid:
                check_pid_alive(pid, what="LLM server process")
            remaining = deadline - time.monotonic()
            reason = probe(session, url, model, key, max(0.1, min(MAX_DELAY, remaining)))
            if reason is None:
                return time.monotonic() - start
            last = reason
            now = time.monotonic()
            if now >= deadline:
                raise HelperError(
                    f"the LLM endpoint {url} did not list {model} within {timeout:.0f}s; last error: {last}"
                )
            if now >= next_progress:
                click.echo(
                    f"llm-ready: waiting {now - start:.0f}s/{timeout:.0f}s for {url}: {last}", err=True
                )
                next_progress = now + PROGRESS_SECS
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, MAX_DELAY)


@click.command("llm-ready")
@click.argument("spec")
@click.option("--model", required=True, help="Model the endpoint must list at /v1/models (LLM_MODEL).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Give up after this many seconds (pending job, model still loading).",
)
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File holding the endpoint's key (LLM_API_KEY_FILE), mode 0600.",
)
@click.option(
    "--job", default=None, help="LLM server job id: fail at once when it ends (auto:JOBID sets it)."
)
@click.option("--pid", type=int, default=None, help="Local LLM server PID: fail at once when it exits.")
@click.option(
    "--local-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="SPEC is this machine's server on this port (SPEC ignored): http://<this node>:PORT/v1.",
)
@click.option(
    "--url-file",
    "publish",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Once ready, write the URL here atomically (what the LLM server job publishes).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Base of llm/<jobid>/url (default: as discover-url: OUTPUT_BASE/.state).",
)
def llm_ready_cmd(
    spec: str,
    model: str,
    timeout: float,
    api_key_file: Path | None,
    job: str | None,
    pid: int | None,
    local_port: int | None,
    publish: Path | None,
    state_dir: Path | None,
) -> None:
    """Print the endpoint's base URL once /models lists MODEL. SPEC: http://host:port/v1 or auto:JOBID."""
    if not model.strip():
        raise HelperError("LLM_MODEL is empty: set it to the model the endpoint serves")
    key = read_api_key(api_key_file) if api_key_file else None
    url = spec
    if local_port is not None:
        from mlebench_hpc.server import published_host  # as the grading server names its node

        url = f"http://{published_host('0.0.0.0')}:{local_port}/v1"
    elif spec.startswith("auto:"):
        job = job or spec[len("auto:") :].strip()
        url, timeout = resolve_auto(job, timeout, state_dir or default_state_dir())
        timeout = max(timeout, 1.0)
    url = normalize_llm_url(url)
    if job and not slurm_query.slurm_available():
        raise HelperError(f"--job {job} needs Slurm's scontrol, which is not on PATH: drop --job")
    elapsed = wait_llm_ready(url, model, timeout, key, job or None, pid)
    if publish is not None:
        write_atomic(publish, (url + "\n").encode())
    click.echo(f"llm-ready: {url} lists {model}, ready after {elapsed:.2f}s", err=True)
    click.echo(url)
    sys.stdout.flush()
