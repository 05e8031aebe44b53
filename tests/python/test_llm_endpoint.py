"""`mlebench-hpc llm-ready` against real HTTP servers: the stand-in, a server that is still loading,
closed ports; and the LLM server job (scripts_hpc/slurm_llm_server.sh) with the stand-in as its
LLM_CMD, found by auto:JOBID, when the local Slurm is up."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "tests" / "llm_standin" / "server.py"
CLI = str(Path(sys.executable).parent / "mlebench-hpc")
MODEL = "standin-sklearn"


def llm_ready(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "llm-ready", *args], capture_output=True, text=True, timeout=timeout, env=env)


def start_standin(tmp: Path, *args: str) -> tuple[subprocess.Popen, str]:
    url_file = tmp / "standin.url"
    proc = subprocess.Popen(
        [sys.executable, str(STANDIN), "--model", MODEL, "--url-file", str(url_file), *args],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not url_file.is_file():
        assert proc.poll() is None and time.monotonic() < deadline, "stand-in did not start"
        time.sleep(0.05)
    return proc, url_file.read_text().strip()


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[str]:
    proc, url = start_standin(tmp_path)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_ready_prints_the_url(standin: str, tmp_path: Path) -> None:
    res = llm_ready(standin + "/", "--model", MODEL, "--timeout", "10")
    assert res.returncode == 0, res.stderr
    assert res.stdout == standin + "\n"
    assert f"lists {MODEL}" in res.stderr


def test_own_server_the_agent_gets_the_key_files_first_non_blank_line(tmp_path: Path) -> None:
    """One key reader: a key file whose first line is blank gives the server and the agent one key."""
    key = tmp_path / "key"
    key.write_text("\n   \n  k-leading-blank  \nsecond-line\n")
    key.chmod(0o600)
    assert key.read_text().splitlines()[0] == ""  # the control: `head -n1` of it is empty
    proc, url = start_standin(tmp_path, "--api-key", "k-leading-blank")
    try:
        env = tmp_path / "state" / "llm.env"
        res = llm_ready(
            url,
            "--model",
            MODEL,
            "--api-key-file",
            str(key),
            "--env-file",
            str(env),
            "--shell",
            "--timeout",
            "10",
        )
        assert res.returncode == 0, res.stderr
        assert f"MH_LLM_URL={url}\n" in res.stdout and "MH_LLM_KEY_FILE=''" in res.stdout
        assert env.read_text() == f"LLM_BASE_URL={url}\nLLM_MODEL={MODEL}\nLLM_API_KEY=k-leading-blank\n"
        assert env.stat().st_mode & 0o777 == 0o600
        assert "k-leading-blank" not in res.stdout + res.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_wrong_model_fails_at_once_naming_what_is_served(standin: str) -> None:
    t0 = time.monotonic()
    res = llm_ready(standin, "--model", "llama-3-70b", "--timeout", "60")
    assert res.returncode == 2
    assert time.monotonic() - t0 < 15
    assert f"serves {MODEL}, not llama-3-70b: set LLM_MODEL" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("{url}", "does not end in /v1"),  # the server's root, not its /v1 base
        ("{url}/api/v1", "not an OpenAI-compatible base URL"),  # /api/v1/models is a 404
        ("ftp://host/v1", "LLM_BASE_URL must be http://host:port/v1"),
    ],
)
def test_wrong_urls_fail_at_once(standin: str, spec: str, says: str) -> None:
    res = llm_ready(spec.format(url=standin.removesuffix("/v1")), "--model", MODEL, "--timeout", "60")
    assert res.returncode == 2
    assert says in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_closed_port_is_bounded(free_port: int) -> None:
    t0 = time.monotonic()
    res = llm_ready(f"http://127.0.0.1:{free_port}/v1", "--model", MODEL, "--timeout", "3")
    assert res.returncode == 2
    assert time.monotonic() - t0 < 15
    assert "did not list standin-sklearn within 3s; last error: ConnectionError" in res.stderr


def test_dead_server_pid_fails_at_once(free_port: int) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    t0 = time.monotonic()
    res = llm_ready(
        f"http://127.0.0.1:{free_port}/v1", "--model", MODEL, "--timeout", "60", "--pid", str(dead.pid)
    )
    assert res.returncode == 2
    assert time.monotonic() - t0 < 15
    assert f"LLM server process {dead.pid} exited" in res.stderr


class Loading:
    """/v1/models answers 503 (a server still loading its model) until `ready` is set."""

    def __init__(self) -> None:
        self.ready = False
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.hits += 1
                body = json.dumps({"object": "list", "data": [{"id": MODEL}]}).encode()
                self.send_response(200 if outer.ready else 503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_server_still_loading_is_waited_for() -> None:
    srv = Loading()
    threading.Timer(2.0, lambda: setattr(srv, "ready", True)).start()
    try:
        res = llm_ready(srv.url, "--model", MODEL, "--timeout", "30")
    finally:
        srv.server.shutdown()
    assert res.returncode == 0, res.stderr
    assert srv.hits >= 2


def test_api_key_from_a_0600_file(tmp_path: Path) -> None:
    proc, url = start_standin(tmp_path, "--api-key", "k-123")
    key = tmp_path / "key"
    key.write_text("k-123\n")
    try:
        res = llm_ready(url, "--model", MODEL, "--timeout", "10")
        assert res.returncode == 2 and "set LLM_API_KEY_FILE" in res.stderr  # control: the key is needed
        key.chmod(0o644)
        res = llm_ready(url, "--model", MODEL, "--api-key-file", str(key))
        assert res.returncode == 2 and f"chmod 600 {key}" in res.stderr
        key.chmod(0o600)
        res = llm_ready(url, "--model", MODEL, "--api-key-file", str(key), "--timeout", "10")
        assert res.returncode == 0, res.stderr
        assert "k-123" not in res.stdout + res.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---------------------------------------------------------------- the LLM server job, real Slurm
def _config(tmp: Path) -> Path:
    """A config whose LLM_CMD runs the stand-in on the host (LLM_SIF empty), as a site runs llama.cpp."""
    standin = f"exec {shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))}"
    args = f'--model "$LLM_MODEL" --host "$LLM_HOST" --port "$LLM_PORT" --log {tmp}/requests.jsonl'
    lines = [f"OUTPUT_BASE={tmp}/runs", f"DATA_DIR={tmp}/data", f"LLM_MODEL={MODEL}", 'LLM_SIF=""']
    lines += ["LLM_READY_TIMEOUT=60", f"LLM_CMD='{standin} {args}'"]
    cfg = tmp / "config.env"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def _squeue_state(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


@pytest.mark.slurm
def test_llm_server_job_found_by_auto_jobid_and_stopped_by_scancel(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    (tmp_path / "data").mkdir()
    env = {**os.environ, "MLEBENCH_HPC_CONFIG": str(cfg)}
    sbatch = ["sbatch", "--parsable", "--gres=gpu:0", "--mem=1G", "--cpus-per-task=1"]
    sbatch += [f"--output={tmp_path}/llm-%j.out", str(REPO / "scripts_hpc" / "slurm_llm_server.sh")]
    sub = subprocess.run(sbatch, capture_output=True, text=True, env=env, check=True, cwd=REPO)
    job = sub.stdout.strip().split(";")[0]
    state_dir = tmp_path / "runs" / ".state"
    try:
        run = ("--run-id", "comp_1", "--state-dir", str(state_dir))
        res = llm_ready(f"auto:{job}", "--model", MODEL, "--timeout", "120", *run, env=env, timeout=180)
        assert res.returncode == 0, res.stderr
        url = res.stdout.strip()
        state = state_dir / "llm" / job
        assert (state / "url").read_text().strip() == url
        assert (state / "keys" / "comp_1").stat().st_mode & 0o777 == 0o600  # the run's own key
        assert f"LLM_SERVER_URL={url}" in (tmp_path / f"llm-{job}.out").read_text()
        assert any(json.loads(line)["path"] == "/v1/models" for line in (tmp_path / "requests.jsonl").open())
    finally:
        subprocess.run(["scancel", job], check=False)
    deadline = time.monotonic() + 60
    while _squeue_state(job) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _squeue_state(job), "the LLM job outlived scancel by a minute"
    assert not (tmp_path / "runs" / ".state" / "llm" / job / "url").exists()
    assert not (tmp_path / "runs" / ".state" / "llm" / job / "keys").exists()
    log = (tmp_path / f"llm-{job}.out").read_text()
    assert "[llm-standin] stopped" in log  # SIGTERM reached the server: a clean stop, not a kill
    res = llm_ready(f"auto:{job}", "--model", MODEL, "--timeout", "10", env=env)
    assert res.returncode == 2
    assert "not found" in res.stderr or "CANCELLED" in res.stderr


# ---------------------------------------------------------------- the LLM server job without Slurm
def run_server_job(cfg: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env |= {"MLEBENCH_HPC_CONFIG": str(cfg), "MLEBENCH_HPC_RUNTIME": "none"}
    return subprocess.run(
        ["bash", str(REPO / "scripts_hpc" / "slurm_llm_server.sh"), *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ("LLM_CMD=''", "LLM_CMD is empty"),
        ("LLM_MODEL_DIR=/nonexistent/weights", "LLM_MODEL_DIR=/nonexistent/weights is not a directory"),
        ("LLM_MODEL=''", "no model for the LLM server: set LLM_MODEL in"),
        ("LLM_CMD='exit 3'", "LLM server process"),
    ],
)
def test_server_job_refuses_bad_config_in_one_line(tmp_path: Path, extra: str, says: str) -> None:
    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text() + extra + "\n")
    res = run_server_job(cfg)
    assert res.returncode == 2, res.stderr
    errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and says in errors[0], res.stderr


def test_server_job_publishes_then_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env |= {"MLEBENCH_HPC_CONFIG": str(cfg), "MLEBENCH_HPC_RUNTIME": "none", "MH_JOB_ID": "local-test"}
    proc = subprocess.Popen(
        ["bash", str(REPO / "scripts_hpc" / "slurm_llm_server.sh")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    url_file = tmp_path / "runs" / ".state" / "llm" / "local-test" / "url"
    deadline = time.monotonic() + 60
    while not url_file.is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.1)
    url = url_file.read_text().strip()
    res = llm_ready(url, "--model", MODEL, "--timeout", "3")
    assert res.returncode == 2 and "HTTP 401" in res.stderr  # without a run's key: refused
    run = ("--run-id", "comp_1", "--server-state", str(url_file.parent))
    assert llm_ready(url, "--model", MODEL, "--timeout", "10", *run).returncode == 0
    proc.terminate()
    out, err = proc.communicate(timeout=60)
    assert f"LLM_SERVER_URL={url}" in out
    assert "[llm-standin] stopped" in err  # the server got SIGTERM and shut down by itself
    assert not url_file.exists()
    res = llm_ready(url, "--model", MODEL, "--timeout", "2")
    assert res.returncode == 2  # nothing listens there any more
