"""Several agents in one sweep group: pairs are (agent, competition, seed) in the resume rule, the
task rows, sweep.json, the final-attempt rule and `status`; groups made before runs named their
agent keep working (mlebench_hpc.sweep.attribution). The real two-agent sweep: tests/bats/test_sweep.bats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlebench_hpc.demo import prepare_demo
from mlebench_hpc.run.record import scan_runs
from mlebench_hpc.slurm.query import JobRecord
from mlebench_hpc.sweep.attempts import split_attempts
from mlebench_hpc.sweep.attribution import LEGACY_KEY, attribute
from mlebench_hpc.sweep.plan import (
    latest_tasks,
    load_sweep,
    plan_pairs,
    read_tasks_file,
    record_submission,
    sweep_plan_cmd,
    write_tasks_file,
)
from mlebench_hpc.sweep.status import sweep_status
from mlebench_hpc.sweep.status_cli import status_cmd


def run(
    group: Path,
    comp: str,
    seed: int,
    array: str,
    index: int,
    status: str = "finished",
    agent: str | None = None,
    submission: bool = True,
    start: str = "2026-01-01T00:00:00Z",
) -> Path:
    """A sweep task's run directory as slurm_sweep_task.sh and `run start` leave it."""
    d = group / f"{comp}_{array}_{index}"
    (d / "submission").mkdir(parents=True)
    meta: dict[str, object] = {
        "competition_id": comp,
        "seed": str(seed),
        "status": status,
        "exit_code": "0" if status == "finished" else "1",
        "submission_exists": "true" if submission else "false",
        "sweep_array_job_id": array,
        "sweep_task_index": str(index),
        "attempt_start": start,
    }
    if agent is not None:
        meta["agent_id"] = agent
    (d / "metadata.json").write_text(json.dumps(meta))
    return d


def submit(group: Path, array: str, pairs: list[tuple[str | None, str, int]], agent: str | None) -> None:
    """What submit_sweep.sh records after sbatch: the task file and the submission in sweep.json."""
    n = len(load_sweep(group)["submissions"]) + 1
    tasks = group / ".sweep" / f"tasks-{n}.tsv"
    write_tasks_file(tasks, pairs)
    record_submission(group, array, tasks, {"seeds": 1, "agent_id": agent}, "sbatch", agent)


def plan(group: Path, agent: str, comps: list[str], seeds: int = 1) -> list[tuple[str | None, str, int]]:
    data = load_sweep(group)
    runs = scan_runs(group)
    att = attribute(runs, data, planned=agent)
    return plan_pairs(comps, seeds, runs, latest_tasks(data, att), None, agent, att)[0]


def test_one_agents_runs_never_make_another_agents_pairs_done(tmp_path: Path) -> None:
    g = tmp_path / "g"
    submit(g, "10", [("A", "a", 0), ("A", "b", 0)], "A")
    run(g, "a", 0, "10", 0, agent="A")
    run(g, "b", 0, "10", 1, agent="A")
    # A is done; B, never run, has everything to do in the same group
    assert plan(g, "A", ["a", "b"]) == []
    assert plan(g, "B", ["a", "b"]) == [("B", "a", 0), ("B", "b", 0)]
    # control: were the runs nobody's (as pairs were (competition, seed)), B would find them done
    for meta in g.glob("*/metadata.json"):
        m = json.loads(meta.read_text())
        m.pop("agent_id")
        meta.write_text(json.dumps(m))
    (g / "sweep.json").unlink()
    assert plan(g, "B", ["a", "b"]) == []


def test_two_failures_of_one_agent_do_not_stop_the_other(tmp_path: Path) -> None:
    g = tmp_path / "g"
    submit(g, "10", [("A", "a", 0)], "A")
    submit(g, "11", [("A", "a", 0)], "A")
    run(g, "a", 0, "10", 0, status="failed", agent="A", submission=False)
    run(g, "a", 0, "11", 0, status="failed", agent="A", submission=False)
    assert plan(g, "A", ["a"]) == []  # failed twice
    assert plan(g, "B", ["a"]) == [("B", "a", 0)]


def test_queued_task_of_another_agent_does_not_hold_a_pair(tmp_path: Path) -> None:
    g = tmp_path / "g"
    g.mkdir()
    submit(g, "77", [("A", "a", 0)], "A")
    slurm = {"77_0": JobRecord("77_0", "RUNNING", nodes="n1")}
    data, runs = load_sweep(g), scan_runs(g)
    for agent, expected in (("A", []), ("B", [("B", "a", 0)])):
        att = attribute(runs, data, planned=agent)
        assert plan_pairs(["a"], 1, runs, latest_tasks(data, att), slurm, agent, att)[0] == expected


def test_task_rows_name_their_agent_and_old_rows_still_read(tmp_path: Path) -> None:
    f = tmp_path / "tasks.tsv"
    write_tasks_file(f, [("aide/dev", "a", 0), ("aide/dev", "b_c", 2)])
    assert f.read_text() == "0\ta\t0\taide/dev\n1\tb_c\t2\taide/dev\n"
    assert read_tasks_file(f) == [(0, "a", 0, "aide/dev"), (1, "b_c", 2, "aide/dev")]
    old = tmp_path / "old.tsv"
    old.write_text("0\ta\t0\n1\tb\t1\n")  # written before task rows named their agent
    assert read_tasks_file(old) == [(0, "a", 0, None), (1, "b", 1, None)]


def test_sweep_json_records_each_tasks_agent(tmp_path: Path) -> None:
    g = tmp_path / "g"
    submit(g, "10", [("A", "a", 0)], "A")
    submit(g, "11", [("B", "a", 0)], "B")
    data = load_sweep(g)
    assert [(s["array_job_id"], s["agent_id"]) for s in data["submissions"]] == [("10", "A"), ("11", "B")]
    assert [(t["job_id"], t["agent_id"]) for t in data["tasks"]] == [("10_0", "A"), ("11_0", "B")]
    assert LEGACY_KEY not in data  # nothing in the group named no agent
    att = attribute(scan_runs(g), data)
    assert set(latest_tasks(data, att)) == {("A", "a", 0), ("B", "a", 0)}


def test_old_group_belongs_to_the_agent_that_resumes_it_first(tmp_path: Path) -> None:
    """A group made before runs and tasks named their agent: its runs are the agent first submitted
    into it (the config's AGENT_ID, by default the one it ran), recorded; an agent added later never
    takes them over."""
    g = tmp_path / "g"
    tasks = g / ".sweep" / "tasks-1.tsv"
    tasks.parent.mkdir(parents=True)
    tasks.write_text("0\ta\t0\n1\tb\t0\n")
    old = {"submissions": [{"n": 1, "array_job_id": "10", "asked": {"seeds": 1}}], "tasks": []}
    old["tasks"] = [
        {"competition": c, "seed": 0, "array_job_id": "10", "array_index": i, "submission": 1}
        for i, c in enumerate("ab")
    ]
    (g / "sweep.json").write_text(json.dumps(old))
    run(g, "a", 0, "10", 0)  # finished, no agent_id
    run(g, "b", 0, "10", 1, status="failed", submission=False)
    # status and grade before any new submission: one agent, unknown
    assert {r.agent for r in sweep_status(g, use_slurm=False).pairs} == {None}
    # resumed with dummy: its pairs are the old ones, so only b is to run again
    assert plan(g, "dummy", ["a", "b"]) == [("dummy", "b", 0)]
    submit(g, "11", [("dummy", "b", 0)], "dummy")
    assert load_sweep(g)[LEGACY_KEY] == "dummy"
    run(g, "b", 0, "11", 0, agent="dummy")
    # a second agent in the group: everything to do, and the old runs stay dummy's
    assert plan(g, "other", ["a", "b"]) == [("other", "a", 0), ("other", "b", 0)]
    assert plan(g, "dummy", ["a", "b"]) == []
    st = sweep_status(g, use_slurm=False)
    assert [(r.agent, r.competition, r.job) for r in st.pairs] == [
        ("dummy", "a", "10_0"),
        ("dummy", "b", "11_0"),
    ]
    # control: without the recorded legacy id, the other agent planned would take the old runs
    data = load_sweep(g)
    data.pop(LEGACY_KEY)
    (g / "sweep.json").write_text(json.dumps(data))
    data = load_sweep(g)
    assert attribute(scan_runs(g), data, planned="other").legacy == "dummy"  # the only agent named
    submit(g, "12", [("other", "a", 0)], "other")  # a second agent named: no single one any more
    data = load_sweep(g)
    data.pop(LEGACY_KEY)
    assert attribute(scan_runs(g), data, planned="other").legacy == "other"


def test_a_run_that_names_no_agent_is_its_arrays_agent(tmp_path: Path) -> None:
    """Runs made before task start recorded the agent: a task that failed before its agent started
    named none, while the other tasks of its array (`run start`) did."""
    g = tmp_path / "g"
    run(g, "a", 0, "10", 0, agent="A")
    run(g, "b", 0, "10", 1, status="failed", submission=False)  # array 10: A's
    run(g, "a", 0, "11", 0, agent="B")
    run(g, "b", 0, "11", 1, status="failed", submission=False)  # array 11: B's
    att = attribute(scan_runs(g), {})
    assert {r.path.name: att.of_run(r) for r in scan_runs(g)} == {
        "a_10_0": "A",
        "b_10_1": "A",
        "a_11_0": "B",
        "b_11_1": "B",
    }
    assert att.legacy is None  # two agents named: nobody else's runs are guessed


def test_final_attempt_is_per_agent(tmp_path: Path) -> None:
    g = tmp_path / "g"
    (g).mkdir()
    (g / "sweep.json").write_text(
        json.dumps({"submissions": [{"array_job_id": "10"}, {"array_job_id": "11"}, {"array_job_id": "12"}]})
    )
    run(g, "a", 0, "10", 0, status="cancelled", agent="A")
    run(g, "a", 0, "11", 0, agent="B")
    run(g, "a", 0, "12", 0, agent="A")
    final, superseded = split_attempts(scan_runs(g))
    assert sorted(r.path.name for r in final) == ["a_11_0", "a_12_0"]
    assert [(s.run.path.name, s.final.path.name, s.agent) for s in superseded] == [("a_10_0", "a_12_0", "A")]
    assert superseded[0].as_dict()["agent_id"] == "A"
    # control: the same runs naming no agent are one pair, and B's run would supersede A's
    for meta in g.glob("*/metadata.json"):
        m = json.loads(meta.read_text())
        m.pop("agent_id")
        meta.write_text(json.dumps(m))
    final, superseded = split_attempts(scan_runs(g))
    assert [r.path.name for r in final] == ["a_12_0"] and len(superseded) == 2


def test_status_shows_agents_and_counts_per_agent(tmp_path: Path) -> None:
    g = tmp_path / "g"
    submit(g, "10", [("A", "a", 0), ("A", "b", 0)], "A")
    submit(g, "11", [("B", "a", 0), ("B", "b", 0)], "B")
    run(g, "a", 0, "10", 0, agent="A")
    run(g, "b", 0, "10", 1, agent="A")
    run(g, "a", 0, "11", 0, agent="B")
    run(g, "b", 0, "11", 1, status="failed", agent="B", submission=False)
    out = CliRunner().invoke(status_cmd, [str(g), "--no-slurm"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split() == ["agent", "competition", "seed", "job", "state"]
    assert [ln.split()[:4] for ln in lines[1:5]] == [
        ["A", "a", "0", "10_0"],
        ["A", "b", "0", "10_1"],
        ["B", "a", "0", "11_0"],
        ["B", "b", "0", "11_1"],
    ]
    assert lines[5:] == ["agent A: 2 pairs: 2 finished", "agent B: 2 pairs: 1 finished, 1 failed"]
    # one agent: the table and the count line without an agent column or per-agent lines
    one = tmp_path / "one"
    submit(one, "20", [("A", "a", 0)], "A")
    run(one, "a", 0, "20", 0, agent="A")
    lines = CliRunner().invoke(status_cmd, [str(one), "--no-slurm"]).output.splitlines()
    assert lines[0].split() == ["competition", "seed", "job", "state"] and lines[-1] == "1 pairs: 1 finished"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data")
    prepare_demo(d)
    return d


def test_sweep_plan_cli_plans_per_agent(tmp_path: Path, data_dir: Path) -> None:
    f = tmp_path / "demo.txt"
    f.write_text("demo-diabetes\ndemo-breast-cancer\n")
    g = tmp_path / "g"
    run(g, "demo-diabetes", 0, "5", 0, agent="A")

    def cli(agent: str, *more: str) -> tuple[int, str, str]:
        out = tmp_path / f"tasks-{agent}.tsv"
        args = ["--group-dir", str(g), "--competitions", str(f), "--data-dir", str(data_dir), "--no-slurm"]
        res = CliRunner().invoke(sweep_plan_cmd, [*args, "--agent-id", agent, "--tasks-out", str(out), *more])
        return res.exit_code, res.stdout.strip(), res.stderr

    code, count, err = cli("A")
    assert (code, count) == (0, "1") and "sweep: agent A: 2 pairs" in err and "1 done" in err
    assert read_tasks_file(tmp_path / "tasks-A.tsv") == [(0, "demo-breast-cancer", 0, "A")]
    assert cli("B")[:2] == (0, "2")
    code, _, err = cli("bad id")
    assert code == 2 and "white space or control characters" in err
