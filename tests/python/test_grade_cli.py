"""`mlebench-hpc grade` and `make grade` as real processes on real prepared demo data."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from upstream_keys import GROUP_KEYS, REPORT_FIELDS

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CLI = str(BIN / "mlebench-hpc")
# what `grade` writes: upstream's run-group keys and ours, then the per-split figures
GRADED_KEYS = [*GROUP_KEYS, "aggregates"]


@pytest.fixture()
def clean_env(tmp_path: Path) -> dict[str, str]:
    """No config in force and a private HOME, so that only what a test sets decides the data dir."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLEBENCH_HPC_CONFIG", "MLEBENCH_DIR")}
    env["HOME"] = str(tmp_path / "home")
    return env


def grade(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "grade", "--no-progress", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def answers(data: Path, comp: str) -> pd.DataFrame:
    return pd.read_csv(data / comp / "prepared" / "private" / "test.csv")[["id", "target"]]


def thresholds(data: Path, comp: str) -> tuple[float, float, float, float]:
    scores = pd.read_csv(data / comp / "leaderboard.csv")["score"].tolist()
    n = len(scores)
    pos = [max(1, int(n * f)) for f in (0.1, 0.2, 0.4)]  # upstream's rule, n < 100
    return scores[pos[0] - 1], scores[pos[1] - 1], scores[pos[2] - 1], float(np.median(scores))


def make_run(root: Path, name: str, meta: dict[str, Any], sub: pd.DataFrame | None) -> Path:
    """A run directory as the job lays it out: <competition>_<jobid> with the job id in its
    metadata, submission/ and logs/."""
    run = root / name
    (run / "submission").mkdir(parents=True)
    (run / "logs").mkdir()
    comp = str(meta.get("competition_id", ""))
    if comp and run.name.startswith(f"{comp}_"):
        meta = {"agent_job_id": run.name[len(comp) + 1 :], **meta}
    (run / "metadata.json").write_text(json.dumps(meta))
    if sub is not None:
        sub.to_csv(run / "submission" / "submission.csv", index=False)
    return run


def load_report(path: Path) -> tuple[dict[str, Any], dict[tuple[str, Any], dict[str, Any]]]:
    group = json.loads(path.read_text())
    return group, {(r["competition_id"], r["seed"]): r for r in group["competition_reports"]}


def test_group_with_missing_invalid_and_valid(
    demo_data: Path, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    group = tmp_path / "group"
    bc, db = answers(demo_data, "demo-breast-cancer"), answers(demo_data, "demo-diabetes")
    integrity = {"passed": True, "apptainer": "1.3", "flags": ["--contain", "--cleanenv"]}
    d = str(demo_data)
    make_run(
        group,
        "demo-breast-cancer_101",
        {"competition_id": "demo-breast-cancer", "seed": 0, "integrity": integrity},
        bc.assign(target=bc["target"].astype(float)),
    )  # perfect probabilities: AUC 1
    make_run(
        group, "demo-breast-cancer_102", {"competition_id": "demo-breast-cancer", "seed": 1}, bc.iloc[:-5]
    )  # invalid: rows missing
    make_run(group, "demo-breast-cancer_103", {"competition_id": "demo-breast-cancer", "seed": 2}, None)
    make_run(
        group,
        "demo-diabetes_201",
        {"competition_id": "demo-diabetes", "seed": 0, "data_dir": d},
        db.assign(target=150.0),
    )
    proc = grade([str(group), "--data-dir", d, "--jobs", "2"], clean_env, tmp_path)
    assert proc.returncode == 0, proc.stderr

    report, by = load_report(group / "grading_report.json")
    assert list(report) == GRADED_KEYS
    assert all(list(r) == REPORT_FIELDS for r in report["competition_reports"])
    assert (
        report["total_runs"],
        report["total_runs_with_submissions"],
        report["total_valid_submissions"],
    ) == (4, 3, 2)
    assert (
        report["total_medals"],
        report["total_gold_medals"],
        report["total_silver_medals"],
        report["total_bronze_medals"],
    ) == (1, 1, 0, 0)
    assert report["grading_backend"] == "builtin"

    gold, silver, bronze, median = thresholds(demo_data, "demo-breast-cancer")
    valid = by[("demo-breast-cancer", 0)]
    assert valid["score"] == 1.0 and valid["valid_submission"] and valid["gold_medal"] and valid["any_medal"]
    assert valid["above_median"] is (median < 1.0)
    assert (
        valid["gold_threshold"],
        valid["silver_threshold"],
        valid["bronze_threshold"],
        valid["median_threshold"],
    ) == pytest.approx((gold, silver, bronze, median))
    assert valid["is_lower_better"] is False and valid["isolation"] == integrity and valid["error"] is None
    assert valid["submission_path"] == str(group / "demo-breast-cancer_101" / "submission" / "submission.csv")
    assert valid["run_dir"] == str(group / "demo-breast-cancer_101")

    invalid = by[("demo-breast-cancer", 1)]
    assert invalid["submission_exists"] and not invalid["valid_submission"] and invalid["score"] is None
    assert not invalid["any_medal"] and not invalid["above_median"] and "rows" in invalid["error"]

    missing = by[("demo-breast-cancer", 2)]
    assert not missing["submission_exists"] and not missing["valid_submission"] and missing["score"] is None
    assert missing["error"].startswith("no submission")

    _, _, dbronze, dmedian = thresholds(demo_data, "demo-diabetes")
    rmse = round(math.sqrt(float(((db["target"] - 150.0) ** 2).mean())), 5)
    reg = by[("demo-diabetes", 0)]
    assert reg["score"] == pytest.approx(rmse, abs=1e-5) and reg["is_lower_better"] is True
    assert reg["any_medal"] is (rmse <= dbronze) and reg["above_median"] is (rmse < dmedian)

    out = proc.stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("demo-")]
    assert [r[:4] for r in rows] == [
        ["demo-breast-cancer", "0", "demo-breast-cancer_101", "yes"],
        ["demo-breast-cancer", "1", "demo-breast-cancer_102", "no"],
        ["demo-breast-cancer", "2", "demo-breast-cancer_103", "missing"],
        ["demo-diabetes", "0", "demo-diabetes_201", "yes"],
    ]
    assert rows[0][4:6] == ["1", "gold"]
    assert "runs 4, with submission 3, valid 2, medals 1" in out
    for name in ("summary.csv", "summary.md", "summary.png"):
        assert (group / name).stat().st_size > 0
    # grading again (reports and summaries now sit in the group dir) gives the same runs
    again = grade([str(group), "--data-dir", d, "--no-summary"], clean_env, tmp_path)
    assert again.returncode == 0 and load_report(group / "grading_report.json")[0]["total_runs"] == 4


def test_nested_group_dirs(demo_data: Path, tmp_path: Path, clean_env: dict[str, str]) -> None:
    root = tmp_path / "sweeps"
    db = answers(demo_data, "demo-diabetes")
    meta = {"competition_id": "demo-diabetes", "data_dir": str(demo_data)}
    make_run(root, "lite/g1/demo-diabetes_1", {**meta, "seed": 0}, db)
    deep = make_run(root, "lite/g2/x/y/demo-diabetes_2", {**meta, "seed": 1}, db)
    (deep / "code").mkdir()
    (deep / "code" / "metadata.json").write_text(json.dumps(meta))  # agent's own file: not a run
    (root / "notes").mkdir()
    (root / "notes" / "metadata.json").write_text("{not json")
    proc = grade([str(root), "--no-summary", "--data-dir", str(demo_data)], clean_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    report, by = load_report(root / "grading_report.json")
    assert report["total_runs"] == 2 and report["total_gold_medals"] == 2
    assert by[("demo-diabetes", 1)]["run_dir"] == str(deep)
    assert "notes/metadata.json" in proc.stderr and "not readable JSON" in proc.stderr
    # one run directory on its own
    single = grade([str(deep), "--no-summary", "--data-dir", str(demo_data)], clean_env, tmp_path)
    assert single.returncode == 0 and load_report(deep / "grading_report.json")[0]["total_runs"] == 1


def test_submissions_jsonl(demo_data: Path, tmp_path: Path, clean_env: dict[str, str]) -> None:
    subs = tmp_path / "subs"
    subs.mkdir()
    answers(demo_data, "demo-diabetes").to_csv(subs / "db.csv", index=False)
    answers(demo_data, "demo-breast-cancer").iloc[:3].to_csv(subs / "bc.csv", index=False)
    jsonl = subs / "submission.jsonl"
    jsonl.write_text(
        "\n".join(
            [
                '{"competition_id": "demo-diabetes", "submission_path": "db.csv"}',
                "# commented out",
                f'{{"competition_id": "demo-breast-cancer", "submission_path": "{subs / "bc.csv"}"}}',
                '{"competition_id": "demo-diabetes", "submission_path": "absent.csv"}',
            ]
        )
        + "\n"
    )
    out = tmp_path / "out"
    proc = grade(
        ["--submissions", str(jsonl), "--output-dir", str(out), "--data-dir", str(demo_data)],
        clean_env,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "grading_report.json").read_text())
    assert list(report) == GRADED_KEYS
    rs = report["competition_reports"]
    assert [(r["competition_id"], r["valid_submission"], r["submission_exists"]) for r in rs] == [
        ("demo-diabetes", True, True),
        ("demo-breast-cancer", False, True),
        ("demo-diabetes", False, False),
    ]
    assert rs[0]["submission_path"] == str(subs / "db.csv") and rs[0]["run_dir"] is None
    assert rs[0]["gold_medal"] and rs[0]["score"] == 0.0
    assert (out / "summary.md").is_file()
    bad = grade(["--submissions", str(jsonl), str(tmp_path)], clean_env, tmp_path)
    assert bad.returncode == 2 and "either RUN_DIR or --submissions" in bad.stderr


def test_data_dir_resolution(demo_data: Path, tmp_path: Path, clean_env: dict[str, str]) -> None:
    """--data-dir > config DATA_DIR > ~/.cache/mle-bench/data; the run's recorded data_dir is never
    used (an agent could plant a run naming answers of its own), only reported when it differs."""
    empty = tmp_path / "empty-data"
    empty.mkdir()
    sub = answers(demo_data, "demo-diabetes")
    with_meta = make_run(
        tmp_path, "m/demo-diabetes_1", {"competition_id": "demo-diabetes", "data_dir": str(empty)}, sub
    )
    no_meta = make_run(tmp_path, "n/demo-diabetes_2", {"competition_id": "demo-diabetes"}, sub)

    def graded(run: Path, args: list[str], env: dict[str, str]) -> tuple[int, str | None, dict[str, Any]]:
        proc = grade([str(run), "--no-summary", *args], env, tmp_path)
        r = json.loads((run / "grading_report.json").read_text())["competition_reports"][0]
        return proc.returncode, r["error"], {"r": r, "out": proc.stdout}

    # --data-dir wins; the run's own record (an unprepared dir) is not used, and the table says so
    rc, err, got = graded(with_meta, ["--data-dir", str(demo_data)], clean_env)
    assert (rc, err) == (0, None) and got["r"]["score"] == 0.0
    assert got["r"]["data_dir"] == str(demo_data) and got["r"]["recorded_data_dir"] == str(empty)
    assert f"note: 1 run record data_dir {empty}; graded against {demo_data}" in got["out"]

    cfg = tmp_path / "cfg.env"
    env = {**clean_env, "MLEBENCH_HPC_CONFIG": str(cfg)}
    cfg.write_text(f"DATA_DIR={demo_data}\n")
    assert graded(no_meta, [], env)[:2] == (0, None)  # config DATA_DIR
    rc, err, got = graded(with_meta, [], env)  # the config beats what the run recorded
    assert (rc, err) == (0, None) and got["r"]["recorded_data_dir"] == str(empty)
    cfg.write_text(f"DATA_DIR={empty}\n")
    rc, err, _ = graded(no_meta, [], env)
    assert rc == 2 and err is not None and str(empty) in err
    # the same dir recorded and used: nothing to say
    rc, _, got = graded(with_meta, [], env)
    assert got["r"]["recorded_data_dir"] is None and "note:" not in got["out"]

    # no config at all: upstream's default under $HOME, whatever the run recorded
    for run in (no_meta, with_meta):
        rc, err, _ = graded(run, [], clean_env)
        assert rc == 2 and err is not None and f"{clean_env['HOME']}/.cache/mle-bench/data" in err


def test_exit_codes(demo_data: Path, tmp_path: Path, clean_env: dict[str, str]) -> None:
    group = tmp_path / "g"
    db = answers(demo_data, "demo-diabetes")
    make_run(group, "demo-diabetes_1", {"competition_id": "demo-diabetes"}, db)
    make_run(group, "no-such-comp_2", {"competition_id": "no-such-comp"}, db)
    data = ["--data-dir", str(demo_data)]
    proc = grade([str(group), "--no-summary", *data], clean_env, tmp_path)
    assert proc.returncode == 0 and "1 of 2 runs could not be graded" in proc.stderr
    assert "no-such-comp" in proc.stdout  # its error is printed under the table
    strict = grade([str(group), "--no-summary", "--strict", *data], clean_env, tmp_path)
    assert strict.returncode == 1
    report = json.loads((group / "grading_report.json").read_text())
    assert report["total_runs"] == 2 and report["total_valid_submissions"] == 1
    empty = tmp_path / "nothing"
    empty.mkdir()
    none = grade([str(empty)], clean_env, tmp_path)
    assert none.returncode == 2 and "no runs found" in none.stderr


def test_make_grade(demo_data: Path, tmp_path: Path, clean_env: dict[str, str]) -> None:
    group = tmp_path / "mg"
    make_run(
        group,
        "demo-diabetes_7",
        {"competition_id": "demo-diabetes", "seed": 0},
        answers(demo_data, "demo-diabetes"),
    )
    # -o: never rebuild the venv from inside a test
    proc = subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(ROOT),
            "-o",
            ".venv/.installed",
            "grade",
            f"RUN={group}",
            f"DATA_DIR={demo_data}",
        ],
        capture_output=True,
        text=True,
        env=clean_env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "demo-diabetes_7" in proc.stdout and (group / "grading_report.json").is_file()
    assert json.loads((group / "grading_report.json").read_text())["total_gold_medals"] == 1


def sweep_meta(comp: str, seed: int, array: str, status: str, data: Path, **extra: Any) -> dict[str, Any]:
    return {
        "competition_id": comp,
        "seed": str(seed),
        "data_dir": str(data),
        "status": status,
        "sweep_array_job_id": array,
        "sweep_task_index": str(seed),
        "attempt_start": "2026-01-01T00:00:00Z",
        **extra,
    }


def test_sweep_group_counts_one_run_per_pair(
    demo_data: Path, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    """A pair's earlier attempts (cancelled with a partial submission, failed by a dead grading server)
    are listed as superseded and change no number: the group grades like a clean sweep."""
    db, bc = answers(demo_data, "demo-diabetes"), answers(demo_data, "demo-breast-cancer")
    good = {"demo-diabetes": db.assign(target=db["target"] + 30.0), "demo-breast-cancer": bc}
    clean, faulty = tmp_path / "clean", tmp_path / "faulty"
    for group in (clean, faulty):
        for comp, sub in good.items():
            for seed in (0, 1):
                make_run(group, f"{comp}_20_{seed}", sweep_meta(comp, seed, "20", "finished", demo_data), sub)
        (group / "sweep.json").write_text(json.dumps({"submissions": [{"array_job_id": "20"}], "tasks": []}))
    # the faulty group's earlier attempts, from an array submitted before
    died = {
        "cause": "grading_server_died",
        "reason": "the grading server died (exit 137) before the agent ended",
    }
    make_run(
        faulty,
        "demo-diabetes_10_0",
        sweep_meta("demo-diabetes", 0, "10", "failed", demo_data, exit_code="1", failure=died),
        db,  # a perfect submission: it must not count
    )
    make_run(
        faulty,
        "demo-breast-cancer_10_1",
        sweep_meta("demo-breast-cancer", 1, "10", "cancelled", demo_data, exit_code="143"),
        bc.iloc[:3],  # invalid: it must not count either
    )
    (faulty / "sweep.json").write_text(
        json.dumps({"submissions": [{"array_job_id": "10"}, {"array_job_id": "20"}], "tasks": []})
    )
    for group in (clean, faulty):
        proc = grade([str(group), "--data-dir", str(demo_data)], clean_env, tmp_path)
        assert proc.returncode == 0, proc.stderr
    c_group, c_reports = load_report(clean / "grading_report.json")
    f_group, f_reports = load_report(faulty / "grading_report.json")
    assert f_group["total_runs"] == 4
    for key in GROUP_KEYS:
        if key.startswith("total_"):
            assert f_group[key] == c_group[key], key
    assert {k: r["score"] for k, r in f_reports.items()} == {k: r["score"] for k, r in c_reports.items()}
    assert c_group["superseded_runs"] == []
    sup = {Path(s["run_dir"]).name: s for s in f_group["superseded_runs"]}
    assert set(sup) == {"demo-diabetes_10_0", "demo-breast-cancer_10_1"}
    assert "grading server died" in sup["demo-diabetes_10_0"]["ended"]
    assert sup["demo-diabetes_10_0"]["superseded_by"] == str(faulty / "demo-diabetes_20_0")
    assert sup["demo-breast-cancer_10_1"]["ended"].startswith("cancelled")
    assert (faulty / "summary.csv").read_text() == (clean / "summary.csv").read_text()
    assert "2 earlier attempts of sweep pairs superseded" in (faulty / "summary.md").read_text()
    assert "superseded (not counted): 2" in proc.stdout
    # control: the same group seen as plain runs (no sweep task index) counts all 6
    for meta_path in faulty.glob("*/metadata.json"):
        meta = json.loads(meta_path.read_text())
        meta.pop("sweep_task_index")
        meta_path.write_text(json.dumps(meta))
    assert grade([str(faulty), "--data-dir", str(demo_data)], clean_env, tmp_path).returncode == 0
    assert load_report(faulty / "grading_report.json")[0]["total_runs"] == 6


JIGSAW = "jigsaw-toxic-comment-classification-challenge"
CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
ESC_COLUMN = "\x1b[1A\x1b[2K\u202e\x1b[32mall runs valid\x1b[0m\r"


def tiny_jigsaw(data: Path, n: int = 40) -> pd.DataFrame:
    """A synthetic jigsaw (graded by the built-in backend), whose errors quote extra column names."""
    rng = np.random.default_rng(1)
    ans = pd.DataFrame({"id": [f"{i:016x}" for i in range(n)]})
    for c in CLASSES:
        ans[c] = rng.integers(0, 2, n)
    (data / JIGSAW / "prepared" / "private").mkdir(parents=True)
    (data / JIGSAW / "prepared" / "public").mkdir(parents=True)
    ans.to_csv(data / JIGSAW / "prepared" / "private" / "test.csv", index=False)
    ans.assign(**dict.fromkeys(CLASSES, 0.5)).to_csv(
        data / JIGSAW / "prepared" / "public" / "sample_submission.csv", index=False
    )
    return ans


def test_grade_prints_no_control_character_of_the_agents(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A column named with escape sequences (that would redraw the table and hide the totals) is
    quoted in the run's error: escaped in the table, the warnings, summary.md and summary.csv."""
    data = tmp_path / "data"
    ans = tiny_jigsaw(data)
    sub = ans.assign(**{c: 0.5 for c in CLASSES}, **{ESC_COLUMN: 1})
    run = make_run(tmp_path / "g", f"{JIGSAW}_5", {"competition_id": JIGSAW, "seed": 0}, sub)
    header = (run / "submission" / "submission.csv").read_bytes().split(b"\n")[0]
    assert b"\x1b[2K" in header and b"\r" in header  # control: the escape bytes are in the file
    from mlebench_hpc.grading.procedures import Spec, header_verdict

    spec = Spec(JIGSAW, "id", tuple(CLASSES), "extra_columns_ignored", "answer_rows_all_minus_one")
    raw = header_verdict(spec, "auroc_columns_by_position", [*sub.columns])
    assert raw is not None and "\x1b[2K" in raw  # control: the engine's reason quotes them raw
    proc = grade([str(run.parent), "--data-dir", str(data)], clean_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout + proc.stderr
    assert "\\x1b[2K" in printed and "\\u202e" in printed  # the name is shown, escaped
    for text in (printed, (run.parent / "summary.md").read_text(), (run.parent / "summary.csv").read_text()):
        assert all(ch.isprintable() or ch in "\n" for ch in text), repr(text[:400])
    assert "runs 1, with submission 1, valid 0" in proc.stdout
    report = json.loads((run.parent / "grading_report.json").read_text())["competition_reports"][0]
    assert "\x1b" not in report["error"] and "\\x1b[2K" in report["error"]


def test_two_agents_in_one_group_never_mix(
    demo_data: Path, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    """A sweep group holding agent A (perfect submissions) and agent probe/b (one invalid, one mean
    prediction): each agent's totals, report file and summary are its own runs only; a run that
    names no agent (failed before its agent started, in an older array) is its array's agent's."""
    db, bc = answers(demo_data, "demo-diabetes"), answers(demo_data, "demo-breast-cancer")
    g = tmp_path / "sweep-demo"
    a, b = {"agent_id": "A"}, {"agent_id": "probe/b"}
    make_run(g, "demo-diabetes_30_0", sweep_meta("demo-diabetes", 0, "30", "finished", demo_data, **a), db)
    bc_perfect = bc.assign(target=bc["target"].astype(float))
    make_run(
        g,
        "demo-breast-cancer_30_1",
        sweep_meta("demo-breast-cancer", 0, "30", "finished", demo_data, **a),
        bc_perfect,
    )
    make_run(
        g,
        "demo-diabetes_31_0",
        sweep_meta("demo-diabetes", 0, "31", "finished", demo_data, **b),
        db.assign(target=150.0),
    )
    # no agent_id: its array (31) is probe/b's
    make_run(
        g,
        "demo-breast-cancer_31_1",
        sweep_meta("demo-breast-cancer", 0, "31", "failed", demo_data),
        bc.iloc[:5],
    )
    asked = {
        "competitions": ["demo-diabetes", "demo-breast-cancer"],
        "competitions_file": "/x/demo.txt",
        "seeds": 1,
    }
    subs = [
        {"array_job_id": j, "agent_id": ag, "asked": {**asked, "agent_id": ag}}
        for j, ag in (("30", "A"), ("31", "probe/b"))
    ]
    (g / "sweep.json").write_text(json.dumps({"submissions": subs, "tasks": []}))
    proc = grade([str(g), "--data-dir", str(demo_data)], clean_env, tmp_path)
    assert proc.returncode == 0, proc.stderr

    report = json.loads((g / "grading_report.json").read_text())
    assert list(report) == [
        "agents",
        "by_agent",
        "created_at",
        "grading_backend",
        "grading_backend_version",
        "superseded_runs",
        "cost",
        "agent_reports",
    ]
    assert report["agents"] == ["A", "probe/b"] and "total_runs" not in report
    mine, theirs = report["by_agent"]["A"], report["by_agent"]["probe/b"]
    assert list(mine) == GRADED_KEYS and list(theirs) == GRADED_KEYS
    # per-split figures per agent, never summed (the sweep's own set, one seed each)
    assert mine["aggregates"]["demo.txt"]["metrics"]["any_medal_percentage"]["mean"] == 100.0
    assert theirs["aggregates"]["demo.txt"]["metrics"]["valid_submissions_percentage"]["mean"] == 50.0
    assert (mine["total_runs"], mine["total_valid_submissions"], mine["total_gold_medals"]) == (2, 2, 2)
    assert (
        theirs["total_runs"],
        theirs["total_runs_with_submissions"],
        theirs["total_valid_submissions"],
    ) == (2, 2, 1)
    assert theirs["total_gold_medals"] == 0
    assert {r["agent_id"] for r in mine["competition_reports"]} == {"A"}
    rows = {Path(r["run_dir"]).name: r["agent_id"] for r in theirs["competition_reports"]}
    assert rows == {"demo-diabetes_31_0": "probe/b", "demo-breast-cancer_31_1": "probe/b"}
    # each agent's report as a file of its own, upstream's keys, one per directory
    assert report["agent_reports"] == {
        "A": "by_agent/A/grading_report.json",
        "probe/b": "by_agent/probe_b/grading_report.json",
    }
    for agent, rel in report["agent_reports"].items():
        assert json.loads((g / rel).read_text()) == report["by_agent"][agent]
    out = proc.stdout
    assert "agent A: runs 2, with submission 2, valid 2, medals 2" in out
    assert "agent probe/b: runs 2, with submission 2, valid 1, medals 0" in out
    assert any(line.split()[:2] == ["probe/b", "demo-breast-cancer"] for line in out.splitlines())
    csv = pd.read_csv(g / "summary.csv")
    overall = csv[csv["competition_id"] == "OVERALL"].set_index("agent_id")
    assert (
        overall.loc["A", "any_medal_pct_mean"] == 100.0
        and overall.loc["probe/b", "valid_submission_pct_mean"] == 50.0
    )
    assert "Competition set: competition set demo.txt (2 competitions)." in (g / "summary.md").read_text()

    # control: the same runs naming no agent, in a group whose sweep.json names none, are one agent's
    # pairs: probe/b's later array supersedes A's runs, and A's perfect numbers are lost; upstream's
    # keys are at the top again and the per-agent files of the earlier grading are gone
    for meta_path in g.glob("*/metadata.json"):
        meta = json.loads(meta_path.read_text())
        meta.pop("agent_id", None)
        meta_path.write_text(json.dumps(meta))
    (g / "sweep.json").write_text(
        json.dumps({"submissions": [{"array_job_id": "30"}, {"array_job_id": "31"}], "tasks": []})
    )
    assert grade([str(g), "--data-dir", str(demo_data)], clean_env, tmp_path).returncode == 0
    mixed = json.loads((g / "grading_report.json").read_text())
    assert list(mixed) == GRADED_KEYS and mixed["total_runs"] == 2 and mixed["total_gold_medals"] == 0
    assert sorted(Path(s["run_dir"]).name for s in mixed["superseded_runs"]) == [
        "demo-breast-cancer_30_1",
        "demo-diabetes_30_0",
    ]
    assert not list((g / "by_agent").glob("*/grading_report.json"))
