"""The grading server's memory: every submission is parsed in a worker process with a memory budget,
so an upload sized to exhaust it is answered "invalid" naming the budget, and the server lives.
Real server process, real HTTP, real engine; the control runs the same upload in the server process
(--validate-workers 0: no worker, no budget) and sees it take more than the budget."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import requests
from mlebench_hpc.server.inflight import InFlight, InFlightRecorder, read_inflight
from mlebench_hpc.server.validation_pool import BUDGET_FLOOR, MIB, choose_budget
from test_server import (  # noqa: F401 - fixtures answers, data_dir
    INVALID_PREFIX,
    VALID_MESSAGE,
    ServerProc,
    answers_fixture,
    data_dir_fixture,
    defective,
    start_server,
    submission_bytes,
    validate,
)

BUDGET_MB = 160
OVERSIZED_ROWS = 3_000_000  # a 46 MB upload whose parse takes about 300 MiB


@pytest.fixture(scope="module")
def oversized() -> bytes:
    return b"PassengerId,Transported\n" + b"".join(b"%07d_01,True\n" % i for i in range(OVERSIZED_ROWS))


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} for {pid}")


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def workers_of(srv: ServerProc) -> list[int]:
    """The validation workers: the children of the server's only child, the zygote."""
    (zygote,) = children(srv.proc.pid)
    return children(zygote)


def logged(srv: ServerProc, text: str, secs: float = 10) -> bool:
    """TEXT appears in the server's log within SECS (the start-up line follows the URL)."""
    deadline = time.monotonic() + secs
    while text not in srv.stderr():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def is_over_budget(body: dict, budget_mb: int = BUDGET_MB) -> bool:
    return f"allows one validation ({budget_mb} MiB" in body["result"]


def test_an_upload_over_the_budget_is_invalid_naming_it_and_the_server_lives(
    data_dir: Path, answers: pd.DataFrame, tmp_path: Path, oversized: bytes
) -> None:
    inflight = tmp_path / "state" / "inflight.json"
    inflight.parent.mkdir()
    srv = start_server(
        data_dir, tmp_path / "srv", "--validate-budget-mb", str(BUDGET_MB), "--inflight-file", str(inflight)
    )
    try:
        assert logged(srv, f"validation in 2 workers of {BUDGET_MB} MiB each (--validate-budget-mb)")
        before = workers_of(srv)
        response = validate(srv.url, oversized)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"result", "valid"} and body["valid"] is False
        assert body["result"].startswith(INVALID_PREFIX) and is_over_budget(body), body
        assert body["result"].count("\n") == 1, "one line after upstream's preamble"
        assert srv.proc.poll() is None
        assert requests.get(f"{srv.url}/health", timeout=10).status_code == 200
        # the next upload is answered as usual, by a worker that replaced the exhausted one
        assert validate(srv.url, submission_bytes(answers)).json() == {"result": VALID_MESSAGE, "valid": True}
        assert set(workers_of(srv)) != set(before) and len(workers_of(srv)) == 2
        assert logged(srv, "answered invalid (budget 160 MiB per validation); replaced")
        # the server process itself never parsed the upload
        assert status_kib(srv.proc.pid, "VmHWM") < 150 * 1024
        record = read_inflight(inflight)
        assert record is not None and record.pid == srv.proc.pid
        assert (record.in_flight, record.in_flight_bytes, record.requests, record.over_budget) == (0, 0, 2, 1)
    finally:
        assert srv.stop() == 0, srv.stderr()
    assert not inflight.exists(), "the record goes with the server"


def test_control_in_the_server_process_the_same_upload_takes_more_than_the_budget(
    data_dir: Path, tmp_path: Path, oversized: bytes
) -> None:
    srv = start_server(data_dir, tmp_path / "srv", "--validate-workers", "0")
    try:
        assert logged(srv, "validation in the server process (--validate-workers 0: no memory bound)")
        assert children(srv.proc.pid) == []
        base = status_kib(srv.proc.pid, "VmRSS")
        body = validate(srv.url, oversized).json()
        assert body["valid"] is False and not is_over_budget(body), "parsed to the end: the row count"
        grew = status_kib(srv.proc.pid, "VmHWM") - base
        assert grew > BUDGET_MB * 1024, f"the parse took only {grew} KiB in the server"
    finally:
        assert srv.stop() == 0, srv.stderr()


def test_a_worker_killed_mid_request_is_replaced_and_the_request_answered(
    data_dir: Path, answers: pd.DataFrame, tmp_path: Path, oversized: bytes
) -> None:
    srv = start_server(data_dir, tmp_path / "srv", "--validate-workers", "1", "--validate-budget-mb", "4000")
    try:
        (worker,) = workers_of(srv)
        base = status_kib(worker, "VmRSS")
        answer: list[requests.Response] = []
        sender = threading.Thread(target=lambda: answer.append(validate(srv.url, oversized)))
        sender.start()
        deadline = time.monotonic() + 60
        while status_kib(worker, "VmRSS") < base + 50 * 1024:  # it is parsing the upload
            assert time.monotonic() < deadline and sender.is_alive(), "the worker never got the upload"
            time.sleep(0.01)
        os.kill(worker, signal.SIGKILL)
        sender.join(timeout=60)
        body = answer[0].json()
        assert answer[0].status_code == 200 and body["valid"] is False
        assert is_over_budget(body, 4000) and "killed by SIGKILL" in body["result"], body
        (replacement,) = workers_of(srv)
        assert replacement != worker
        assert validate(srv.url, submission_bytes(answers)).json()["valid"] is True
        assert logged(srv, f"validation worker {worker} (killed by SIGKILL)")
    finally:
        assert srv.stop() == 0, srv.stderr()


def test_a_worker_that_died_idle_costs_no_request(
    data_dir: Path, answers: pd.DataFrame, tmp_path: Path
) -> None:
    srv = start_server(data_dir, tmp_path / "srv", "--validate-workers", "1")
    try:
        (worker,) = workers_of(srv)
        os.kill(worker, signal.SIGKILL)  # e.g. the OOM killer took it between two requests
        time.sleep(0.2)
        assert validate(srv.url, submission_bytes(answers)).json() == {"result": VALID_MESSAGE, "valid": True}
        assert logged(
            srv, f"validation worker {worker} was killed by SIGKILL before taking a request: replaced"
        )
        assert "answered invalid" not in srv.stderr()
    finally:
        assert srv.stop() == 0, srv.stderr()


def test_concurrent_uploads_of_mixed_sizes_each_get_their_own_verdict(
    data_dir: Path, answers: pd.DataFrame, tmp_path: Path, oversized: bytes
) -> None:
    srv = start_server(data_dir, tmp_path / "srv", "--validate-budget-mb", str(BUDGET_MB))
    defects = ["wrong_ids", "missing_rows", "extra_rows", "missing_column", "missing_labels"]
    cases: list[tuple[bytes, str]] = []
    for i in range(24):
        if i % 6 == 5:
            cases.append((oversized, "over"))
        elif i % 2 == 0:
            cases.append(
                (submission_bytes(answers.assign(Transported=answers.index % (i + 2) == 0)), "valid")
            )
        else:
            cases.append((submission_bytes(defective(answers, defects[i % len(defects)], i)), "invalid"))
    results: list[dict | None] = [None] * len(cases)
    barrier = threading.Barrier(len(cases))

    def send(i: int) -> None:
        barrier.wait()
        response = validate(srv.url, cases[i][0], name=f"sub{i}.csv")
        results[i] = response.json() if response.status_code == 200 else {"status": response.status_code}

    try:
        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(cases))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        for i, ((_, kind), body) in enumerate(zip(cases, results, strict=True)):
            assert body is not None and "status" not in body, (i, body)
            if kind == "valid":
                assert body == {"result": VALID_MESSAGE, "valid": True}, (i, body)
            else:
                assert body["valid"] is False and is_over_budget(body) is (kind == "over"), (i, kind, body)
        assert srv.proc.poll() is None
        assert srv.stderr().count("answered invalid (budget") == sum(k == "over" for _, k in cases)
        time.sleep(0.2)
        assert srv.upload_files() == []
    finally:
        assert srv.stop() == 0, srv.stderr()


def test_the_record_counts_only_authenticated_requests_and_their_bytes_while_in_flight(
    data_dir: Path, tmp_path: Path, answers: pd.DataFrame
) -> None:
    inflight = tmp_path / "inflight.json"
    srv = start_server(
        data_dir, tmp_path / "srv", "--inflight-file", str(inflight), env={"GRADING_SERVER_TOKEN": "tok"}
    )
    try:
        assert read_inflight(inflight) == InFlight(srv.proc.pid, 0, 0, 0, 0, read_inflight(inflight).updated)  # type: ignore[union-attr]
        assert validate(srv.url, b"x").status_code == 401  # not the agent's: not counted
        content = submission_bytes(answers)
        preamble = b'--b\r\nContent-Disposition: form-data; name="file"; filename="s.csv"\r\n\r\n'
        body = preamble + content + b"\r\n--b--\r\n"
        host, port = srv.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                b"POST /validate HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Grading-Token: tok\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body[:1000]
            )
            deadline = time.monotonic() + 10
            while (record := read_inflight(inflight)) is None or record.in_flight == 0:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert (record.in_flight, record.in_flight_bytes, record.requests) == (1, len(body), 1)
            sock.sendall(body[1000:])
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200") and VALID_MESSAGE.encode() in reply
        record = read_inflight(inflight)
        assert record is not None and (record.in_flight, record.in_flight_bytes, record.requests) == (0, 0, 1)
    finally:
        assert srv.stop() == 0, srv.stderr()


# -- the pieces, without a server -----------------------------------------------------------------
def test_budget_from_the_answers_with_a_floor_within_the_jobs_memory() -> None:
    assert choose_budget(0, None, 1024, 0, 0, 0).workers == 0
    floor = choose_budget(2, None, None, 10 * MIB, 5 * MIB, 90 * MIB)
    assert floor.bytes == BUDGET_FLOOR and "floor" in floor.why and not floor.warning
    big = choose_budget(2, None, None, 300 * MIB, 500 * MIB, 400 * MIB)
    assert big.bytes == 4 * 500 * MIB and "a sample validation took" in big.why
    unmeasured = choose_budget(2, None, None, 300 * MIB, 0, 400 * MIB)
    assert unmeasured.bytes == 4 * 300 * MIB and "the answers took" in unmeasured.why
    assert choose_budget(2, 700, 1024, 300 * MIB, 500 * MIB, 400 * MIB).bytes == 700 * MIB  # as asked
    # the job's memory caps it: its share of what the server leaves, and a warning when that is short
    capped = choose_budget(2, None, 4096, 300 * MIB, 500 * MIB, 400 * MIB)
    assert capped.bytes == (4096 * MIB - 400 * MIB - 64 * MIB) // 2 and not capped.warning
    short = choose_budget(2, None, 1024, 300 * MIB, 500 * MIB, 400 * MIB)
    assert short.bytes < 2 * 500 * MIB and "give the grading job more memory (--mem)" in short.warning
    roomy = choose_budget(2, None, 65536, 10 * MIB, 5 * MIB, 90 * MIB)
    assert roomy.bytes == BUDGET_FLOOR and "job memory 65536 MiB" in roomy.describe()


def test_the_record_reader_trusts_only_a_small_regular_file_of_the_right_shape(tmp_path: Path) -> None:
    path = tmp_path / "inflight.json"
    recorder = InFlightRecorder(path)
    handle = recorder.begin(100)
    recorder.sized(handle, 42)
    record = read_inflight(path)
    assert record is not None and (record.in_flight, record.in_flight_bytes, record.requests) == (1, 42, 1)
    recorder.end(handle)
    assert read_inflight(path).in_flight == 0  # type: ignore[union-attr]
    assert [p.name for p in tmp_path.iterdir()] == ["inflight.json"], "no temporary file left"
    good = path.read_text()
    link = tmp_path / "link.json"
    link.symlink_to(path)
    assert read_inflight(link) is None
    for text in ("", "[]", good.replace('"in_flight": 0', '"in_flight": "1"'), good + " " * 5000):
        path.write_text(text)
        assert read_inflight(path) is None, text[:60]
    path.write_text(json.dumps({**json.loads(good), "in_flight": True}))
    assert read_inflight(path) is None
    assert read_inflight(tmp_path / "missing.json") is None
