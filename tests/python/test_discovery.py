"""URL discovery (`resolve_spec`, the code of `run start`): real files, real processes; the Slurm
cases submit real jobs to the local cluster."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlebench_hpc.cli import main
from mlebench_hpc.errors import HelperError
from mlebench_hpc.llm.endpoint import llm_server
from mlebench_hpc.net import normalize_url
from mlebench_hpc.run.discovery import (
    SCAN_BYTES,
    find_url,
    grading_server,
    resolve_auto,
    resolve_spec,
    server_url_in_file,
)
from mlebench_hpc.slurm.query import JobInfo, parse_scontrol_oneline


def discover(spec: str, competition: str, timeout: float = 600.0, state_dir: Path | None = None) -> str:
    return resolve_spec(spec, competition, timeout, state_dir)


def refused(spec: str, competition: str, timeout: float = 600.0, state_dir: Path | None = None) -> str:
    """The one-line message resolve_spec refuses SPEC with."""
    with pytest.raises(HelperError) as exc:
        discover(spec, competition, timeout, state_dir)
    assert exc.value.exit_code == 2 and "\n" not in exc.value.message
    return exc.value.message


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


# --------------------------------------------------------------------------- output files
REAL = "GRADING_SERVER_URL=http://node1:40001\n"
# What a client can make the job output hold: its request path in the server's log, and in a hetjob
# the agent's own stdout (it starts after discovery, so after the server's line).
PLANTED = (
    "2026-12-02T10:00:05 grading-server GET /GRADING_SERVER_URL=http://evil:1 404 bytes=0 ms=0.2 verdict=-\n"
    "GRADING_SERVER_URL=http://evil:2\n"
)


def naive_rule(path: Path, mark: str = "GRADING_SERVER_URL=") -> str | None:
    """The control: the naive rule, the last URL after MARK anywhere in the file."""
    found = re.findall(re.escape(mark) + r"(https?://[^\s'\"<>]+)", path.read_text(errors="replace"))
    return found[-1] if found else None


def test_the_servers_own_line_counts_not_what_clients_planted_after_it(tmp_path: Path) -> None:
    out = write(tmp_path / "job.out", "[mlebench-hpc 10:00:00] grading server for c\n" + REAL + PLANTED)
    assert server_url_in_file(out) == "http://node1:40001"
    assert naive_rule(out) == "http://evil:2"  # control: the naive rule takes the agent's line


def test_only_a_whole_line_of_mark_and_url_counts(tmp_path: Path) -> None:
    out = write(
        tmp_path / "job.out",
        "[12:00:01] GRADING_SERVER_URL=http://prefixed:1\nGRADING_SERVER_URL=http://suffixed:2 extra\n"
        " GRADING_SERVER_URL=http://indented:3\nGRADING_SERVER_URL=http://cr:4\r\n" + REAL,
    )
    assert server_url_in_file(out) == "http://node1:40001"


def test_partial_line_is_ignored(tmp_path: Path) -> None:
    only_partial = write(tmp_path / "p.out", "GRADING_SERVER_URL=http://node1:40001")
    assert server_url_in_file(only_partial) is None
    out = write(tmp_path / "job.out", REAL + "GRADING_SERVER_URL=http://node9:4")
    assert server_url_in_file(out) == "http://node1:40001"


def test_read_forwards_and_bounded(tmp_path: Path) -> None:
    noise = "".join(f"[mlebench-hpc] start-up line {i}\n" for i in range(20000))  # ~600 KB before it
    out = write(tmp_path / "job.out", noise + REAL + PLANTED * 1000)
    assert server_url_in_file(out) == "http://node1:40001"
    # a line ending exactly at the bound is read; one that crosses it is not (never read further)
    pad = SCAN_BYTES - len(REAL)
    out = write(tmp_path / "edge.out", "x" * (pad - 1) + "\n" + REAL)
    assert out.stat().st_size == SCAN_BYTES and server_url_in_file(out) == "http://node1:40001"
    out = write(tmp_path / "over.out", "x" * pad + "\n" + REAL)
    assert server_url_in_file(out) is None


def test_no_url_and_garbage(tmp_path: Path) -> None:
    assert server_url_in_file(tmp_path / "missing.out") is None
    out = tmp_path / "bin.out"
    out.write_bytes(b"\x00\xff\xfe GRADING_SERVER_URL=ftp://x:1\nGRADING_SERVER_URL=http://\xff:1\n")
    assert server_url_in_file(out) is None
    out.write_bytes(b"\x00\xff\xfe\nGRADING_SERVER_URL=http://h:99999\nGRADING_SERVER_URL=http://ok:5\n\xff")
    assert server_url_in_file(out) == "http://ok:5"


def test_llm_mark_the_jobs_echo_not_a_request_log(tmp_path: Path) -> None:
    out = write(
        tmp_path / "llm.out",
        "INFO: loading the model\nLLM_SERVER_URL=http://gpu1:8000/v1\n"
        'INFO: 10.0.0.9:5 - "GET /LLM_SERVER_URL=http://evil:1/v1 HTTP/1.1" 404 Not Found\n'
        "LLM_SERVER_URL=http://evil:2/v1\n",
    )
    assert server_url_in_file(out, "LLM_SERVER_URL=") == "http://gpu1:8000/v1"
    assert naive_rule(out, "LLM_SERVER_URL=") == "http://evil:2/v1"


def _job(tmp_path: Path, restarts: str = "0") -> JobInfo:
    fields = {"JobState": "RUNNING", "StdOut": str(tmp_path / "job.out"), "Restarts": restarts}
    return JobInfo("77", fields)


def test_find_url_file_first_then_the_servers_line(tmp_path: Path) -> None:
    write(tmp_path / "job.out", REAL + PLANTED)
    state = tmp_path / "state"
    # the URL file cannot be read (missing): the server's own line, never the planted ones
    assert find_url(_job(tmp_path), "77", grading_server("c", state)) == "http://node1:40001"
    assert find_url(_job(tmp_path), "77", grading_server("c", None)) == "http://node1:40001"
    (state / "c_77").mkdir(parents=True)
    (state / "c_77" / "url").write_text("http://from-file:5555\n")
    assert find_url(_job(tmp_path), "77", grading_server("c", state)) == "http://from-file:5555"


def test_restarted_job_only_the_url_file_counts(tmp_path: Path) -> None:
    # a requeued job appending to its output: its first line is an earlier start's
    write(
        tmp_path / "job.out",
        "GRADING_SERVER_URL=http://nodeA:41000\nrequeued\nGRADING_SERVER_URL=http://nodeB:42000\n",
    )
    state = tmp_path / "state"
    assert find_url(_job(tmp_path, "1"), "77", grading_server("c", state)) is None
    (state / "c_77").mkdir(parents=True)
    (state / "c_77" / "url").write_text("http://nodeB:42000\n")
    assert find_url(_job(tmp_path, "1"), "77", grading_server("c", state)) == "http://nodeB:42000"


def test_llm_server_url_file_then_its_own_line_never_an_earlier_starts(tmp_path: Path) -> None:
    """The same rules for an LLM server job: its URL file (state/llm/<job>/url), else the first
    LLM_SERVER_URL= line; a URL file older than the job's start is an earlier start's."""
    write(tmp_path / "job.out", "LLM_SERVER_URL=http://gpu1:8000/v1\nLLM_SERVER_URL=http://evil:2/v1\n")
    state = tmp_path / "state"
    started = time.time() - 5
    fields = {"JobState": "RUNNING", "StdOut": str(tmp_path / "job.out"), "Restarts": "0"}
    fields["StartTime"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started))
    job = JobInfo("77", fields)
    assert find_url(job, "77", llm_server(state)) == "http://gpu1:8000/v1"
    url = state / "llm" / "77" / "url"
    url.parent.mkdir(parents=True)
    url.write_text("http://gpu2:8001/v1\n")
    assert find_url(job, "77", llm_server(state)) == "http://gpu2:8001/v1"
    os.utime(url, (started - 3600, started - 3600))  # written by an earlier start of the job
    assert find_url(job, "77", llm_server(state)) == "http://gpu1:8000/v1"
    # the grading server's rules do not read the LLM's file, nor its mark
    assert find_url(job, "77", grading_server("c", state)) is None


def test_real_server_log_holds_no_line_a_client_could_make_count(tmp_path: Path) -> None:
    """The grading server as Slurm runs it (stdout and stderr into one file), then requests that try
    to plant a marked line: as a path, percent-encoded newlines and CRs in the path, and as the
    method. Its own line is still the one found, and no line of the log starts with the mark."""
    from test_server import SCRIPT, make_spaceship

    data = tmp_path / "data"
    make_spaceship(data, n_rows=50)
    log = tmp_path / "job.out"
    url_file = tmp_path / "url"
    with log.open("wb") as f:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--competition-id", "spaceship-titanic", "--data-dir", str(data),
             "--host", "127.0.0.1", "--port", "0", "--url-file", str(url_file)],
            stdout=f, stderr=f,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not url_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        url = url_file.read_text().strip()
        host, port = url.removeprefix("http://").rsplit(":", 1)
        for request in (
            b"GET /GRADING_SERVER_URL=http://evil:1 HTTP/1.1\r\n",
            b"GET /%0AGRADING_SERVER_URL=http://evil:2 HTTP/1.1\r\n",
            b"GET /x%0D%0AGRADING_SERVER_URL=http://evil:3%0A HTTP/1.1\r\n",
            b"GRADING_SERVER_URL=http://evil:4 / HTTP/1.1\r\n",
            b"GET\rGRADING_SERVER_URL=http://evil:5 / HTTP/1.1\r\n",
            b"GET /\x1b[2K\x1b[1A HTTP/1.1\r\n",
        ):
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(request + b"Host: x\r\nConnection: close\r\n\r\n")
                while sock.recv(65536):
                    pass
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    text = log.read_bytes()
    assert text.count(b"evil:") >= 3, text.decode(
        errors="replace"
    )  # the paths were logged (cheroot refuses odd methods)
    assert server_url_in_file(log) == url
    assert "evil" in (naive_rule(log) or "")  # control: the naive rule takes a client's line
    lines = text.split(b"\n")
    assert not [ln for ln in lines if ln.startswith(b"GRADING_SERVER_URL=") and b"evil" in ln]
    assert b"\r" not in text and b"\x1b" not in text  # nothing a client sent redraws the log


def test_normalize_url() -> None:
    assert normalize_url("http://h:1/") == "http://h:1"
    assert normalize_url(" http://10.0.0.1:5000 ") == "http://10.0.0.1:5000"
    for bad in ("h:1", "ftp://h:1", "http://:1", "http://h:99999", "http://h:0", "http://h:1/?x=1"):
        with pytest.raises(ValueError):
            normalize_url(bad)


# --------------------------------------------------------------------------- no Slurm
def test_plain_url_is_validated() -> None:
    assert discover("http://node1:40001/", "c") == "http://node1:40001"
    assert "auto:JOBID" in refused("node1:40001", "c")


def test_auto_without_slurm_fails_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol on this PATH
    assert "scontrol" in refused("auto:123", "c")


def test_dead_commands_are_gone() -> None:
    """`run start` does discovery and readiness: no separate command for either."""
    for name in ("discover-url", "wait-ready", "check-config"):
        res = CliRunner().invoke(main, [name, "--help"])
        assert res.exit_code == 2 and "No such command" in res.output, res.output
    for name in ("run", "overlay", "config", "llm-ready"):  # control: live commands answer
        res = CliRunner().invoke(main, [name, "--help"])
        assert res.exit_code == 0, res.output


def test_scontrol_line_parsing() -> None:
    # a real `scontrol show job -o` line (Slurm 22.05), values with spaces and '='
    line = (
        "JobId=42 HetJobId=42 HetJobOffset=0 JobName=mlebench-grade UserId=root(0) GroupId=root(0) "
        "Priority=1 JobState=RUNNING Reason=None Dependency=(null) Comment=competition=spaceship-titanic "
        "StartTime=2026-11-28T16:00:00 EndTime=Unknown Command=/w/scripts_hpc/slurm_grading_server.sh "
        "spaceship-titanic WorkDir=/w StdOut=/w/mlebench-grade-42.out TresPerNode=gres:gpu:1"
    )
    rec = parse_scontrol_oneline(line)
    assert rec["Comment"] == "competition=spaceship-titanic"
    assert rec["Command"] == "/w/scripts_hpc/slurm_grading_server.sh spaceship-titanic"
    assert rec["StdOut"] == "/w/mlebench-grade-42.out"
    assert rec["TresPerNode"] == "gres:gpu:1"
    assert rec["JobState"] == "RUNNING"


# --------------------------------------------------------------------------- real Slurm
def _cluster_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


slurm = pytest.mark.skipif(not _cluster_up(), reason="no local Slurm cluster (make cluster-up)")


@pytest.fixture
def jobs():
    submitted: list[str] = []

    def submit(script: str, *opts: str, cwd: Path, name: str = "") -> str:
        path = cwd / (name or f"job{len(submitted)}.sh")
        path.write_text("#!/bin/bash\n" + script)
        res = subprocess.run(
            ["sbatch", "--parsable", *opts, str(path)],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=60,
            check=True,
        )
        job_id = res.stdout.strip().split(";")[0]
        submitted.append(job_id)
        return job_id

    yield submit
    for job_id in submitted:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=60)


def _wait_state(job_id: str, states: set[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        res = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
        state = parse_scontrol_oneline(res.stdout).get("JobState", "")
        if state in states:
            return state
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} stuck in {state}")


# The server's line, then what clients could plant after it (a logged path, an agent's own line).
SERVER_LIKE = (
    "echo starting; echo GRADING_SERVER_URL=http://$(hostname -s):4242; "
    "echo 'GET /GRADING_SERVER_URL=http://evil:1 404'; echo GRADING_SERVER_URL=http://evil:2; "
    "printf 'GRADING_SERVER_URL=http://partial:1'; sleep 120\n"
)


@pytest.mark.slurm
@slurm
def test_slurm_running_job_url_from_output(tmp_path: Path, jobs) -> None:
    job = jobs(
        SERVER_LIKE,
        "--job-name=mlebench-grade",
        "--comment=competition=comp-a",
        "--output=%x-%j.out",
        cwd=tmp_path,
    )
    assert discover(f"auto:{job}", "comp-a", 60, tmp_path / "state").endswith(":4242")
    assert (tmp_path / f"mlebench-grade-{job}.out").is_file()


@pytest.mark.slurm
@slurm
def test_slurm_url_file_takes_precedence(tmp_path: Path, jobs) -> None:
    job = jobs(SERVER_LIKE, "--job-name=mlebench-grade", "--comment=competition=comp-a", cwd=tmp_path)
    _wait_state(job, {"RUNNING"})
    url_dir = tmp_path / "state" / f"comp-a_{job}"
    url_dir.mkdir(parents=True)
    (url_dir / "url").write_text("http://from-file:5555\n")
    assert discover(f"auto:{job}", "comp-a", state_dir=tmp_path / "state") == "http://from-file:5555"


@pytest.mark.slurm
@slurm
def test_slurm_other_competition(tmp_path: Path, jobs) -> None:
    job = jobs(SERVER_LIKE, "--job-name=mlebench-grade", "--comment=competition=comp-b", cwd=tmp_path)
    msg = refused(f"auto:{job}", "comp-a", state_dir=tmp_path / "state")
    assert "comp-b" in msg and "comp-a" in msg
    # the state directory's name alone also tells (a job submitted without the comment)
    job2 = jobs(SERVER_LIKE, "--job-name=mlebench-grade", cwd=tmp_path)
    (tmp_path / "state" / f"comp-c_{job2}").mkdir(parents=True)
    assert "comp-c" in refused(f"auto:{job2}", "comp-a", state_dir=tmp_path / "state")


@pytest.mark.slurm
@slurm
def test_slurm_nonexistent_job() -> None:
    msg = refused("auto:987654321", "comp-a")
    assert "not found" in msg and "squeue" in msg


@pytest.mark.slurm
@slurm
def test_slurm_finished_job(tmp_path: Path, jobs) -> None:
    job = jobs("echo GRADING_SERVER_URL=http://gone:1\n", "--comment=competition=comp-a", cwd=tmp_path)
    _wait_state(job, {"COMPLETED"})
    t0 = time.monotonic()
    msg = refused(f"auto:{job}", "comp-a", 60)
    assert time.monotonic() - t0 < 20
    assert "COMPLETED" in msg and "slurm_grading_server.sh comp-a" in msg


@pytest.mark.slurm
@slurm
def test_slurm_pending_job_is_waited_for(tmp_path: Path, jobs) -> None:
    job = jobs(SERVER_LIKE, "--begin=now+4", "--comment=competition=comp-a", cwd=tmp_path)
    assert _wait_state(job, {"PENDING"}, timeout=10) == "PENDING"
    assert discover(f"auto:{job}", "comp-a", 90).endswith(":4242")
    # and a timeout shorter than the wait gives up with the state in the message
    job2 = jobs(SERVER_LIKE, "--begin=now+600", "--comment=competition=comp-a", cwd=tmp_path)
    t0 = time.monotonic()
    msg = refused(f"auto:{job2}", "comp-a", 3)
    assert 2.5 < time.monotonic() - t0 < 20
    assert "PENDING" in msg and "gave up after 3s" in msg


@pytest.mark.slurm
@slurm
def test_slurm_llm_server_job_by_the_same_loop(tmp_path: Path, jobs) -> None:
    """resolve_auto for an LLM server job: its own line, not the planted ones; a grading server's job
    id is refused at once (control: the same job is the grading kind's answer)."""
    own, planted = "LLM_SERVER_URL=http://$(hostname -s):8000/v1", "LLM_SERVER_URL=http://evil:1/v1"
    llm = jobs(f"echo {own}; echo {planted}; sleep 120\n", cwd=tmp_path)
    assert resolve_auto(llm, llm_server(tmp_path / "state"), 60).endswith(":8000/v1")
    grading_dir = tmp_path / "scripts_hpc"
    grading_dir.mkdir()
    job = jobs(
        SERVER_LIKE, "--comment=competition=comp-a", cwd=tmp_path, name="scripts_hpc/slurm_grading_server.sh"
    )
    with pytest.raises(HelperError, match="is a grading server, not an LLM server"):
        resolve_auto(job, llm_server(tmp_path / "state"), 60)
    assert discover(f"auto:{job}", "comp-a", 60).endswith(":4242")
