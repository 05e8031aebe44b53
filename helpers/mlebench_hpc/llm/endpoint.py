"""`mlebench-hpc llm-ready`: the OpenAI-compatible endpoint an agent will use, resolved and checked
before the agent starts; `mlebench-hpc llm-watch`: returns once that LLM server job is gone.

SPEC is a base URL ending in /v1 (`http://node:8000/v1`), or `auto:JOBID` for an LLM server job of
ours (slurm_llm_server.sh): its URL comes from OUTPUT_BASE/.state/llm/<jobid>/url, else from the
job's own line in its output (the first that is exactly `LLM_SERVER_URL=<url>`, printed before any
client knew the URL; never after a restart); while the job is pending we wait.
With --run-id and a server of ours (auto:JOBID, or --server-state for LLM_BASE_URL=job) the run
registers its own random key with the server's proxy (keys.py) and checks with that key; the
agent gets only that key (--env-file). A server you run yourself gets LLM_API_KEY_FILE's key.
Then GET <url>/models must answer and list the model: we wait (bounded, backoff 0.5 s doubling to
5 s) while nothing answers or the server says it is still loading (5xx), and fail at once, with one
line, when it answers for other models, refuses the key, is not OpenAI-compatible, or when the
server job or process (--job/--pid) is gone. The URL is printed on stdout (--shell: assignments)."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import click
import requests

from mlebench_hpc.errors import HelperError
from mlebench_hpc.llm.keys import check_plain, read_api_key, register_run_key, write_env_file
from mlebench_hpc.net import normalize_url
from mlebench_hpc.run.discovery import ServerJob, default_state_dir, read_url_file, resolve_auto
from mlebench_hpc.run.readiness import check_job_alive, check_pid_alive
from mlebench_hpc.slurm import query as slurm_query
from mlebench_hpc.slurm.query import JobInfo, SlurmError

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


def url_file(state_base: Path, job_id: str) -> Path:
    return state_base / STATE_SUBDIR / job_id / "url"


def llm_server(state_base: Path | None) -> ServerJob:
    """An LLM server job of ours (slurm_llm_server.sh), its URL file in STATE_BASE/llm/<jobid>/url."""

    def check(job_id: str, job: JobInfo, job_ids: list[str]) -> None:
        if "slurm_grading_server.sh" in job.get("Command"):
            raise HelperError(f"job {job_id} is a grading server, not an LLM server: pass the LLM job's id")

    return ServerJob(
        kind="LLM server job",
        mark=URL_MARK,
        url_file=lambda jid: url_file(state_base, jid) if state_base is not None else None,
        check=check,
        url_instead="the endpoint's URL (http://host:port/v1)",
        start_one="sbatch scripts_hpc/slurm_llm_server.sh <model>",
        more_time="raise LLM_READY_TIMEOUT (llm-ready --timeout)",
        caller="llm-ready",
    )


def models_verdict(
    status: int, text: str, url: str, model: str, keyed: bool, whose: str = "LLM_API_KEY_FILE's"
) -> str | None:
    """What an answer of URL/models says: None when it lists MODEL, else why not yet (5xx: still
    loading). Raises HelperError when waiting cannot help. KEYED: a key was sent (WHOSE key)."""
    if status in (401, 403):
        hint = f"check {whose} key" if keyed else "set LLM_API_KEY_FILE to a file holding the key"
        raise HelperError(f"{url}/models refused the request (HTTP {status}): {hint}")
    if status in (404, 405):
        raise HelperError(
            f"{url}/models answered HTTP {status}: not an OpenAI-compatible base URL "
            "(it ends in /v1 for vLLM, llama.cpp and SGLang)"
        )
    if status != 200:
        return f"HTTP {status} from {url}/models (still loading?)"
    try:
        data = json.loads(text).get("data")
        ids = [str(m["id"]) for m in data]
    except (ValueError, AttributeError, KeyError, TypeError):
        raise HelperError(
            f"{url}/models answered 200 without an OpenAI model list ({text[:80]!r}): check LLM_BASE_URL"
        ) from None
    if model not in ids:
        served = ", ".join(ids[:10]) or "no model"
        raise HelperError(
            f"the LLM endpoint {url} serves {served}, not {model}: set LLM_MODEL to one of them"
        )
    return None


def probe(
    session: requests.Session, url: str, model: str, key: str | None, timeout: float, whose: str
) -> str | None:
    """None when URL/models lists MODEL; else why not yet. Raises HelperError when waiting cannot help."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        resp = session.get(f"{url}/models", headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return models_verdict(resp.status_code, resp.text, url, model, keyed=bool(key), whose=whose)


def wait_llm_ready(
    url: str,
    model: str,
    timeout: float,
    key: str | None,
    job: str | None,
    pid: int | None,
    whose: str = "LLM_API_KEY_FILE's",
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
            reason = probe(session, url, model, key, max(0.1, min(MAX_DELAY, remaining)), whose)
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


def server_state_dir(state_base: Path, job_id: str) -> Path:
    """OUTPUT_BASE/.state/llm/<job>: an LLM server job's URL file and its runs' keys."""
    return state_base / STATE_SUBDIR / job_id.split("+")[0]


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
    help="File holding the key of a server you run yourself (LLM_API_KEY_FILE), mode 0600.",
)
@click.option(
    "--job", default=None, help="LLM server job id: fail at once when it ends (auto:JOBID sets it)."
)
@click.option("--pid", type=int, default=None, help="Local LLM server PID: fail at once when it exits.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Base of llm/<jobid>/ (default: $MLEBENCH_HPC_STATE_DIR, $MH_STATE_BASE, else OUTPUT_BASE/.state).",
)
@click.option(
    "--run-id",
    default=None,
    help="Register a key for this run with our LLM server (auto:JOBID, or --server-state) and "
    "check the endpoint with it; removed by the caller when the run ends.",
)
@click.option(
    "--server-state",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The LLM server's state dir when SPEC is its URL (LLM_BASE_URL=job): OUTPUT_BASE/.state/llm/<job>.",
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the agent's LLM_BASE_URL, LLM_MODEL and LLM_API_KEY here (mode 0600).",
)
@click.option(
    "--shell",
    is_flag=True,
    help="Print shell assignments (MH_LLM_URL, MH_LLM_KEY_FILE, MH_LLM_SERVER_JOB, MH_LLM_SERVER_URL_FILE).",
)
def llm_ready_cmd(
    spec: str,
    model: str,
    timeout: float,
    api_key_file: Path | None,
    job: str | None,
    pid: int | None,
    state_dir: Path | None,
    run_id: str | None,
    server_state: Path | None,
    env_file: Path | None,
    shell: bool,
) -> None:
    """Print the endpoint's base URL once /models lists MODEL. SPEC: http://host:port/v1 or auto:JOBID."""
    if not model.strip():
        raise HelperError("LLM_MODEL is empty: set it to the model the endpoint serves")
    key = read_api_key(api_key_file) if api_key_file else None
    url, server_job = spec, ""
    if spec.startswith("auto:"):
        job = server_job = job or spec[len("auto:") :].strip()
        base = state_dir or default_state_dir()
        t0 = time.monotonic()
        url = resolve_auto(job, llm_server(base), timeout)
        timeout = max(timeout - (time.monotonic() - t0), 1.0)  # what is left of it for /models
        if server_state is None and base is not None:
            server_state = server_state_dir(base, job)
    url = normalize_llm_url(url)
    if job and not slurm_query.slurm_available():
        raise HelperError(f"--job {job} needs Slurm's scontrol, which is not on PATH: drop --job")
    key_file: Path | None = None
    whose = "LLM_API_KEY_FILE's"
    if run_id and spec.startswith("auto:") and server_state is None:
        raise HelperError("cannot find the LLM server job's state dir: pass --state-dir OUTPUT_BASE/.state")
    if run_id and server_state is not None:  # our server: this run's own key, nothing else
        key, key_file = register_run_key(server_state, run_id)
        whose = "this run's"
    try:
        check_plain("LLM_MODEL", model)
        check_plain("LLM_BASE_URL", url)
        if key is not None:
            check_plain("the key in LLM_API_KEY_FILE", key)
        elapsed = wait_llm_ready(url, model, timeout, key, job or None, pid, whose)
        if env_file is not None:
            lines = {"LLM_BASE_URL": url, "LLM_MODEL": model} | ({"LLM_API_KEY": key} if key else {})
            write_env_file(env_file, lines, quote=False)
    except BaseException:
        if key_file is not None:
            key_file.unlink(missing_ok=True)
        raise
    click.echo(f"llm-ready: {url} lists {model}, ready after {elapsed:.2f}s", err=True)
    if shell:
        url_of_server = server_state / "url" if server_state is not None and server_job else ""
        for name, value in (
            ("MH_LLM_URL", url),
            ("MH_LLM_KEY_FILE", str(key_file or "")),
            ("MH_LLM_SERVER_JOB", server_job),
            ("MH_LLM_SERVER_URL_FILE", str(url_of_server)),
        ):
            click.echo(f"{name}={shlex.quote(value)}")
    else:
        click.echo(url)
    sys.stdout.flush()


@click.command("llm-watch")
@click.argument("job_id")
@click.option(
    "--url-file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The job's URL file (OUTPUT_BASE/.state/llm/<job>/url), removed when it stops.",
)
@click.option(
    "--every",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between looks at the URL file.",
)
@click.option(
    "--slurm-every",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Seconds between asking Slurm.",
)
def llm_watch_cmd(job_id: str, url_file: Path, every: float, slurm_every: float) -> None:
    """Return (exit 0) once the LLM server job JOB_ID is gone: its URL file removed or changed (a
    requeued job), or Slurm says it ended. Its port may then be taken by anyone on its node."""
    first = read_url_file(url_file)
    next_slurm = time.monotonic()
    while True:
        now = read_url_file(url_file)
        if now is None or now != first:
            click.echo(f"llm-watch: LLM server job {job_id} withdrew its URL {first or ''}", err=True)
            return
        if time.monotonic() >= next_slurm:
            next_slurm = time.monotonic() + slurm_every
            try:
                state = slurm_query.squeue_state(job_id) if slurm_query.slurm_available() else "RUNNING"
            except SlurmError:
                state = "RUNNING"  # cannot say: the URL file still decides
            if state is None or state in slurm_query.ENDED_STATES:
                click.echo(f"llm-watch: LLM server job {job_id} is {state or 'gone'}", err=True)
                return
        time.sleep(every)
