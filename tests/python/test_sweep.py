"""sweep-plan's resume rule and sweep.json bookkeeping, on hand-built run directories.
(The Slurm side — arrays, concurrency cap, requeue — is tested for real in tests/bats/test_sweep.bats.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlebench_hpc.demo import prepare_demo
from mlebench_hpc.run.record import (
    RunRecord,
    array_task_id,
    competition_of,
    read_run,
    run_dir_name,
    scan_runs,
)
from mlebench_hpc.slurm.query import JobRecord
from mlebench_hpc.sweep import plan as sweep_plan_module
from mlebench_hpc.sweep import status as sweep_status_module
from mlebench_hpc.sweep.attribution import attribute
from mlebench_hpc.sweep.plan import (
    latest_tasks,
    load_sweep,
    plan_pairs,
    read_competition_list,
    read_tasks_file,
    record_submission,
    sweep_plan_cmd,
    write_tasks_file,
)
from mlebench_hpc.sweep.status import describe_task, sweep_status
from mlebench_hpc.sweep.status_cli import status_cmd


def make_run(
    group: Path,
    name: str,
    comp: str,
    seed: int,
    status: str,
    exit_code: int | None,
    submission: bool,
    **extra: object,
) -> Path:
    run = group / name
    (run / "submission").mkdir(parents=True)
    meta: dict[str, object] = {"competition_id": comp, "seed": str(seed), "status": status, **extra}
    if exit_code is not None:
        meta["exit_code"] = str(exit_code)
        meta["submission_exists"] = "true" if submission else "false"
    if submission:
        (run / "submission" / "submission.csv").write_text("id,target\n1,0.5\n")
    (run / "metadata.json").write_text(json.dumps(meta))
    return run


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data")
    prepare_demo(d)
    return d


def test_list_file_comments_blanks_duplicates(tmp_path: Path) -> None:
    f = tmp_path / "lite.txt"
    f.write_text("# lite split\nspaceship-titanic\n\n  demo-diabetes  # inline note\nspaceship-titanic\n")
    ids, problems = read_competition_list(f)
    assert ids == ["spaceship-titanic", "demo-diabetes"]
    assert problems == []


def test_list_file_bad_lines_all_reported(tmp_path: Path) -> None:
    f = tmp_path / "bad.txt"
    f.write_text("a b\nok-id\nc/d\n")
    ids, problems = read_competition_list(f)
    assert ids == ["ok-id"]
    assert len(problems) == 2 and "bad.txt:1" in problems[0] and "bad.txt:3" in problems[1]
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    assert "no competition id" in read_competition_list(empty)[1][0]


def test_resume_rule(tmp_path: Path) -> None:
    g = tmp_path / "group"
    make_run(g, "a_1_0", "a", 0, "finished", 0, True)  # done
    make_run(g, "a_1_1", "a", 1, "failed", 1, False)  # failed once -> again
    make_run(g, "b_1_2", "b", 0, "failed", 2, False)
    make_run(g, "b_2_0", "b", 0, "timeout", 124, False)  # failed twice -> skip
    make_run(g, "b_1_3", "b", 1, "cancelled", 143, True)  # stopped by us: partial -> again
    make_run(g, "c_1_4", "c", 0, "timeout", 124, True)  # ran out of time with a submission: done
    make_run(g, "c_1_5", "c", 1, "requeued", None, True, requeue_count=2)  # interrupted -> again
    make_run(g, "d_1_6", "d", 0, "failed", 1, True)  # exited non-zero but submitted: done
    make_run(g, "d_1_7", "d", 1, "running", None, False)  # still running per disk, Slurm below
    make_run(g, "x_1_8", "x", 0, "finished", 0, True)  # not in this sweep: ignored
    # the grading server died before the agent ended: failed whatever the agent left -> again
    make_run(g, "e_1_9", "e", 0, "failed", 1, True, failure={"cause": "grading_server_died", "reason": "x"})
    # ... but killed by the agent's own uploads: the agent's doing, a normal attempt -> done
    agent = {"cause": "grading_server_killed_by_agent_requests", "reason": "x"}
    make_run(g, "e_1_10", "e", 1, "finished", 0, True, failure=agent)
    (g / ".sweep").mkdir()
    runs = scan_runs(g)  # made before runs named their agent: the agent planned (attribution.py)
    todo, counts = plan_pairs(["a", "b", "c", "d", "e"], 2, runs, {}, None, "A", attribute(runs, {}, "A"))
    assert todo == [("A", "a", 1), ("A", "b", 1), ("A", "c", 1), ("A", "d", 1), ("A", "e", 0)]
    assert counts == {"pairs": 10, "done": 4, "failed_twice": 1, "active": 0, "to_submit": 5}
    killed = read_run(g / "e_1_10")
    assert killed is not None and killed.done and not killed.infrastructure_failure
    assert killed.ended_text() == (
        "finished (exit 0, submission present); the agent's own uploads killed its grading server"
    )


def test_queued_pairs_are_not_resubmitted(tmp_path: Path) -> None:
    g = tmp_path / "group"
    g.mkdir()
    tasks = g / ".sweep" / "tasks-1.tsv"
    write_tasks_file(tasks, [("A", "a", 0), ("A", "a", 1), ("A", "b", 0)])
    record_submission(g, "77", tasks, {"seeds": 2}, "sbatch ...", "A")
    slurm = {
        "77_0": JobRecord("77_0", "RUNNING", nodes="node1"),
        "77_1": JobRecord("77_1", "PENDING", reason="JobArrayTaskLimit"),
        "77_2": JobRecord("77_2", "CANCELLED"),
    }
    att = attribute(scan_runs(g), load_sweep(g), "A")
    todo, counts = plan_pairs(["a", "b"], 2, scan_runs(g), latest_tasks(load_sweep(g), att), slurm, "A", att)
    # a/0 runs, a/1 waits: both kept; b/0 was cancelled and b/1 never submitted: both planned
    assert todo == [("A", "b", 0), ("A", "b", 1)]
    assert counts["active"] == 2


def test_record_submission_and_status(tmp_path: Path) -> None:
    g = tmp_path / "group"
    t1 = g / ".sweep" / "tasks-1.tsv"
    write_tasks_file(t1, [("A", "a", 0), ("A", "a", 1)])
    assert read_tasks_file(t1) == [(0, "a", 0, "A"), (1, "a", 1, "A")]
    record_submission(g, "10", t1, {"seeds": 2}, "sbatch one", "A")
    t2 = g / ".sweep" / "tasks-2.tsv"
    write_tasks_file(t2, [("A", "a", 1)])
    data = record_submission(g, "11", t2, {"seeds": 2}, "sbatch two", "A")
    assert [s["array_job_id"] for s in data["submissions"]] == ["10", "11"]
    assert [t["job_id"] for t in data["tasks"]] == ["10_0", "10_1", "11_0"]
    assert load_sweep(g) == data
    assert not list(g.glob(".sweep.json.*"))  # no temporary file left behind
    make_run(g, "a_10_0", "a", 0, "finished", 0, True, requeue_count=1)
    make_run(g, "a_11_0", "a", 1, "failed", 3, False)
    (g / ".sweep" / "logs").mkdir()
    (g / ".sweep" / "logs" / "11_0.out").write_text("x\nmlebench-hpc: error: the grading server exited\n")
    rows = sweep_status(g, use_slurm=False).pairs
    assert (rows[0].competition, rows[0].seed, rows[0].job) == ("a", 0, "10_0")
    assert rows[0].text == "requeued 1 time, finished (exit 0, submission present)"
    assert rows[0].state == "finished"
    assert (rows[1].competition, rows[1].seed, rows[1].job) == ("a", 1, "11_0")  # the latest task
    assert (
        rows[1].text.startswith("failed (exit 3, no submission)") and "grading server exited" in rows[1].text
    )
    out = CliRunner().invoke(status_cmd, [str(g), "--no-slurm"])
    assert out.exit_code == 0 and len(out.output.splitlines()) == 4
    assert out.output.splitlines()[-1] == "2 pairs: 1 finished, 1 failed"


def test_run_dir_names_are_made_and_split_in_one_place(tmp_path: Path) -> None:
    assert run_dir_name("a_b", array_task_id("10", 0)) == "a_b_10_0"
    assert competition_of("a_b_10_0", "10_0") == "a_b"  # competition ids may hold "_": the job id splits
    assert competition_of("a_b_10_0", "0") == "a_b_10"
    assert competition_of("a_b_110_0", "10_0") is None and competition_of("_10", "10") is None
    tasks = tmp_path / "g" / ".sweep" / "tasks.tsv"
    write_tasks_file(tasks, [("A", "a_b", 0)])
    data = record_submission(tmp_path / "g", "10", tasks, {"seeds": 1}, "sbatch", "A")
    assert Path(data["tasks"][0]["run_dir"]).name == "a_b_10_0" and data["tasks"][0]["job_id"] == "10_0"


def test_sweep_plan_cli_validates_whole_list(tmp_path: Path, data_dir: Path) -> None:
    f = tmp_path / "list.txt"
    f.write_text("demo-diabetes\nno-such-comp\nspaceship-titanic\n")  # unknown, and known but unprepared
    res = CliRunner().invoke(
        sweep_plan_cmd,
        [
            "--group-dir",
            str(tmp_path / "g"),
            "--competitions",
            str(f),
            "--data-dir",
            str(data_dir),
            "--no-slurm",
        ],
    )
    assert res.exit_code == 2
    assert "no-such-comp" in res.output and "spaceship-titanic" in res.output
    assert "demo-diabetes:" not in res.output
    assert not (tmp_path / "g").exists()


def test_sweep_plan_cli_writes_tasks(tmp_path: Path, data_dir: Path) -> None:
    f = tmp_path / "demo.txt"
    f.write_text("demo-diabetes\ndemo-breast-cancer\n")
    g = tmp_path / "g"
    make_run(g, "demo-diabetes_5_0", "demo-diabetes", 0, "finished", 0, True)
    out = tmp_path / "tasks.tsv"
    args = [
        "--group-dir",
        str(g),
        "--competitions",
        str(f),
        "--seeds",
        "2",
        "--data-dir",
        str(data_dir),
        "--tasks-out",
        str(out),
        "--no-slurm",
        "--agent-id",
        "dummy",
    ]
    res = CliRunner().invoke(sweep_plan_cmd, args)
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == "3"
    assert read_tasks_file(out) == [
        (0, "demo-diabetes", 1, "dummy"),
        (1, "demo-breast-cancer", 0, "dummy"),
        (2, "demo-breast-cancer", 1, "dummy"),
    ]


def test_describe_task_against_slurm(tmp_path: Path) -> None:
    task = {"array_job_id": "5", "array_index": 0}
    g = tmp_path / "g"
    pending = {"5_0": JobRecord("5_0", "PENDING", reason="BeginTime", restarts=1)}
    run = scan_runs_one(make_run(g, "a_5_0", "a", 0, "running", None, False))
    assert describe_task(task, run, pending, g) == (
        "pending",
        "requeued by Slurm (restart 1), pending (BeginTime)",
    )  # the node died: the record could not say so
    said = scan_runs_one(make_run(g, "b_5_0", "b", 0, "requeued", None, False, requeue_count=1))
    assert describe_task(task, said, pending, g) == ("pending", "requeued 1 time, pending (BeginTime)")
    running = {"5_0": JobRecord("5_0", "RUNNING", nodes="n1")}
    assert describe_task(task, run, running, g) == ("running", "running on n1")
    assert describe_task(task, None, {"5_0": JobRecord("5_0", "CANCELLED")}, g) == (
        "cancelled",
        "cancelled before it started",
    )
    assert describe_task(task, None, {}, g)[0] == "unknown"
    assert describe_task(task, run, None, g) == ("unknown", "record says running (Slurm not asked)")
    lost = scan_runs_one(
        make_run(g, "c_5_0", "c", 0, "lost", None, False, slurm_end={"state": "UNKNOWN", "note": "gone"})
    )
    assert describe_task(task, lost, {}, g) == ("lost", "lost: gone (record said running)")
    two = scan_runs_one(make_run(g, "d_5_0", "d", 0, "finished", 0, True))
    assert describe_task(task, two, {}, g, attempt=(2, 2)) == (
        "finished",
        "attempt 2 of 2, finished (exit 0, submission present)",
    )


def scan_runs_one(run_dir: Path) -> RunRecord:
    run = read_run(run_dir)
    assert run is not None
    return run


def test_status_counts_the_final_attempt_when_the_last_task_never_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a/0 failed in array 10; its resubmission (array 11) was cancelled before it started: the pair
    is its failed run, as grade counts it, and the line says what became of the resubmission."""
    g = tmp_path / "g"
    for n, (array, pairs) in enumerate((("10", [("A", "a", 0), ("A", "a", 1)]), ("11", [("A", "a", 0)])), 1):
        tasks = g / ".sweep" / f"tasks-{n}.tsv"
        write_tasks_file(tasks, pairs)
        record_submission(g, array, tasks, {"seeds": 2}, "sbatch", "A")
    make_run(g, "a_10_0", "a", 0, "failed", 1, False, sweep_array_job_id="10", sweep_task_index="0")
    make_run(g, "a_10_1", "a", 1, "finished", 0, True, sweep_array_job_id="10", sweep_task_index="1")
    slurm = {"11_0": JobRecord("11_0", "CANCELLED"), "10_0": JobRecord("10_0", "FAILED")}
    monkeypatch.setattr(sweep_plan_module, "settle", lambda runs, reader, extra_ids=(): (runs, slurm))
    st = sweep_status(g)
    first = st.pairs[0]
    assert (first.job, first.state) == ("10_0", "failed")
    assert first.text.startswith("failed (exit 1, no submission)")
    assert first.text.endswith("; then 11_0: cancelled before it started")
    assert st.counts_line() == "2 pairs: 1 finished, 1 failed"
    # while the resubmission is queued, the pair is pending
    slurm["11_0"] = JobRecord("11_0", "PENDING", reason="Priority")
    assert sweep_status(g).pairs[0] == sweep_status_module.PairStatus(
        "a", 0, "11_0", "pending", "pending (Priority)", "A"
    )


ESCAPES = "\x1b[1A\x1b[2K\x1b[32mfinished (exit 0, submission present)\x1b[0m\r\x9b2J\u202e"


def test_status_prints_no_control_character_of_the_agents(tmp_path: Path) -> None:
    """The agent's last `error:` line, with escape sequences that would redraw its failed row as
    finished and erase the count line, reaches `status` escaped."""
    g = tmp_path / "group"
    t1 = g / ".sweep" / "tasks-1.tsv"
    write_tasks_file(t1, [("A", "a", 0), ("A", "a", 1)])
    record_submission(g, "10", t1, {"seeds": 2}, "sbatch", "A")
    make_run(g, "a_10_0", "a", 0, "finished", 0, True)
    make_run(g, "a_10_1", "a", 1, "failed", 1, False, slurm_end=None)  # as a sweep task starts it
    (g / ".sweep" / "logs").mkdir()
    log = g / ".sweep" / "logs" / "10_1.out"
    log.write_bytes(f"agent says\nerror: {ESCAPES}\x1b[1A\x1b[2K\n".encode())
    # control: the raw line is what the job output holds, printed as it is, its escapes reach the terminal
    raw = [ln for ln in log.read_bytes().decode().split("\n") if "error:" in ln][-1]
    assert "\x1b[2K" in raw and "\x9b" in raw
    out = CliRunner().invoke(status_cmd, [str(g), "--no-slurm"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[-1] == "2 pairs: 1 finished, 1 failed" and len(lines) == 4
    assert out.output.isascii() and all(line.isprintable() for line in lines)
    assert "\\x1b[2K" in lines[2] and "\\u009b2J" in lines[2] and "\\u202e" in lines[2] and "\\r" in lines[2]
    assert lines[2].split()[3] == "failed"
