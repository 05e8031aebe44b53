"""Readiness (`wait_ready`, `check_token_file`: the code of `run start`) against real HTTP servers (a
tiny one in a thread, the real grading server), closed ports and a server that never answers; the
job case submits real Slurm jobs when the local cluster is up."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mlebench_hpc.errors import HelperError
from mlebench_hpc.run.readiness import check_token_file, wait_ready

BIN = Path(sys.executable).parent


def ready(
    url: str, competition: str, timeout: float, job: str | None = None, pid: int | None = None
) -> tuple[str | None, float]:
    """(None, seconds) when URL got ready in time, else (the one-line refusal, seconds)."""
    t0 = time.monotonic()
    try:
        elapsed = wait_ready(url, competition, timeout, job, pid)
    except HelperError as exc:
        assert exc.exit_code == 2 and "\n" not in exc.message
        return exc.message, time.monotonic() - t0
    assert elapsed <= time.monotonic() - t0
    return None, elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Health:
    """A /health endpoint whose answer the test controls."""

    def __init__(self, port: int = 0, body: object | None = None, status: int = 200) -> None:
        self.body, self.status, self.hits = body, status, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.hits += 1
                payload = outer.body if isinstance(outer.body, bytes) else json.dumps(outer.body).encode()
                self.send_response(outer.status if self.path == "/health" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def health() -> Iterator[Health]:
    h = Health(body={"status": "running", "competition": "comp-a"})
    yield h
    h.close()


def test_ready_against_live_server(health: Health) -> None:
    error, secs = ready(health.url, "comp-a", 10)
    assert error is None and secs < 10
    assert health.hits >= 1


def test_server_that_starts_late_is_waited_for() -> None:
    port = free_port()
    holder: list[Health] = []
    timer = threading.Timer(
        1.5, lambda: holder.append(Health(port=port, body={"status": "running", "competition": "comp-a"}))
    )
    timer.start()
    try:
        error, secs = ready(f"http://127.0.0.1:{port}", "comp-a", 20)
        assert error is None
        assert 1.4 < secs < 10
    finally:
        timer.join()
        for h in holder:
            h.close()


def test_503_then_ready(health: Health) -> None:
    health.status = 503
    threading.Timer(1.0, lambda: setattr(health, "status", 200)).start()
    error, secs = ready(health.url, "comp-a", 20)
    assert error is None
    assert health.hits >= 2


def test_wrong_competition_fails_fast(health: Health) -> None:
    error, secs = ready(health.url, "comp-b", 60)
    assert error and "comp-a" in error and "comp-b" in error
    assert secs < 10  # not the 60 s timeout
    assert health.hits == 1


def test_not_a_grading_server_fails_fast(health: Health) -> None:
    health.body = {"status": "running"}  # upstream's Flask answer: no competition named
    error, secs = ready(health.url, "comp-a", 60)
    assert error and secs < 10
    assert "competition" in error


def test_closed_port_is_bounded() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    error, secs = ready(url, "comp-a", 3)
    assert 2.8 < secs < 8, secs
    assert error and "not ready after 3s" in error and "ConnectionError" in error


def test_server_that_never_answers_is_bounded() -> None:
    # accepts connections (kernel backlog) but never replies
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        error, secs = ready(url, "comp-a", 2)
    assert 1.8 < secs < 8, secs
    assert error and "Timeout" in error


def test_dead_local_server_pid_fails_fast() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    url = f"http://127.0.0.1:{free_port()}"
    error, secs = ready(url, "comp-a", 60, pid=proc.pid)
    assert error and secs < 10
    assert "exited" in error


# --------------------------------------------------------------------------- real Slurm
def _cluster_up() -> bool:
    if shutil.which("sbatch") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slurm
@pytest.mark.skipif(not _cluster_up(), reason="no local Slurm cluster (make cluster-up)")
def test_ended_grading_job_fails_fast(tmp_path: Path, health: Health) -> None:
    def submit(cmd: str) -> str:
        return subprocess.run(
            ["sbatch", "--parsable", f"--output={tmp_path}/%j.out", "--wrap", cmd],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()

    done = submit("true")
    deadline = time.monotonic() + 60
    while (
        "JobState=COMPLETED"
        not in subprocess.run(["scontrol", "show", "job", "-o", done], capture_output=True, text=True).stdout
    ):
        assert time.monotonic() < deadline, "job never completed"
        time.sleep(0.3)
    url = f"http://127.0.0.1:{free_port()}"
    error, secs = ready(url, "comp-a", 60, job=done)
    assert error and secs < 15
    assert f"grading job {done} ended (COMPLETED)" in error and f"{done}.out" in error

    alive = submit("sleep 60")
    try:
        error, _ = ready(health.url, "comp-a", 30, job=alive)
        assert error is None, error
    finally:
        subprocess.run(["scancel", alive], capture_output=True, timeout=60)


@pytest.fixture
def token_server(demo_data: Path, tmp_path: Path) -> Iterator[str]:
    """The real grading server with a token, as the sbatch scripts start it."""
    url_file = tmp_path / "url"
    env = {**os.environ, "GRADING_SERVER_TOKEN": "right-token"}
    cmd = [str(BIN / "mlebench-hpc"), "serve", "--competition-id", "demo-diabetes"]
    cmd += ["--data-dir", str(demo_data), "--url-file", str(url_file)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not url_file.is_file() and time.monotonic() < deadline:
            assert proc.poll() is None, "grading server exited"
            time.sleep(0.1)
        yield url_file.read_text().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_run_token_is_checked(token_server: str, tmp_path: Path) -> None:
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.write_text("right-token\n")
    wrong.write_text("another-runs-token\n")
    error, _ = ready(token_server, "demo-diabetes", 60)
    assert error is None, error
    check_token_file(token_server, right)  # the server's own token: taken
    with pytest.raises(HelperError) as exc:
        check_token_file(token_server, wrong)
    assert "refuses this run's token" in exc.value.message and "another-runs-token" not in exc.value.message
