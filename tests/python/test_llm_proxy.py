"""The LLM proxy (`mlebench-hpc llm-proxy`) as real processes, in front of the stand-in with
SO_REUSEPORT set (as vLLM and llama.cpp's server do): a second socket on the backend's port (the
joiner, tests/llm_standin/joiner.py) receives nothing of any request, with its control (without
the proxy it receives part of the connections, keys included); the proxy's own port cannot be bound
on IPv4 or IPv6, with its control (a v4-only socket is shadowed on IPv6); only registered run keys
pass; bounds; responses streamed; the backend's key read by the one key reader."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from mlebench_hpc.llm.keys import read_api_key, register_run_key

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "tests" / "llm_standin" / "server.py"
JOINER = REPO / "tests" / "llm_standin" / "joiner.py"
CLI = str(Path(sys.executable).parent / "mlebench-hpc")
MODEL = "standin-sklearn"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "# Task description\nsolve it"}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(path: Path, proc: subprocess.Popen, what: str, secs: float = 30) -> None:
    deadline = time.monotonic() + secs
    while not (path.is_file() and path.stat().st_size):
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"no {path} from {what}"
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Backend:
    proc: subprocess.Popen
    port: int
    key_file: Path
    log: Path

    def records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []


@dataclass
class Proxy:
    proc: subprocess.Popen
    url: str
    state: Path
    stderr: Path

    def register(self, run: str) -> str:
        return register_run_key(self.state, run)[0]

    def get(self, key: str | None, path: str = "/models", **kw: object) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return requests.get(self.url + path, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]

    def chat(self, key: str | None, **kw: object) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return requests.post(f"{self.url}/chat/completions", headers=headers, timeout=30, **kw)  # type: ignore[arg-type]


def start_backend(tmp: Path, reuse_port: bool = True, keyed: bool = True) -> Backend:
    """The stand-in on 127.0.0.1 with the server's key from `llm-proxy backend-env` (KEYED: it
    requires it)."""
    env_file, key_file = tmp / "backend.env", tmp / "server.key"
    subprocess.run([CLI, "llm-proxy", "backend-env", str(env_file), "--key-out", str(key_file)], check=True)
    port, log = free_port(), tmp / "backend.jsonl"
    args = [sys.executable, str(STANDIN), "--model", MODEL, "--port", str(port), "--log", str(log)]
    args += ["--reuse-port"] if reuse_port else []
    env = {k: v for k, v in os.environ.items() if k not in ("LLM_API_KEY", "STANDIN_API_KEY")}
    env |= {"LLM_API_KEY": read_api_key(key_file)} if keyed else {}
    proc = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert proc.poll() is None and time.monotonic() < deadline, "the stand-in did not start"
        time.sleep(0.05)
    return Backend(proc, port, key_file, log)


def start_proxy(tmp: Path, port: int, pid: int, key_file: Path) -> Proxy:
    state, err = tmp / "state", tmp / "proxy.err"
    args = [
        CLI,
        "llm-proxy",
        "serve",
        "--model",
        MODEL,
        "--backend-port",
        str(port),
        "--backend-pid",
        str(pid),
    ]
    args += ["--server-key-file", str(key_file), "--state-dir", str(state), "--timeout", "30"]
    with err.open("w") as handle:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=handle)
    wait_for(state / "url", proc, "the proxy")
    return Proxy(proc, (state / "url").read_text().strip(), state, err)


@dataclass
class Joiner:
    proc: subprocess.Popen
    counts_file: Path

    def counts(self) -> dict[str, object]:
        return json.loads(self.counts_file.read_text())


def start_joiner(tmp: Path, port: int) -> Joiner:
    counts = tmp / "joiner.json"
    proc = subprocess.Popen(
        [sys.executable, str(JOINER), "join", "--port", str(port), "--counts", str(counts)],
        stderr=subprocess.DEVNULL,
    )
    wait_for(counts, proc, "the joiner")
    return Joiner(proc, counts)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    b = start_backend(tmp_path)
    yield b
    stop(b.proc)


@pytest.fixture
def proxy(tmp_path: Path, backend: Backend) -> Iterator[Proxy]:
    p = start_proxy(tmp_path, backend.port, backend.proc.pid, backend.key_file)
    yield p
    stop(p.proc)


def test_control_a_joiner_takes_part_of_the_connections_and_the_keys(
    backend: Backend, tmp_path: Path
) -> None:
    """Without the proxy: the same joiner on the server's port gets prompts and the key."""
    joiner = start_joiner(tmp_path, backend.port)
    key = read_api_key(backend.key_file)
    try:
        url = f"http://127.0.0.1:{backend.port}/v1"
        codes = [
            requests.post(
                f"{url}/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}, timeout=10
            )
            .json()
            .get("model")
            for _ in range(40)
        ]
    finally:
        stop(joiner.proc)
    counts = joiner.counts()
    assert 0 < counts["with_data"] < 40, counts
    assert counts["keys"] == counts["with_data"]  # every request it got carried the server's key
    assert codes.count("joined") == counts["with_data"]  # and its own answer went back to the client
    assert codes.count(MODEL) == 40 - counts["with_data"]


def test_a_joiner_on_the_backend_port_gets_nothing_through_the_proxy(
    backend: Backend, proxy: Proxy, tmp_path: Path
) -> None:
    joiner = start_joiner(tmp_path, backend.port)
    key = proxy.register("victim_1")
    try:
        answers = [proxy.get(key) if i % 2 else proxy.chat(key, json=CHAT) for i in range(40)]
    finally:
        stop(joiner.proc)
    assert [r.status_code for r in answers] == [200] * 40
    # every answer is the stand-in's own (the joiner answers with its model "joined")
    assert [r.json()["model"] for r in answers[::2]] == [MODEL] * 20
    assert [[m["id"] for m in r.json()["data"]] for r in answers[1::2]] == [[MODEL]] * 20
    counts = joiner.counts()
    assert counts["connections"] > 0, counts  # the join worked: the kernel gave it connections
    assert counts["with_data"] == 0 and counts["bytes"] == 0, counts  # and not one byte came on them
    served = [r for r in backend.records() if r["status"] == 200]
    assert len(served) == 40 + 1  # every request reached the real server (and the readiness check)
    err = proxy.stderr.read_text()
    assert "ERROR: a connection to the LLM server's port" in err and "someone joined its port" in err


def test_nobody_can_bind_the_proxys_port_on_ipv4_or_ipv6(proxy: Proxy) -> None:
    port = int(proxy.url.rsplit(":", 1)[1].split("/")[0])
    out = subprocess.run(
        [sys.executable, str(JOINER), "try-bind", "--port", str(port)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == dict.fromkeys(("0.0.0.0", "127.0.0.1", "::", "::1"), "EADDRINUSE")


def test_control_a_v4_only_listener_is_shadowed_on_ipv6() -> None:
    """What the dual-stack socket prevents: beside a socket on 0.0.0.0, [::]:port is free."""
    with socket.socket(socket.AF_INET) as v4:
        v4.bind(("0.0.0.0", 0))
        v4.listen()
        port = v4.getsockname()[1]
        out = subprocess.run(
            [sys.executable, str(JOINER), "try-bind", "--port", str(port)],
            capture_output=True,
            text=True,
            check=True,
        )
    got = json.loads(out.stdout)
    assert got["0.0.0.0"] == got["127.0.0.1"] == "EADDRINUSE"
    assert got["::"] == "bound"


def test_only_the_keys_of_registered_runs_pass(proxy: Proxy, backend: Backend, tmp_path: Path) -> None:
    key = proxy.register("comp_10")
    assert proxy.get(key).status_code == 200
    other_server = tmp_path / "other" / "llm" / "77"
    (other_server / "keys").mkdir(parents=True)
    other = register_run_key(other_server, "comp_11")[0]  # a run of another LLM server
    server_key = read_api_key(backend.key_file)
    refused = {
        "no key": proxy.get(None),
        "a random key": proxy.get("sk-" + "x" * 40),
        "another server's run key": proxy.get(other),
        "the backend's own key": proxy.get(server_key),
    }
    assert {k: r.status_code for k, r in refused.items()} == dict.fromkeys(refused, 401)
    assert refused["no key"].json()["error"]["code"] == 401  # OpenAI's error shape
    before = len(backend.records())
    (proxy.state / "keys" / "comp_10").unlink()  # the run ended
    assert proxy.get(key).status_code == 401
    later = proxy.register("comp_12")  # a run that starts now is served at once
    assert proxy.chat(later, json=CHAT).status_code == 200
    assert len(backend.records()) == before + 1  # none of the refused requests reached the backend


def test_bounds_paths_methods_and_bodies(proxy: Proxy, backend: Backend) -> None:
    key = proxy.register("comp_20")
    before = len(backend.records())
    assert proxy.get(key, "/../slots").status_code == 404  # requests normalizes it to /slots
    assert requests.get(proxy.url.removesuffix("/v1") + "/slots", timeout=10).status_code == 404
    assert proxy.get(key, "/models?x=LLM_SERVER_URL=http://evil:1/v1").status_code == 404
    auth = {"Authorization": f"Bearer {key}"}
    assert requests.put(f"{proxy.url}/models", headers=auth, timeout=10).status_code == 405
    big = b"x" * (17 * 1024 * 1024)
    assert proxy.chat(key, data=big).status_code == 413
    chunked = requests.post(
        f"{proxy.url}/chat/completions", headers=auth, data=iter([big[:8_000_000]] * 3), timeout=30
    )
    assert chunked.status_code == 413
    assert len(backend.records()) == before  # nothing of it reached the backend
    assert proxy.chat(key, json=CHAT).status_code == 200


class SlowStream:
    """A backend in this process (so its tree is this pid) that streams two events, the second
    only once `go` is set: the client must see the first one before."""

    def __init__(self, key: str) -> None:
        self.go = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                ok = self.headers.get("Authorization") == f"Bearer {key}"
                body = json.dumps({"object": "list", "data": [{"id": MODEL}]} if ok else {}).encode()
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for event in (b"data: first\n\n", None, b"data: [DONE]\n\n"):
                    if event is None:
                        outer.go.wait(20)
                        continue
                    self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_responses_are_streamed_as_they_come(tmp_path: Path) -> None:
    key_file = tmp_path / "server.key"
    subprocess.run(
        [CLI, "llm-proxy", "backend-env", str(tmp_path / "b.env"), "--key-out", str(key_file)], check=True
    )
    backend = SlowStream(read_api_key(key_file))
    proxy = start_proxy(tmp_path, backend.port, os.getpid(), key_file)
    try:
        key = proxy.register("comp_30")
        with proxy.chat(key, json={**CHAT, "stream": True}, stream=True) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            assert next(lines) == b"data: first"  # while the backend still holds the rest
            backend.go.set()
            assert [line for line in lines if line] == [b"data: [DONE]"]
    finally:
        backend.go.set()
        stop(proxy.proc)
        backend.server.shutdown()


def test_backend_env_one_key_reader_leading_blank_line(tmp_path: Path) -> None:
    """The backend and the proxy get the key file's first non-blank line, as the agent would."""
    key = tmp_path / "llm.key"
    key.write_text("\n\n  the-key-1  \nother\n")
    key.chmod(0o600)
    env, copy = tmp_path / "backend.env", tmp_path / "server.key"
    cmd = [CLI, "llm-proxy", "backend-env", str(env), "--key-out", str(copy), "--api-key-file", str(key)]
    subprocess.run(cmd, check=True)
    assert env.read_text() == "LLM_API_KEY=the-key-1\nVLLM_API_KEY=the-key-1\nLLAMA_API_KEY=the-key-1\n"
    assert read_api_key(copy) == "the-key-1"
    assert env.stat().st_mode & 0o777 == copy.stat().st_mode & 0o777 == 0o600
    key.chmod(0o644)
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 2 and f"chmod 600 {key}" in res.stderr and len(res.stderr.splitlines()) == 1


def test_a_backend_that_takes_requests_without_its_key_is_reported(tmp_path: Path) -> None:
    backend = start_backend(tmp_path, keyed=False)  # an LLM_CMD that ignores the key
    try:
        proxy = start_proxy(tmp_path, backend.port, backend.proc.pid, backend.key_file)
        stop(proxy.proc)
    finally:
        stop(backend.proc)
    assert "warning: the LLM server answers /v1/models without its key" in proxy.stderr.read_text()


def test_control_a_backend_that_checks_its_key_is_not_reported(proxy: Proxy) -> None:
    err = proxy.stderr.read_text()
    assert "ready after" in err and "without its key" not in err


def test_a_backend_that_wants_another_key_is_one_line_and_exit_2(tmp_path: Path) -> None:
    key_file = tmp_path / "server.key"
    subprocess.run(
        [CLI, "llm-proxy", "backend-env", str(tmp_path / "b.env"), "--key-out", str(key_file)], check=True
    )
    port = free_port()
    env = {**os.environ, "LLM_API_KEY": "not-the-servers-key"}  # an LLM_CMD with a key of its own
    backend = subprocess.Popen(
        [sys.executable, str(STANDIN), "--model", MODEL, "--port", str(port)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        args = [CLI, "llm-proxy", "serve", "--model", MODEL, "--backend-port", str(port), "--backend-pid"]
        args += [str(backend.pid), "--server-key-file", str(key_file), "--state-dir", str(tmp_path / "s")]
        res = subprocess.run(args + ["--timeout", "20"], capture_output=True, text=True, timeout=60)
    finally:
        stop(backend)
    errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert res.returncode == 2 and len(errors) == 1, res.stderr
    assert "refused its own key (HTTP 401): LLM_CMD must take it from LLM_API_KEY" in errors[0]
    assert not (tmp_path / "s" / "url").exists()
