"""The grading server as a real process on a free port, over real HTTP, with the real grading engine."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "environment" / "run_grading_server.py"
COMP = "spaceship-titanic"
N_ROWS = 4000
VALID_MESSAGE = "Submission is valid."
INVALID_PREFIX = "Submission invalid!"


# -- data -----------------------------------------------------------------------------------------
def make_spaceship(data_dir: Path, n_rows: int = N_ROWS, seed: int = 0) -> pd.DataFrame:
    """A spaceship-titanic-shaped prepared competition; returns the answers."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = [f"{g:04d}_{m:02d}" for g, m in zip(range(1, n_rows + 1), rng.integers(1, 9, n_rows), strict=True)]
    answers = pd.DataFrame({"PassengerId": ids, "Transported": rng.random(n_rows) < 0.5})
    prepared = data_dir / COMP / "prepared"
    (prepared / "private").mkdir(parents=True, exist_ok=True)
    (prepared / "public").mkdir(parents=True, exist_ok=True)
    answers.to_csv(prepared / "private" / "test.csv", index=False)
    answers.assign(Transported=False).to_csv(prepared / "public" / "sample_submission.csv", index=False)
    answers[["PassengerId"]].assign(HomePlanet="Earth").to_csv(prepared / "public" / "test.csv", index=False)
    return answers


def submission_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


# -- server process -------------------------------------------------------------------------------
@dataclass
class ServerProc:
    proc: subprocess.Popen[bytes]
    url: str
    url_file: Path
    stderr_path: Path
    tmp_root: Path
    stdout_lines: list[str] = field(default_factory=list)

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def rest_of_stdout(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.read().decode()

    def upload_files(self) -> list[Path]:
        return [p for p in self.tmp_root.rglob("upload-*") if p.is_file()]


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            return proc.stdout.readline().decode()
        if proc.poll() is not None:
            return proc.stdout.readline().decode()
    raise AssertionError(f"no line on stdout within {timeout}s")


def spawn(
    data_dir: Path,
    workdir: Path,
    *extra: str,
    competition: str = COMP,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    wrapper: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """The server as its own process; ENV is added to ours, WRAPPER goes before python."""
    workdir.mkdir(parents=True, exist_ok=True)
    tmp_root = workdir / "tmp"
    tmp_root.mkdir(exist_ok=True)
    full_env = {**os.environ, "TMPDIR": str(tmp_root)}
    full_env.pop("GRADING_SERVER_TOKEN", None)
    full_env.update(env or {})
    cmd = [
        *wrapper, sys.executable, str(SCRIPT), "--competition-id", competition, "--data-dir", str(data_dir),
        "--host", "127.0.0.1", "--port", "0", "--url-file", str(workdir / "url"), *extra,
    ]  # fmt: skip
    with open(workdir / "server.err", "wb") as err:
        return subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, env=full_env, cwd=workdir, preexec_fn=preexec_fn
        )


def start_server(data_dir: Path, workdir: Path, *extra: str, **spawn_options: Any) -> ServerProc:
    """spawn(), then wait for the published URL and check that it accepts connections."""
    proc = spawn(data_dir, workdir, *extra, **spawn_options)
    line = read_line(proc, timeout=120)
    # Connect at once: the line may only appear once the socket listens.
    assert line.startswith("GRADING_SERVER_URL=http://127.0.0.1:"), (
        line,
        (workdir / "server.err").read_text(),
    )
    url = line.strip().split("=", 1)[1]
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5):
        pass
    return ServerProc(proc, url, workdir / "url", workdir / "server.err", workdir / "tmp", [line])


def validate(url: str, content: bytes, name: str = "submission.csv", **kwargs: object) -> requests.Response:
    return requests.post(f"{url}/validate", files={"file": (name, content)}, timeout=60, **kwargs)  # type: ignore[arg-type]


# Fixtures the other server test modules import (by these function names; tests ask for
# `data_dir` and `answers`).
@pytest.fixture(scope="module", name="data_dir")
def data_dir_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_spaceship(root)
    return root


@pytest.fixture(scope="module", name="answers")
def answers_fixture(data_dir: Path) -> pd.DataFrame:
    return pd.read_csv(data_dir / COMP / "prepared" / "private" / "test.csv", dtype={"PassengerId": str})


@pytest.fixture(scope="module")
def server(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    srv = start_server(data_dir, tmp_path_factory.mktemp("srv"), "--max-upload-mb", "1")
    yield srv
    assert srv.stop() == 0, srv.stderr()


# -- publication ----------------------------------------------------------------------------------
def test_url_published_only_after_listening(data_dir: Path, tmp_path: Path) -> None:
    proc = spawn(data_dir, tmp_path)
    url_file = tmp_path / "url"
    try:
        deadline = time.monotonic() + 120
        while not url_file.exists():
            assert proc.poll() is None, (tmp_path / "server.err").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.002)
        # The file appeared: the socket must already accept connections.
        url = url_file.read_text().strip()
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5):
            pass
        line = read_line(proc, timeout=30)
        assert line == f"GRADING_SERVER_URL={url}\n"
        assert requests.get(f"{url}/health", timeout=10).json() == {"status": "running", "competition": COMP}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert proc.stdout is not None
    assert proc.stdout.read() == b"", "exactly one line on stdout"
    assert not url_file.exists()


def test_wildcard_host_publishes_a_resolvable_name(data_dir: Path, tmp_path: Path) -> None:
    proc = spawn(data_dir, tmp_path, "--host", "0.0.0.0")
    try:
        line = read_line(proc, timeout=120)
        url = line.strip().split("=", 1)[1]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        assert host not in {"0.0.0.0", "", "::"}
        assert socket.getaddrinfo(host, int(port))
        assert requests.get(f"{url}/health", timeout=10).status_code == 200
        assert (tmp_path / "url").read_text().strip() == url
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


# -- endpoints ------------------------------------------------------------------------------------
def test_health(server: ServerProc) -> None:
    response = requests.get(f"{server.url}/health", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "running", "competition": COMP}
    assert server.url_file.read_text().strip() == server.url


def test_valid_submission(server: ServerProc, answers: pd.DataFrame) -> None:
    guess = answers.assign(Transported=~answers["Transported"])  # all wrong is still valid
    response = validate(server.url, submission_bytes(guess))
    assert response.status_code == 200
    assert response.json() == {"result": VALID_MESSAGE, "valid": True}


def test_valid_submission_just_under_the_limit(server: ServerProc, answers: pd.DataFrame) -> None:
    # Padded with an extra column (ignored by the grader) to ~0.95 MiB, under the 1 MiB limit.
    pad = "x" * (int(0.95 * 1024 * 1024) // len(answers) - 20)
    content = submission_bytes(answers.assign(Note=pad))
    assert 0.9 * 1024 * 1024 < len(content) < 1024 * 1024 - 1024
    response = validate(server.url, content)
    assert response.status_code == 200, response.text
    assert response.json() == {"result": VALID_MESSAGE, "valid": True}


@pytest.mark.parametrize(
    ("defect", "expected_words"),
    [
        ("wrong_ids", ["PassengerId"]),
        ("missing_rows", ["row"]),
        ("extra_rows", ["row"]),
        ("missing_column", ["Transported"]),
        ("missing_labels", ["Transported", "missing"]),
        ("empty", []),
    ],
)
def test_invalid_submission(
    server: ServerProc, answers: pd.DataFrame, defect: str, expected_words: list[str]
) -> None:
    content = submission_bytes(defective(answers, defect, 7))
    response = validate(server.url, content)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["valid"] is False
    assert body["result"].startswith(INVALID_PREFIX)
    for word in expected_words:
        assert word.lower() in body["result"].lower(), body["result"]
    assert set(body) == {"result", "valid"}


def defective(answers: pd.DataFrame, defect: str, k: int) -> pd.DataFrame:
    """A submission with one kind of defect; k makes each file distinct."""
    frame = answers.copy()
    k = max(1, k)
    if defect == "wrong_ids":
        frame.loc[frame.index[:k], "PassengerId"] = [f"9{i:03d}_99" for i in range(k)]
    elif defect == "missing_rows":
        frame = frame.iloc[k:]
    elif defect == "extra_rows":
        extra = pd.DataFrame({"PassengerId": [f"8{i:03d}_98" for i in range(k)], "Transported": True})
        frame = pd.concat([frame, extra])
    elif defect == "missing_column":
        frame = frame[["PassengerId"]].assign(Prediction=True)
    elif defect == "missing_labels":  # (junk text labels are scored by upstream: 0 for those rows)
        frame = frame.astype({"Transported": object})
        frame.loc[frame.index[:k], "Transported"] = None
    elif defect == "empty":
        frame = frame.iloc[0:0]
    else:
        raise ValueError(defect)
    return frame


def test_binary_junk_is_invalid_not_500(server: ServerProc) -> None:
    junk = os.urandom(200_000)
    response = validate(server.url, junk, name="submission.bin")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["valid"] is False
    assert body["result"].startswith(INVALID_PREFIX)


def test_missing_file_field(server: ServerProc) -> None:
    response = requests.post(f"{server.url}/validate", files={"other": ("a.csv", b"x")}, timeout=10)
    assert response.status_code == 400
    assert "file" in response.json()["error"]
    response = requests.post(f"{server.url}/validate", data=b"PassengerId,Transported\n", timeout=10)
    assert response.status_code == 400
    assert "error" in response.json()


def test_oversized_upload_is_refused(server: ServerProc) -> None:
    big = b"PassengerId,Transported\n" + b"0001_01,True\n" * 120_000  # ~1.6 MB over a 1 MiB limit
    response = validate(server.url, big)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]

    # Chunked (no Content-Length): refused while streaming.
    def chunks() -> Iterator[bytes]:
        boundary = b"XbOuNdArY"
        yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="s.csv"\r\n\r\n'
        for _ in range(40):
            yield b"0001_01,True\n" * 5000
        yield b"\r\n--" + boundary + b"--\r\n"

    response = requests.post(
        f"{server.url}/validate",
        data=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=XbOuNdArY"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"]
    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200


def test_chunked_upload_is_validated(server: ServerProc, answers: pd.DataFrame) -> None:
    boundary = b"cHuNkEd"
    content = submission_bytes(answers)

    def chunks() -> Iterator[bytes]:
        yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="s.csv"\r\n\r\n'
        for start in range(0, len(content), 10_000):
            yield content[start : start + 10_000]
        yield b"\r\n--" + boundary + b"--\r\n"

    response = requests.post(
        f"{server.url}/validate",
        data=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=cHuNkEd"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"result": VALID_MESSAGE, "valid": True}


def test_huge_declared_length_refused_before_body(server: ServerProc) -> None:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 10000000000\r\n\r\n"
        )
        reply = read_http_reply(sock)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"error"' in reply
    assert time.monotonic() - started < 5


def read_http_reply(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def raw_get(url: str, path: str, method: str = "GET") -> tuple[int, bytes]:
    """Send `path` byte for byte (requests/urllib3 would normalise the dot segments away)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        reply = read_http_reply(sock)
    status = int(reply.split(b" ", 2)[1])
    return status, reply.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/x",
        "/../private/test.csv",
        "/validate/../x",
        "/health/../private/test.csv",
        "/static/../../spaceship-titanic/prepared/private/test.csv",
        "/static/test.csv",
        "/private/test.csv",
        "/%2e%2e/private/test.csv",
        "/spaceship-titanic/prepared/private/test.csv",
        "/validate/",
        "/health/",
        "/score",
        "/leaderboard",
    ],
)
def test_unknown_paths_are_404_json(server: ServerProc, path: str) -> None:
    status, body = raw_get(server.url, path)
    assert status == 404, (path, body)
    assert b'"error"' in body
    assert b"PassengerId" not in body


def test_wrong_methods_are_405(server: ServerProc) -> None:
    response = requests.get(f"{server.url}/validate", timeout=10)
    assert response.status_code == 405
    assert "error" in response.json()
    response = requests.post(f"{server.url}/health", timeout=10)
    assert response.status_code == 405
    assert "error" in response.json()


def test_concurrent_uploads_each_get_their_own_verdict(server: ServerProc, answers: pd.DataFrame) -> None:
    defects = ["wrong_ids", "missing_rows", "extra_rows", "missing_column", "missing_labels"]
    cases: list[tuple[bytes, bool]] = []
    for i in range(32):
        if i % 2 == 0:  # valid, each a different guess
            guess = answers.assign(Transported=answers.index % (i + 2) == 0)
            cases.append((submission_bytes(guess), True))
        else:
            cases.append((submission_bytes(defective(answers, defects[i % len(defects)], i)), False))
    results: list[tuple[int, dict | None] | None] = [None] * len(cases)
    barrier = threading.Barrier(len(cases))

    def worker(i: int) -> None:
        barrier.wait()
        response = validate(server.url, cases[i][0], name=f"sub{i}.csv")
        results[i] = (response.status_code, response.json() if response.status_code == 200 else None)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    wrong = []
    for i, ((_, expected), result) in enumerate(zip(cases, results, strict=True)):
        assert result is not None, f"request {i} did not finish"
        status, body = result
        assert status == 200, (i, status)
        assert body is not None
        if body["valid"] is not expected:
            wrong.append(i)
        assert (body["result"] == VALID_MESSAGE) is expected, (i, body)
    assert wrong == [], f"wrong verdicts for requests {wrong}"
    time.sleep(0.2)
    assert server.upload_files() == [], "temporary upload files left behind"


def test_every_request_logged_and_no_tempfiles_after_disconnect(
    server: ServerProc, answers: pd.DataFrame
) -> None:
    assert validate(server.url, submission_bytes(answers)).json()["valid"] is True
    assert validate(server.url, submission_bytes(answers.iloc[1:])).json()["valid"] is False
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b'Content-Length: 500000\r\n\r\n--b\r\nContent-Disposition: form-data; name="file"; '
            b'filename="s.csv"\r\n\r\nPassengerId,Transported\n' + b"0001_01,True\n" * 20_000
        )
        # Mid-body, the upload is being streamed into its own file on disk (not held in memory).
        deadline = time.monotonic() + 10
        while not server.upload_files() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(server.upload_files()) == 1
    deadline = time.monotonic() + 10
    while server.upload_files() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.upload_files() == []
    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
    time.sleep(0.2)
    log = server.stderr()
    assert "GET /health 200" in log
    assert "verdict=valid" in log and "verdict=invalid" in log
    assert "ms=" in log and "bytes=" in log


# -- lifecycle ------------------------------------------------------------------------------------
def test_sigterm_exits_cleanly_and_removes_url_file(data_dir: Path, tmp_path: Path) -> None:
    srv = start_server(data_dir, tmp_path)
    assert srv.url_file.read_text().strip() == srv.url
    assert requests.get(f"{srv.url}/health", timeout=10).status_code == 200
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=20) == 0, srv.stderr()
    assert not srv.url_file.exists()
    assert srv.rest_of_stdout() == ""
    assert srv.upload_files() == [] and list(srv.tmp_root.iterdir()) == [], "upload dir not removed"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{srv.url}/health", timeout=5)


def test_sigint_exits_cleanly(data_dir: Path, tmp_path: Path) -> None:
    srv = start_server(data_dir, tmp_path)
    srv.proc.send_signal(signal.SIGINT)
    assert srv.proc.wait(timeout=20) == 0, srv.stderr()
    assert not srv.url_file.exists()


def test_idle_timeout(data_dir: Path, tmp_path: Path) -> None:
    srv = start_server(data_dir, tmp_path, "--idle-timeout", "2")
    started = time.monotonic()
    for _ in range(3):  # requests keep it alive
        time.sleep(1)
        assert requests.get(f"{srv.url}/health", timeout=10).status_code == 200
    assert srv.proc.poll() is None
    assert srv.proc.wait(timeout=20) == 0, srv.stderr()
    assert time.monotonic() - started >= 4
    assert not srv.url_file.exists()


@pytest.mark.parametrize("competition", [COMP, "no-such-competition"])
def test_unprepared_or_unknown_competition_exits_2(tmp_path: Path, competition: str) -> None:
    empty = tmp_path / "empty-data"
    empty.mkdir()
    proc = spawn(empty, tmp_path / "w", competition=competition)
    assert proc.wait(timeout=120) == 2
    assert proc.stdout is not None
    assert proc.stdout.read() == b""
    lines = (tmp_path / "w" / "server.err").read_text().strip().splitlines()
    assert len(lines) == 1, lines
    assert competition in lines[0] or "prepare" in lines[0].lower(), lines
    assert not (tmp_path / "w" / "url").exists()
