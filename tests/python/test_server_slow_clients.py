"""Slow clients cannot hold the grading server's threads: deadlines for the headers and the body.

The attack: forty connections sending a byte every few seconds (slowloris) would keep /validate
from answering for as long as they stay open. Real process, real sockets; each attack has its
control (the same attack against a server whose deadline is too long to matter)."""

from __future__ import annotations

import contextlib
import resource
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import requests
from test_server import (  # noqa: F401 - fixtures answers, data_dir
    COMP,
    VALID_MESSAGE,
    ServerProc,
    answers_fixture,
    data_dir_fixture,
    make_spaceship,
    start_server,
    submission_bytes,
)

MIB = 1024 * 1024
SLOW = 48  # more than the 16 worker threads
HEADER_SECS = 4.0
MARGIN = 3.0


def address(srv: ServerProc) -> tuple[str, int]:
    host, port = srv.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


@contextmanager
def slowloris(srv: ServerProc, count: int, every: float = 1.0) -> Iterator[dict[socket.socket, float | None]]:
    """COUNT connections that send their request headers one byte every EVERY seconds (a few send
    nothing at all). Yields {socket: when the server closed it, or None}."""
    head = b"POST /validate HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 4000
    socks = [socket.create_connection(address(srv), timeout=10) for _ in range(count)]
    closed: dict[socket.socket, float | None] = dict.fromkeys(socks)
    stop = threading.Event()

    def trickle() -> None:
        sent = 0
        while not stop.wait(every):
            for i, sock in enumerate(socks):
                if closed[sock] is None and i % 8 != 0:  # every 8th stays silent
                    with contextlib.suppress(OSError):  # closed by the server: watch() records when
                        sock.send(head[sent : sent + 1])
            sent = min(sent + 1, len(head) - 1)

    def watch() -> None:
        while not stop.is_set():
            open_ = [s for s in socks if closed[s] is None]
            if not open_:
                return
            readable, _, _ = select.select(open_, [], [], 0.1)
            for sock in readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data or data.startswith(b"HTTP/1.1 408"):
                    closed[sock] = time.monotonic()

    threads = [threading.Thread(target=trickle, daemon=True), threading.Thread(target=watch, daemon=True)]
    for t in threads:
        t.start()
    try:
        yield closed
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        for sock in socks:
            sock.close()


def honest(srv: ServerProc, answers: pd.DataFrame, timeout: float) -> tuple[float, requests.Response]:
    started = time.monotonic()
    response = requests.post(
        f"{srv.url}/validate",
        files={"file": ("s.csv", submission_bytes(answers))},
        timeout=(timeout, timeout),
    )
    return time.monotonic() - started, response


def test_slowloris_cannot_hold_the_threads(data_dir: Path, tmp_path: Path, answers: pd.DataFrame) -> None:
    srv = start_server(data_dir, tmp_path / "srv", "--header-timeout", str(HEADER_SECS))
    try:
        opened = time.monotonic()
        with slowloris(srv, SLOW) as closed:
            time.sleep(1.0)  # every thread is now busy with a slow client
            elapsed, response = honest(srv, answers, timeout=HEADER_SECS + MARGIN + 5)
            assert response.status_code == 200, response.text
            assert response.json() == {"result": VALID_MESSAGE, "valid": True}
            assert elapsed < HEADER_SECS + MARGIN, f"verdict after {elapsed:.1f}s"
            # and the server closed every slow connection, at its header deadline
            deadline = time.monotonic() + HEADER_SECS + MARGIN
            while any(t is None for t in closed.values()) and time.monotonic() < deadline:
                time.sleep(0.1)
            still_open = sum(t is None for t in closed.values())
            assert still_open == 0, f"{still_open} of {SLOW} slow connections still open"
            latest = max(t for t in closed.values() if t is not None) - opened
            assert latest < HEADER_SECS + MARGIN, f"last slow connection closed after {latest:.1f}s"
        assert requests.get(f"{srv.url}/health", timeout=10).status_code == 200
    finally:
        assert srv.stop() == 0, srv.stderr()
    assert srv.stderr().count("dropped a slow client") >= SLOW


def test_slowloris_control_without_a_short_deadline(
    data_dir: Path, tmp_path: Path, answers: pd.DataFrame
) -> None:
    # The same attack against a header deadline far away (the per-read timeout alone):
    # the honest client gets no verdict in the time the test above allows.
    srv = start_server(data_dir, tmp_path / "srv", "--header-timeout", "600")
    try:
        with slowloris(srv, SLOW) as closed:
            time.sleep(1.0)
            with pytest.raises(requests.exceptions.Timeout):
                honest(srv, answers, timeout=HEADER_SECS + MARGIN)
            assert all(t is None for t in closed.values())
    finally:
        assert srv.stop() == 0, srv.stderr()


def send_slow_body(srv: ServerProc, declared: int, every: float, limit: float) -> tuple[bytes, float]:
    """Headers at once, then the body one byte every EVERY seconds until the server answers;
    returns (reply, seconds from the end of the headers to the reply). TimeoutError after LIMIT s."""
    preamble = b'--b\r\nContent-Disposition: form-data; name="file"; filename="s.csv"\r\n\r\n'
    with socket.create_connection(address(srv), timeout=limit) as sock:
        sock.sendall(
            b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: %d\r\n\r\n" % declared
        )
        started = time.monotonic()
        sent = 0
        while not select.select([sock], [], [], every)[0]:
            if time.monotonic() - started > limit:
                raise TimeoutError(f"no answer within {limit}s")
            try:
                sock.send(preamble[sent : sent + 1] if sent < len(preamble) else b"1")
            except OSError:
                break
            sent += 1
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        return reply, time.monotonic() - started


def test_slow_body_is_cut_at_the_body_deadline(data_dir: Path, tmp_path: Path) -> None:
    srv = start_server(data_dir, tmp_path / "srv", "--body-timeout", "3", "--body-min-rate", "1")
    try:
        # a large declared length buys no time: only bytes actually received do
        reply, seconds = send_slow_body(srv, declared=500 * MIB, every=0.3, limit=30)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:300]
        assert b"upload too slow" in reply and b"/home/validate_submission.sh" in reply
        assert 2.5 < seconds < 3 + MARGIN, f"cut after {seconds:.1f}s"
        assert srv.upload_files() == []
        assert requests.get(f"{srv.url}/health", timeout=10).status_code == 200
        time.sleep(0.2)
        assert "verdict=too-slow" in srv.stderr()
    finally:
        assert srv.stop() == 0, srv.stderr()


def test_slow_body_control_with_a_long_deadline(data_dir: Path, tmp_path: Path) -> None:
    srv = start_server(data_dir, tmp_path / "srv", "--body-timeout", "600")
    try:
        with pytest.raises(TimeoutError):
            send_slow_body(srv, declared=100_000, every=0.3, limit=3 + MARGIN)
    finally:
        assert srv.stop() == 0, srv.stderr()


def test_steady_upload_longer_than_the_base_time_is_accepted(
    data_dir: Path, tmp_path: Path, answers: pd.DataFrame
) -> None:
    # 6 MiB at about 2 MiB/s takes 3 s, longer than --body-timeout 2, but faster than 1 MiB/s
    # on average: the rate credit keeps it alive.
    srv = start_server(data_dir, tmp_path / "srv", "--body-timeout", "2", "--body-min-rate", "1")
    try:
        content = submission_bytes(answers.assign(Note="x" * (6 * MIB // len(answers))))
        step = 256 * 1024

        def paced() -> Iterator[bytes]:
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="s.csv"\r\n\r\n'
            for start in range(0, len(content), step):
                time.sleep(step / (2 * MIB))
                yield content[start : start + step]
            yield b"\r\n--b--\r\n"

        started = time.monotonic()
        response = requests.post(
            f"{srv.url}/validate",
            data=paced(),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
            timeout=60,
        )
        assert time.monotonic() - started > 2.5
        assert response.status_code == 200, response.text
        assert response.json() == {"result": VALID_MESSAGE, "valid": True}
    finally:
        assert srv.stop() == 0, srv.stderr()


def test_oversized_headers_refused(data_dir: Path, tmp_path: Path) -> None:
    # headers are held in memory: a client may not send megabytes of them within the deadline
    srv = start_server(data_dir, tmp_path / "srv")
    try:
        with socket.create_connection(address(srv), timeout=10) as sock:
            with contextlib.suppress(OSError):  # closed on us mid-send: refused
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (4 * MIB) + b"\r\n\r\n")
            reply = sock.recv(65536)
        assert reply == b"" or reply.split(b" ", 2)[1] in (b"413", b"414"), reply[:200]
        assert requests.get(f"{srv.url}/health", timeout=10).status_code == 200
    finally:
        assert srv.stop() == 0, srv.stderr()


def test_too_many_connections_do_not_flood_the_log(
    data_dir: Path, tmp_path: Path, answers: pd.DataFrame
) -> None:
    # More connections than the server has file descriptors: accept() fails until some close.
    # cheroot alone retried and logged a traceback in a tight loop (34 063 of them, 25 MB, in two
    # seconds when this test was written); the server must stay quiet and recover.
    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    srv = start_server(data_dir, tmp_path / "srv", "--header-timeout", "2", preexec_fn=few_descriptors)
    try:
        socks = []
        for _ in range(400):
            try:
                socks.append(socket.create_connection(address(srv), timeout=5))
            except OSError:
                break
        time.sleep(2)
        for sock in socks:
            sock.close()
        _, response = honest(srv, answers, timeout=30)
        assert response.status_code == 200 and response.json()["valid"] is True, response.text
    finally:
        assert srv.stop() == 0, srv.stderr()
    log = srv.stderr()
    assert log.count("Traceback") <= 2 and len(log) < 200_000, f"{len(log)} bytes of log"
