"""`mlebench-hpc run <phase>`: the jobs' data, one Python start per phase (the jobs themselves are
exercised on the real cluster by the bats tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    """The assignments a phase prints, as bash's eval would set them."""
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
        "check", str(run), "--output", str(out), "--stderr", str(err),
        "--apptainer-version", "apptainer version 1.4.5", "--url", "http://n:1",
        "--flag=--contain", "--flag=--workdir", "--flag=/s", "--bind=/d:/home/data:ro",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    m = meta(run)
    assert m["apptainer_flags"] == ["--contain", "--workdir", "/s"]
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
    proc = cli("check", str(run), "--output", str(out), "--rc", "3")
    assert proc.returncode == 1
    rec = meta(run)["integrity"]
    assert rec["ok"] is False
    if output != '{"ok": false, "canary_visible": true}':
        assert "checker exit 3, unreadable output" in rec["error"]
        assert "forged" not in json.dumps(rec)


def test_check_without_a_container_records_no_isolation(run: Path) -> None:
    proc = cli("check", str(run), "--no-container")
    assert proc.returncode == 0, proc.stderr
    assert meta(run)["integrity"] == {"ok": False, "runtime": "none", "reason": "no container: no isolation"}


def test_stop_records_without_collecting_and_finish_collects(run: Path) -> None:
    (run / "submission" / "submission.csv").write_text("id,y\n1,2\n")
    proc = cli("stop", str(run), "--because", "signal", "--agent-secs-used", "12")
    assert proc.returncode == 0, proc.stderr
    assert shell_values(proc.stdout) == {"MH_EXIT": "143"}
    m = meta(run)
    assert (m["status"], m["exit_code"], m["agent_secs_used"]) == ("cancelled", 143, 12) and m["end"]
    assert "submission_exists" not in m
    proc = cli("finish", str(run))
    assert proc.returncode == 0, proc.stderr
    m = meta(run)
    assert m["status"] == "cancelled" and m["submission_exists"] is True
    assert (run / "collected" / "submission.csv").read_text() == "id,y\n1,2\n"


@pytest.mark.parametrize(
    "because, status, code",
    [
        ("time-limit", "timeout", 124),
        ("budget-used", "timeout", 124),
        ("integrity-failed", "integrity_failed", 3),
    ],
)
def test_stop_says_what_stopped_the_agent(run: Path, because: str, status: str, code: int) -> None:
    proc = cli("stop", str(run), "--because", because)
    assert shell_values(proc.stdout) == {"MH_EXIT": str(code)}
    assert (meta(run)["status"], meta(run)["exit_code"]) == (status, code)


@pytest.mark.parametrize("code, status", [(0, "finished"), (124, "timeout"), (1, "failed"), (137, "failed")])
def test_finish_derives_the_status_from_the_exit_code(run: Path, code: int, status: str) -> None:
    proc = cli("finish", str(run), "--exit-code", str(code), "--agent-secs-used", "5")
    assert proc.returncode == 0, proc.stderr
    assert shell_values(proc.stdout) == {"MH_STATUS": status, "MH_EXIT": str(code)}
    m = meta(run)
    assert (m["status"], m["exit_code"], m["agent_secs_used"], m["submission_exists"]) == (
        status,
        code,
        5,
        False,
    )


def test_finish_after_the_llm_job_ended_fails_the_attempt(run: Path) -> None:
    """LLM_BASE_URL=auto:: the LLM server job ended under the agent, which then exited 0 with a
    submission: the attempt failed (it lost its model), and the job exits non-zero."""
    (run / "submission" / "submission.csv").write_text("id,y\n1,2\n")
    proc = cli("finish", str(run), "--exit-code", "0", "--llm-job-ended", "4242")
    assert shell_values(proc.stdout) == {"MH_STATUS": "failed", "MH_EXIT": "1"}
    m = meta(run)
    assert m["status"] == "failed" and m["submission_exists"] is True
    assert (
        m["failure"]["cause"] == "llm_server_died"
        and "job 4242 ended before the agent did" in m["failure"]["reason"]
    )


def test_finish_never_follows_the_agents_link(run: Path, tmp_path: Path) -> None:
    secret = tmp_path / "answers.csv"
    secret.write_text("id,y\n1,SECRET\n")
    (run / "submission" / "submission.csv").symlink_to(secret)
    proc = cli("finish", str(run), "--exit-code", "0")
    assert proc.returncode == 0, proc.stderr
    m = meta(run)
    assert m["status"] == "finished" and m["submission_exists"] is False
    assert "SECRET" not in (run / "metadata.json").read_text()


def test_a_later_attempt_owns_the_run(run: Path) -> None:
    m = meta(run)
    (run / "metadata.json").write_text(json.dumps({**m, "slurm_restart_count": 2}))
    proc = cli("finish", str(run), "--exit-code", "1", "--attempt", "1")
    assert proc.returncode == 0 and "later attempt" in proc.stderr
    assert meta(run)["status"] == "running"


def test_an_unknown_stop_is_refused(run: Path) -> None:
    proc = cli("stop", str(run), "--because", "done")
    assert proc.returncode == 2 and "done" in proc.stderr


def test_llm_died_fails_the_run_with_its_exit_code_once(run: Path) -> None:
    """LLM_BASE_URL=job: the hetjob's LLM server died during the run. Fenced and status-checked as
    the grading server's death: a run settled otherwise is left alone (but a `cancelled` one: the
    job's watcher stopped the agent because its LLM server ended)."""
    (run / "metadata.json").write_text(json.dumps({"status": "finished", "submission_exists": True}))
    proc = cli("died", str(run), "--which", "llm", "--exit-code", "124")
    assert proc.returncode == 0, proc.stderr
    assert shell_values(proc.stdout) == {"MH_SERVER_DEATH": "infrastructure"}
    m = meta(run)
    assert m["status"] == "failed" and m["failure"]["cause"] == "llm_server_died"
    assert m["failure"]["server_exit_code"] == 124 and "died (exit 124)" in m["failure"]["reason"]
    (run / "metadata.json").write_text(json.dumps({"status": "cancelled"}))
    cli("died", str(run), "--which", "llm")
    assert meta(run)["status"] == "failed" and meta(run)["failure"]["server_exit_code"] is None
    for settled in ("requeued", "lost", "integrity_failed"):
        (run / "metadata.json").write_text(json.dumps({"status": settled}))
        proc = cli("died", str(run), "--which", "llm", "--exit-code", "1")
        assert shell_values(proc.stdout) == {"MH_SERVER_DEATH": "none"} and meta(run) == {"status": settled}
    (run / "metadata.json").write_text(json.dumps({"status": "running", "slurm_restart_count": 1}))
    cli("died", str(run), "--which", "llm", "--attempt", "0")
    assert meta(run)["status"] == "running"


def test_died_finds_the_run_of_this_job(run: Path) -> None:
    """The hetjob names its run by competition and job id: the path is built in Python only."""
    env = {"OUTPUT_BASE": str(run.parent.parent), "MH_GROUP": "g", "MH_JOB_ID": "42"}
    proc = cli("died", "--competition", "demo-diabetes", "--which", "grading", "--exit-code", "9", env=env)
    assert proc.returncode == 0, proc.stderr
    assert meta(run)["failure"]["cause"] == "grading_server_died"


def test_server_died_fails_a_running_run_once_and_leaves_a_cancelled_one(run: Path) -> None:
    proc = cli("died", str(run), "--which", "grading", "--exit-code", "137")
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
    proc = cli("died", str(run), "--which", "grading", "--exit-code", "137")
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
    proc = cli("died", str(run), "--which", "grading", "--exit-code", "1", "--state-dir", str(state))
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
    cli("died", str(run), "--which", "grading", "--exit-code", "1", "--state-dir", str(state))
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
    cli("died", str(run), "--which", "grading", "--exit-code", "137", "--state-dir", str(state))
    assert meta(run)["failure"]["cause"] == "grading_server_died"


def test_start_finds_the_token_makes_the_run_records_and_overlays(
    server: tuple[str, Path], start_env: dict[str, str], tmp_path: Path, repo_root: Path, demo_data: Path
) -> None:
    url, state = server
    env = {**start_env, "STEP_LIMIT": "7"}
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
    assert got["MH_USED_BEFORE"] == "0" and got["MH_AGENT_SECS"] == "600"  # no Slurm limit to end before
    assert (env_file.parent / "run_dir").read_text() == f"{run}\n"  # for the hetjob's last lines
    m = meta(run)
    assert (m["status"], m["competition_id"], m["agent_job_id"], m["grading_server_url"]) == (
        "running", "demo-diabetes", "99", url,
    )  # fmt: skip
    assert m["time_limit_secs"] == 600 and m["agent_budget_secs"] == 600 and m["runtime"] == "none"
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


@pytest.mark.parametrize(
    "used, left, want",
    [
        (0, None, 86400),  # no Slurm limit (or UNLIMITED): the whole budget
        (3600, None, 82800),  # a requeued run continues its budget
        (0, 36000, 36000 - 300),  # ends TIME_MARGIN_SECS before Slurm's limit
        (0, 2 * 86400, 86400),
        (0, 480, 240),  # less than two margins left: half of it
        (86400, None, 0),  # used up by earlier attempts
    ],
)
def test_agent_budget(used: int, left: int | None, want: int) -> None:
    from mlebench_hpc.run.phases import agent_budget

    secs, notes = agent_budget(86400, used, left, 300)
    assert secs == want
    assert any("earlier attempts used" in n for n in notes) == bool(used)
    assert any("agent budget cut to" in n for n in notes) == (left is not None and left - 300 < 86400 - used)


@pytest.mark.parametrize(
    "text, secs",
    [
        ("45", 45),
        ("05:07", 307),
        ("1:00:00", 3600),
        ("08:09:10", 29350),
        ("2-03:04:05", 2 * 86400 + 3 * 3600 + 4 * 60 + 5),
        ("1-00:00:00", 86400),
        ("UNLIMITED", None),
        ("INVALID", None),
        ("", None),
        (None, None),
        ("1:2:3:4", None),
        ("-5", None),
    ],
)
def test_slurm_time_in_seconds(text: str | None, secs: int | None) -> None:
    """Every squeue %L form, and nothing for what is not a time."""
    from mlebench_hpc.slurm.query import slurm_secs

    assert slurm_secs(text) == secs


def prepare(tmp_path: Path, demo_data: Path, row: str, *extra: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "config.env"
    cfg.write_text(f"DATA_DIR={demo_data}\nOUTPUT_BASE={tmp_path / 'runs'}\nIMAGE_DIR={tmp_path / 'img'}\n")
    tasks = tmp_path / "tasks.tsv"
    tasks.write_text(row)
    env = {"MLEBENCH_HPC_CONFIG": str(cfg), "SLURM_ARRAY_JOB_ID": "77", "SLURM_JOB_ID": "78"}
    return cli(
        "prepare", str(tasks), "grp", "--index", "1", "--job-id", "77_1", "--runtime", "none", *extra, env=env
    )


def test_prepare_starts_the_task_and_its_steps_inherit_the_config(tmp_path: Path, demo_data: Path) -> None:
    proc = prepare(tmp_path, demo_data, "0\tdemo-diabetes\t0\t\n1\tdemo-breast-cancer\t2\tdummy\n")
    assert proc.returncode == 0, proc.stderr
    got = shell_values(proc.stdout)
    run = tmp_path / "runs" / "grp" / "demo-breast-cancer_77_1"
    assert (got["MH_COMP"], got["MH_SEED"], got["MH_GROUP"], got["MH_RUN"]) == (
        "demo-breast-cancer",
        "2",
        "grp",
        str(run),
    )
    assert got["MH_CONFIG_CHECKED"] == "demo-breast-cancer:GRADING_SIF AGENT_SIF" and got["MH_SKIP"] == ""
    assert got["MH_REQUEUES"] == "0" and got["MH_STATE_BASE"] == str(tmp_path / "runs" / ".state")
    assert "export AGENT_ID=dummy" in proc.stdout and "export MH_CONFIG_CHECKED=" in proc.stdout
    m = meta(run)
    assert (m["status"], m["seed"], m["sweep_task_index"], m["sweep_array_job_id"], m["agent_id"]) == (
        "starting", 2, 1, "77", "dummy",
    )  # fmt: skip
    assert sorted(p.name for p in run.iterdir()) == ["code", "logs", "metadata.json", "overlay", "submission"]


def test_prepare_skips_a_finished_pair_and_counts_requeues(tmp_path: Path, demo_data: Path) -> None:
    row = "1\tdemo-diabetes\t0\t\n"
    run = tmp_path / "runs" / "grp" / "demo-diabetes_77_1"
    run.mkdir(parents=True)
    (run / "metadata.json").write_text(json.dumps({"status": "requeued", "requeue_count": 2}))
    got = shell_values(prepare(tmp_path, demo_data, row).stdout)
    assert got["MH_REQUEUES"] == "2" and got["MH_SKIP"] == "" and meta(run)["status"] == "starting"
    (run / "metadata.json").write_text(json.dumps({"status": "finished", "submission_exists": True}))
    got = shell_values(prepare(tmp_path, demo_data, row).stdout)
    assert got["MH_SKIP"].endswith("already finished (finished): not running it again")
    assert meta(run)["status"] == "finished"


def test_prepare_records_a_pair_that_cannot_run_as_failed(tmp_path: Path, demo_data: Path) -> None:
    """An unprepared competition: one line, exit 2, and a failed run of the agent (it counts)."""
    proc = prepare(tmp_path, demo_data, "1\tno-such-comp\t0\t\n")
    assert proc.returncode == 2 and "config error: " in proc.stderr and "no-such-comp" in proc.stderr
    m = meta(tmp_path / "runs" / "grp" / "no-such-comp_77_1")
    assert (m["status"], m["exit_code"], m["submission_exists"]) == ("failed", 2, False)
    proc = prepare(tmp_path, demo_data, "0\tdemo-diabetes\t0\t\n")
    assert proc.returncode == 2 and "task 1 is not in" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_requeued_and_ended(run: Path) -> None:
    (run / "metadata.json").write_text(json.dumps({"status": "running", "requeue_count": 1}))
    assert cli("requeued", str(run)).returncode == 0
    assert (meta(run)["status"], meta(run)["requeue_count"]) == ("requeued", 2)
    (run / "metadata.json").write_text(json.dumps({"status": "finished"}))
    cli("requeued", str(run))
    assert meta(run) == {"status": "finished"}  # an agent that exited keeps its verdict
    cli("ended", str(run), "--exit-code", "2")
    assert meta(run) == {"status": "finished"}  # the agent recorded its own end
    (run / "metadata.json").write_text(json.dumps({"status": "starting"}))
    cli("ended", str(run), "--exit-code", "2")
    m = meta(run)
    assert (m["status"], m["exit_code"], m["submission_exists"]) == ("failed", 2, False)
