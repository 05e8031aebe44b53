"""`mlebench-hpc run start|check|stop|finish|read|server-died`: the agent job's data, one Python
start per phase (the job itself is exercised on the real cluster by the bats tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mlebench-hpc"), "run", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def meta(run: Path) -> dict:
    return json.loads((run / "metadata.json").read_text())


def agent_argv(text: str) -> list[str]:
    """MH_AGENT_ARGV, the array `run start` prints, as bash's eval sets it."""
    script = text + '\nprintf "%s\\0" "${MH_AGENT_ARGV[@]}"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    return out.split("\0")[:-1]


def shell_values(text: str) -> dict[str, str]:
    """The assignments `run start`/`run read` print, as bash's eval would set them."""
    script = text + '\nfor v in ${!MH_@}; do printf \'%s=%s\\0\' "$v" "${!v}"; done'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if item)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    r = tmp_path / "runs" / "g" / "demo-diabetes_42"
    for d in ("submission", "logs", "code"):
        (r / d).mkdir(parents=True)
    (r / "metadata.json").write_text(json.dumps({"status": "running", "competition_id": "demo-diabetes"}))
    return r


def test_check_records_a_passed_integrity_check_with_flags_binds_and_budget(
    run: Path, tmp_path: Path
) -> None:
    out, err = tmp_path / "out", tmp_path / "err"
    out.write_text('{"ok": true, "paths": []}\n')
    err.write_text("a warning\n")
    proc = cli(
        "check", str(run), "--budget-secs", "3600", "--output", str(out), "--stderr", str(err),
        "--apptainer-version", "apptainer version 1.4.5", "--url", "http://n:1",
        "--flag=--contain", "--flag=--workdir", "--flag=/s", "--bind=/d:/home/data:ro",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    m = meta(run)
    assert m["agent_budget_secs"] == 3600 and m["apptainer_flags"] == ["--contain", "--workdir", "/s"]
    rec = m["integrity"]
    assert (
        rec["ok"] is True
        and rec["binds"] == ["/d:/home/data:ro"]
        and rec["grading_server_url"] == "http://n:1"
    )
    assert rec["stderr_tail"] == "a warning\n" and m["apptainer_version"] == "apptainer version 1.4.5"
    assert m["status"] == "running"  # untouched keys stay


@pytest.mark.parametrize(
    "output",
    [
        '{"ok": false, "canary_visible": true}',
        "garbage",
        "",
        # a second line: something besides the checker printed (a forged record first or last)
        '{"ok": true, "checker": "forged"}\n{"ok": false, "canary_visible": true}\n',
        '{"ok": false, "canary_visible": true}\n{"ok": true, "checker": "forged"}\n',
    ],
)
def test_check_fails_on_a_failed_or_unreadable_check(run: Path, tmp_path: Path, output: str) -> None:
    out = tmp_path / "out"
    out.write_text(output)
    proc = cli("check", str(run), "--budget-secs", "10", "--output", str(out), "--rc", "3")
    assert proc.returncode == 1
    rec = meta(run)["integrity"]
    assert rec["ok"] is False
    if output != '{"ok": false, "canary_visible": true}':
        assert "checker exit 3, unreadable output" in rec["error"]
        assert "forged" not in json.dumps(rec)


def test_check_without_a_container_records_no_isolation(run: Path) -> None:
    proc = cli("check", str(run), "--budget-secs", "10", "--no-container")
    assert proc.returncode == 0, proc.stderr
    assert meta(run)["integrity"] == {"ok": False, "runtime": "none", "reason": "no container: no isolation"}


def test_stop_records_without_collecting_and_finish_collects(run: Path) -> None:
    (run / "submission" / "submission.csv").write_text("id,y\n1,2\n")
    proc = cli("stop", str(run), "--status", "cancelled", "--exit-code", "143", "--agent-secs-used", "12")
    assert proc.returncode == 0, proc.stderr
    m = meta(run)
    assert (m["status"], m["exit_code"], m["agent_secs_used"]) == ("cancelled", 143, 12) and m["end"]
    assert "submission_exists" not in m
    proc = cli("finish", str(run))
    assert proc.returncode == 0, proc.stderr
    m = meta(run)
    assert m["status"] == "cancelled" and m["submission_exists"] is True
    assert (run / "collected" / "submission.csv").read_text() == "id,y\n1,2\n"


def test_finish_never_follows_the_agents_link(run: Path, tmp_path: Path) -> None:
    secret = tmp_path / "answers.csv"
    secret.write_text("id,y\n1,SECRET\n")
    (run / "submission" / "submission.csv").symlink_to(secret)
    proc = cli("finish", str(run), "--status", "finished", "--exit-code", "0")
    assert proc.returncode == 0, proc.stderr
    m = meta(run)
    assert m["status"] == "finished" and m["submission_exists"] is False
    assert "SECRET" not in (run / "metadata.json").read_text()


def test_a_later_attempt_owns_the_run(run: Path) -> None:
    m = meta(run)
    (run / "metadata.json").write_text(json.dumps({**m, "slurm_restart_count": 2}))
    proc = cli("finish", str(run), "--status", "failed", "--exit-code", "1", "--attempt", "1")
    assert proc.returncode == 0 and "later attempt" in proc.stderr
    assert meta(run)["status"] == "running"


def test_unknown_status_is_refused(run: Path) -> None:
    proc = cli("stop", str(run), "--status", "done")
    assert proc.returncode == 2 and "done" in proc.stderr


def test_read_prints_quoted_assignments(run: Path) -> None:
    m = meta(run)
    (run / "metadata.json").write_text(json.dumps({**m, "submission_exists": True, "note": "a'b $(x)"}))
    proc = cli("read", str(run), "status", "submission_exists", "note", "absent")
    assert proc.returncode == 0, proc.stderr
    got = shell_values(proc.stdout)
    assert got == {
        "MH_META_status": "running",
        "MH_META_submission_exists": "true",
        "MH_META_note": "a'b $(x)",
        "MH_META_absent": "",
    }
    assert cli("read", str(run), "bad key").returncode == 2
    assert shell_values(cli("read", str(run.parent / "none"), "status").stdout) == {"MH_META_status": ""}


def test_server_died_fails_a_running_run_once_and_leaves_a_cancelled_one(run: Path) -> None:
    proc = cli("server-died", str(run), "--exit-code", "137")
    assert (
        proc.returncode == 0
        and "FAILED: the grading server died (exit 137, killed by SIGKILL)" in proc.stderr
    )
    assert shell_values(proc.stdout) == {"MH_SERVER_DEATH": "infrastructure"}
    m = meta(run)
    assert m["status"] == "failed" and m["failure"]["cause"] == "grading_server_died"
    assert m["failure"]["server_exit_code"] == 137 and m["failure"]["server_signal"] == "SIGKILL"
    assert "(no record of its requests)" in m["failure"]["reason"]
    (run / "metadata.json").write_text(json.dumps({"status": "cancelled"}))
    proc = cli("server-died", str(run), "--exit-code", "137")
    assert meta(run) == {"status": "cancelled"}
    assert shell_values(proc.stdout) == {"MH_SERVER_DEATH": "none"}


def inflight_record(state: Path, in_flight: int, nbytes: int) -> None:
    from mlebench_hpc.server.inflight import InFlightRecorder

    recorder = InFlightRecorder(state / "inflight.json")
    for _ in range(in_flight):
        recorder.begin(nbytes // in_flight)
    recorder.over_budget()


def test_server_died_while_validating_the_agents_uploads_is_the_agents_doing(
    run: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    inflight_record(state, 2, 300 * 2**20)
    (state / "exit_code").write_text("137\n")  # slurm_grading_server.sh's; srun said 1
    (run / "metadata.json").write_text(json.dumps({"status": "finished", "submission_exists": "true"}))
    proc = cli("server-died", str(run), "--exit-code", "1", "--state-dir", str(state))
    assert proc.returncode == 0, proc.stderr
    assert shell_values(proc.stdout) == {"MH_SERVER_DEATH": "agent"}
    m = meta(run)
    assert m["status"] == "finished", "the agent's run keeps its status"
    failure = m["failure"]
    assert failure["cause"] == "grading_server_killed_by_agent_requests"
    assert (failure["server_exit_code"], failure["server_signal"], failure["step_exit_code"]) == (
        137,
        "SIGKILL",
        1,
    )
    assert (
        "while validating the agent's own uploads (2 uploads (300.0 MiB) being validated)"
        in failure["reason"]
    )
    assert failure["server_requests"]["in_flight"] == 2 and failure["server_requests"]["over_budget"] == 1
    assert "NOTE:" in proc.stderr and "FAILED" not in proc.stderr


def test_server_died_with_nothing_in_flight_or_a_record_it_cannot_trust_is_infrastructure(
    run: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    inflight_record(state, 0, 0)
    cli("server-died", str(run), "--exit-code", "1", "--state-dir", str(state))
    m = meta(run)
    assert m["status"] == "failed" and m["failure"]["cause"] == "grading_server_died"
    assert "died (exit 1) with no request in flight" in m["failure"]["reason"]
    # a link in place of the record is no record (only the server writes a regular file there)
    other = tmp_path / "elsewhere"
    other.mkdir()
    inflight_record(other, 1, 10)
    (state / "inflight.json").unlink()
    (state / "inflight.json").symlink_to(other / "inflight.json")
    (run / "metadata.json").write_text(json.dumps({"status": "finished"}))
    cli("server-died", str(run), "--exit-code", "137", "--state-dir", str(state))
    assert meta(run)["failure"]["cause"] == "grading_server_died"


@pytest.fixture
def server(demo_data: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The real grading server with a token and a state dir, as slurm_grading_server.sh makes them."""
    state = tmp_path / "runs" / ".state" / "demo-diabetes_7"
    state.mkdir(parents=True)
    (state / "token").write_text("tok-7\n")
    (state / "token").chmod(0o600)
    cmd = [
        str(BIN / "mlebench-hpc"),
        "serve",
        "--competition-id",
        "demo-diabetes",
        "--data-dir",
        str(demo_data),
    ]
    cmd += ["--url-file", str(state / "url"), "--token-file", str(state / "token")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (state / "url").is_file() and time.monotonic() < deadline:
            assert proc.poll() is None, "grading server exited"
            time.sleep(0.1)
        yield (state / "url").read_text().strip(), state
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_start_finds_the_token_makes_the_run_records_and_overlays(
    server: tuple[str, Path], tmp_path: Path, repo_root: Path, demo_data: Path
) -> None:
    url, state = server
    env = {
        "MH_STATE_BASE": str(state.parent),
        "OUTPUT_BASE": str(tmp_path / "runs"),
        "RUN_GROUP": "grp",
        "MH_GROUP": "",
        "DATA_DIR": str(demo_data),
        "TIME_LIMIT_SECS": "600",
        "MH_ROOT": str(repo_root),
        "SLURM_JOB_ID": "",
        "MH_GRADING_TOKEN_FILE": "",
        "AGENT_ID": "dummy",
        "AGENTS_DIR": str(repo_root / "agents"),
        "AGENT_ENV_FILE": "",
        "STEP_LIMIT": "7",
    }
    env_file = tmp_path / "state" / "agent.env"
    start = ("start", "demo-diabetes", url, "--job", "99", "--runtime", "none", "--env-file", str(env_file))
    proc = cli(*start, env=env)
    assert proc.returncode == 0, proc.stderr
    got = shell_values(proc.stdout)
    # the variant's command as upstream runs it; the budget from the config (dummy sets none)
    assert agent_argv(proc.stdout) == ["bash", "/home/agent/start.sh"]
    assert (got["MH_TIME_LIMIT"], got["MH_STEP_LIMIT"]) == ("600", "7")
    # the run's env file: 0600, the token and nothing of the user's
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert env_file.read_text() == "GRADING_SERVER_TOKEN=tok-7\n"
    run = tmp_path / "runs" / "grp" / "demo-diabetes_99"
    assert got["MH_RUN"] == str(run) and got["MH_URL"] == url
    assert got["MH_TOKEN_FILE"] == str(state / "token")  # found by the url file next to it
    assert got["MH_USED_BEFORE"] == "0" and got["MH_SLURM_LEFT"] == ""
    m = meta(run)
    assert (m["status"], m["competition_id"], m["agent_job_id"], m["grading_server_url"]) == (
        "running", "demo-diabetes", "99", url,
    )  # fmt: skip
    assert m["time_limit_secs"] == 600 and m["runtime"] == "none"
    assert m["agent_id"] == "dummy" and m["agent_argv"] == ["bash", "/home/agent/start.sh"]
    assert (run / ".agent-root/home/agent/start.sh").is_file()  # the agent's dir as its image holds it
    overlays = (run / "overlay" / "overlays.tsv").read_text()
    assert "/home/validate_submission.sh" in overlays and "/home/instructions.txt" in overlays
    rewritten = next(run.glob("overlay/**/validate_submission.sh"), None) or next(
        p for p in (run / "overlay").rglob("*") if p.is_file() and "validate" in p.name
    )
    assert url in rewritten.read_text() and "localhost:5000" not in rewritten.read_text()

    # a requeued attempt continues the budget its predecessors used
    (run / "metadata.json").write_text(json.dumps({**m, "agent_secs_used": 120}))
    proc = cli(*start, env=env)
    assert proc.returncode == 0, proc.stderr
    assert shell_values(proc.stdout)["MH_USED_BEFORE"] == "120"


def test_start_with_a_wrong_token_or_a_dead_server_says_so_in_one_line(
    server: tuple[str, Path], tmp_path: Path, repo_root: Path, free_port: int
) -> None:
    url, state = server
    wrong = tmp_path / "wrong"
    wrong.write_text("another-run\n")
    env = {"MH_STATE_BASE": str(state.parent), "OUTPUT_BASE": str(tmp_path / "out"), "RUN_GROUP": "g",
           "MH_ROOT": str(repo_root), "MH_GRADING_TOKEN_FILE": str(wrong), "AGENT_ID": "dummy",
           "AGENTS_DIR": str(repo_root / "agents"), "AGENT_ENV_FILE": ""}  # fmt: skip
    ef = ("--env-file", str(tmp_path / "agent.env"))
    proc = cli("start", "demo-diabetes", url, "--job", "1", "--runtime", "none", *ef, env=env)
    assert proc.returncode == 2 and "refuses this run's token" in proc.stderr
    # nothing is made for a run that cannot start
    assert not (tmp_path / "out" / "g" / "demo-diabetes_1").exists()
    proc = cli("start", "demo-breast-cancer", url, "--job", "1", "--runtime", "none", *ef, env=env)
    assert proc.returncode == 2 and "serves demo-diabetes, not demo-breast-cancer" in proc.stderr
    dead = f"http://127.0.0.1:{free_port}"
    args = ("start", "demo-diabetes", dead, "--job", "1", "--runtime", "none", "--ready-timeout", "2", *ef)
    proc = cli(*args, env=env)
    assert proc.returncode == 2 and "not ready after 2s" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
