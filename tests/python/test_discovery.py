"""discover-url: real files, real processes; the Slurm cases submit real jobs to the local cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlebench_hpc.discovery import last_url_in_file, normalize_url
from mlebench_hpc.slurm_query import parse_scontrol_oneline

RUNNER = "from mlebench_hpc.discovery import discover_url_cmd as c; c(prog_name='mlebench-hpc discover-url')"


def discover(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


# --------------------------------------------------------------------------- output files
def test_several_urls_takes_the_last_complete_line(tmp_path: Path) -> None:
    out = write(
        tmp_path / "job.out",
        "[server] starting\nGRADING_SERVER_URL=http://node1:40001\nsome log\n"
        "[12:00:01] GRADING_SERVER_URL=http://node2:40002\nPOST /validate 200\n",
    )
    assert last_url_in_file(out) == "http://node2:40002"


def test_partial_last_line_is_ignored(tmp_path: Path) -> None:
    out = write(
        tmp_path / "job.out", "GRADING_SERVER_URL=http://node1:40001\nGRADING_SERVER_URL=http://node9:4"
    )
    assert last_url_in_file(out) == "http://node1:40001"
    only_partial = write(tmp_path / "p.out", "GRADING_SERVER_URL=http://node1:40001")
    assert last_url_in_file(only_partial) is None


def test_restarted_job_prints_two_urls(tmp_path: Path) -> None:
    # a requeued job appending to its output: the second start's URL wins
    out = write(
        tmp_path / "job.out",
        "GRADING_SERVER_URL=http://nodeA:41000\nslurmstepd: JOB 7 CANCELLED DUE TO PREEMPTION\n"
        "requeued\nGRADING_SERVER_URL=http://nodeB:42000\n",
    )
    assert last_url_in_file(out) == "http://nodeB:42000"


def test_large_log_and_lines_across_block_boundaries(tmp_path: Path) -> None:
    noise = "".join(f"POST /validate 200 request {i}\n" for i in range(20000))  # ~600 KB
    out = write(tmp_path / "job.out", "GRADING_SERVER_URL=http://early:1234\n" + noise)
    assert last_url_in_file(out) == "http://early:1234"
    for pad in range(0, 70):  # the marked line straddles the 64 KiB block edge somewhere
        out = write(tmp_path / "edge.out", "x" * (65536 - 40 + pad) + "\nGRADING_SERVER_URL=http://edge:9\n")
        assert last_url_in_file(out) == "http://edge:9", pad


def test_no_url_and_garbage(tmp_path: Path) -> None:
    assert last_url_in_file(tmp_path / "missing.out") is None
    out = tmp_path / "bin.out"
    out.write_bytes(b"\x00\xff\xfe GRADING_SERVER_URL=ftp://x:1\nGRADING_SERVER_URL=http://\xff:1\n")
    assert last_url_in_file(out) is None
    out.write_bytes(b"\x00\xff\xfe\nGRADING_SERVER_URL=http://ok:5\n\xff\xfe")
    assert last_url_in_file(out) == "http://ok:5"


def test_normalize_url() -> None:
    assert normalize_url("http://h:1/") == "http://h:1"
    assert normalize_url(" http://10.0.0.1:5000 ") == "http://10.0.0.1:5000"
    for bad in ("h:1", "ftp://h:1", "http://:1", "http://h:99999", "http://h:0", "http://h:1/?x=1"):
        with pytest.raises(ValueError):
            normalize_url(bad)


# --------------------------------------------------------------------------- CLI, no Slurm
def test_cli_plain_url_is_validated() -> None:
    ok = discover("http://node1:40001/", "--competition", "c")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "http://node1:40001\n"
    bad = discover("node1:40001", "--competition", "c")
    assert bad.returncode == 2
    assert "auto:JOBID" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_cli_auto_without_slurm_fails_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no scontrol on this PATH
    res = discover("auto:123", "--competition", "c", env=env)
    assert res.returncode == 2
    assert res.stdout == ""
    assert "scontrol" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_registered_in_cli() -> None:
    exe = Path(sys.executable).with_name("mlebench-hpc")
    if not exe.exists():
        pytest.skip("mlebench-hpc entry point not installed in this environment")
    for name in ("discover-url", "overlay", "wait-ready", "run-metadata"):
        res = subprocess.run([str(exe), name, "--help"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr[-500:]


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

    def submit(script: str, *opts: str, cwd: Path) -> str:
        path = cwd / f"job{len(submitted)}.sh"
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


SERVER_LIKE = (
    "echo starting; echo GRADING_SERVER_URL=http://old-start:1111; "
    "echo GRADING_SERVER_URL=http://$(hostname -s):4242; "
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
    res = discover(
        f"auto:{job}", "--competition", "comp-a", "--timeout", "60", "--state-dir", str(tmp_path / "state")
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith(":4242")
    assert (tmp_path / f"mlebench-grade-{job}.out").is_file()


@pytest.mark.slurm
@slurm
def test_slurm_url_file_takes_precedence(tmp_path: Path, jobs) -> None:
    job = jobs(SERVER_LIKE, "--job-name=mlebench-grade", "--comment=competition=comp-a", cwd=tmp_path)
    _wait_state(job, {"RUNNING"})
    url_dir = tmp_path / "state" / f"comp-a_{job}"
    url_dir.mkdir(parents=True)
    (url_dir / "url").write_text("http://from-file:5555\n")
    res = discover(f"auto:{job}", "--competition", "comp-a", "--state-dir", str(tmp_path / "state"))
    assert res.returncode == 0, res.stderr
    assert res.stdout == "http://from-file:5555\n"


@pytest.mark.slurm
@slurm
def test_slurm_other_competition(tmp_path: Path, jobs) -> None:
    job = jobs(SERVER_LIKE, "--job-name=mlebench-grade", "--comment=competition=comp-b", cwd=tmp_path)
    res = discover(f"auto:{job}", "--competition", "comp-a", "--state-dir", str(tmp_path / "state"))
    assert res.returncode == 2
    assert "comp-b" in res.stderr and "comp-a" in res.stderr
    # the state directory's name alone also tells (a job submitted without the comment)
    job2 = jobs(SERVER_LIKE, "--job-name=mlebench-grade", cwd=tmp_path)
    (tmp_path / "state" / f"comp-c_{job2}").mkdir(parents=True)
    res = discover(f"auto:{job2}", "--competition", "comp-a", "--state-dir", str(tmp_path / "state"))
    assert res.returncode == 2
    assert "comp-c" in res.stderr


@pytest.mark.slurm
@slurm
def test_slurm_nonexistent_job() -> None:
    res = discover("auto:987654321", "--competition", "comp-a")
    assert res.returncode == 2
    assert "not found" in res.stderr and "squeue" in res.stderr


@pytest.mark.slurm
@slurm
def test_slurm_finished_job(tmp_path: Path, jobs) -> None:
    job = jobs("echo GRADING_SERVER_URL=http://gone:1\n", "--comment=competition=comp-a", cwd=tmp_path)
    _wait_state(job, {"COMPLETED"})
    t0 = time.monotonic()
    res = discover(f"auto:{job}", "--competition", "comp-a", "--timeout", "60")
    assert time.monotonic() - t0 < 20
    assert res.returncode == 2
    assert "COMPLETED" in res.stderr and "slurm_grading_server.sh comp-a" in res.stderr


@pytest.mark.slurm
@slurm
def test_slurm_pending_job_is_waited_for(tmp_path: Path, jobs) -> None:
    job = jobs(SERVER_LIKE, "--begin=now+4", "--comment=competition=comp-a", cwd=tmp_path)
    assert _wait_state(job, {"PENDING"}, timeout=10) == "PENDING"
    res = discover(f"auto:{job}", "--competition", "comp-a", "--timeout", "90")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith(":4242")
    # and a timeout shorter than the wait gives up with the state in the message
    job2 = jobs(SERVER_LIKE, "--begin=now+600", "--comment=competition=comp-a", cwd=tmp_path)
    t0 = time.monotonic()
    res = discover(f"auto:{job2}", "--competition", "comp-a", "--timeout", "3")
    assert 2.5 < time.monotonic() - t0 < 20
    assert res.returncode == 2 and "PENDING" in res.stderr
