"""`mlebench-hpc grade` per split: a sweep of 2 demo competitions x 3 seeds with one pair cancelled
(no run), graded as real processes; `aggregates` in grading_report.json,
--split NAME|FILE, --num-seeds, --pad-missing, the seed pairing note, refusals, and
`mlebench-hpc aggregate` on the written report. The figures are upstream's rules worked by hand;
tests/conformance/aggregation/ checks the module against upstream's own script."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_grade_cli import CLI, answers, grade, make_run, sweep_meta

METRICS = [
    "total_competitions",
    "submission_exists_percentage",
    "valid_submissions_percentage",
    "above_median_percentage",
    "gold_medal_percentage",
    "silver_medal_percentage",
    "bronze_medal_percentage",
    "any_medal_percentage",
]


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLEBENCH_HPC_CONFIG", "MLEBENCH_DIR")}
    env["HOME"] = str(tmp_path / "home")
    return env


@pytest.fixture()
def sweep(demo_data: Path, tmp_path: Path) -> Path:
    """demo-diabetes seeds 0, 1 perfect (gold), 2 a constant (valid, no medal); demo-breast-cancer
    seed 0 cancelled before it ran (no run), 1 and 2 perfect."""
    g = tmp_path / "sweep-demo"
    db, bc = answers(demo_data, "demo-diabetes"), answers(demo_data, "demo-breast-cancer")
    subs = {
        ("demo-diabetes", 0): db,
        ("demo-diabetes", 1): db,
        ("demo-diabetes", 2): db.assign(target=150.0),
        ("demo-breast-cancer", 1): bc.assign(target=bc["target"].astype(float)),
        ("demo-breast-cancer", 2): bc.assign(target=bc["target"].astype(float)),
    }
    for (comp, seed), sub in subs.items():
        make_run(g, f"{comp}_40_{seed}", sweep_meta(comp, seed, "40", "finished", demo_data), sub)
    listed = tmp_path / "demo.txt"
    listed.write_text("demo-diabetes\ndemo-breast-cancer\n")
    asked = {
        "competitions": ["demo-diabetes", "demo-breast-cancer"],
        "competitions_file": str(listed),
        "competition_set": "demo.txt",
        "split": None,
        "seeds": 3,
    }
    (g / "sweep.json").write_text(
        json.dumps({"submissions": [{"array_job_id": "40", "asked": asked}], "tasks": []})
    )
    return g


def report(g: Path) -> dict[str, Any]:
    return json.loads((g / "grading_report.json").read_text())


def test_a_sweep_reports_its_own_set_upstreams_way(
    sweep: Path, demo_data: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    proc = grade([str(sweep), "--data-dir", str(demo_data), "--no-summary"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    aggs = report(sweep)["aggregates"]
    assert list(aggs) == ["demo.txt"]  # no upstream split is covered by demo competitions
    e = aggs["demo.txt"]
    # complete seeds only: 2 (breast-cancer has 2 runs); upstream pairs by report order, so its seed 1
    # is diabetes seed 0 with breast-cancer seed 1: both gold, and seed 2 too
    assert (e["num_seeds_averaged"], e["num_competitions_per_seed"], e["split_source"]) == (2, 2, "sweep")
    assert list(e["metrics"]) == METRICS
    assert list(e["metrics"]["any_medal_percentage"]) == ["mean", "ci_lower", "ci_upper", "standard_error"]
    assert e["metrics"]["any_medal_percentage"] == {
        "mean": 100.0,
        "ci_lower": 100.0,
        "ci_upper": 100.0,
        "standard_error": 0.0,
    }
    assert e["metrics"]["total_competitions"]["mean"] == 2.0 and "pad_missing" not in e
    assert "its seed 1 joins recorded seeds 0, 1" in e["seed_pairing_note"]
    out = proc.stdout
    assert out.index("runs 5, with submission 5") < out.index("per split (upstream's aggregation")
    row = next(line for line in out.splitlines() if line.startswith("demo.txt "))
    assert row.split()[1:4] == ["2", "2", "100.0"] and "[100.0, 100.0]" in row
    assert "note: upstream's order pairs runs of different recorded seeds" in out

    # --pad-missing: 3 seeds, the third (diabetes 2: no medal; breast-cancer: padded) at 0%
    proc = grade([str(sweep), "--data-dir", str(demo_data), "--no-summary", "--pad-missing"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    e = report(sweep)["aggregates"]["demo.txt"]
    assert e["num_seeds_averaged"] == 3 and e["pad_missing"] is True
    m = e["metrics"]["any_medal_percentage"]
    sem = math.sqrt(((100 - 200 / 3) ** 2 * 2 + (200 / 3) ** 2) / 2) / math.sqrt(3)
    assert math.isclose(m["mean"], 200 / 3) and math.isclose(m["standard_error"], sem)
    assert math.isclose(m["ci_lower"], 200 / 3 - 1.96 * sem) and math.isclose(
        m["ci_upper"], 200 / 3 + 1.96 * sem
    )
    assert math.isclose(e["metrics"]["submission_exists_percentage"]["mean"], 500 / 6)
    assert "demo.txt (padded)" in proc.stdout

    # mlebench-hpc aggregate on the written report: the same figures, printed as upstream prints
    out = subprocess.run(
        [
            CLI,
            "aggregate",
            "--grading-reports",
            str(sweep / "grading_report.json"),
            "--split",
            str(tmp_path / "demo.txt"),
            "--pad-missing",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert json.loads(out.stdout) == {
        k: e[k] for k in ("num_seeds_averaged", "num_competitions_per_seed", "metrics")
    }
    assert "note: split demo: upstream's order pairs" in out.stderr

    # --num-seeds 1: the first seed only
    proc = grade(
        [str(sweep), "--data-dir", str(demo_data), "--no-summary", "--num-seeds", "1"], env, tmp_path
    )
    e = report(sweep)["aggregates"]["demo.txt"]
    assert proc.returncode == 0 and e["num_seeds_averaged"] == 1 and e["num_seeds_requested"] == 1
    assert e["metrics"]["any_medal_percentage"]["standard_error"] == 0.0


def test_splits_asked_for_refuse_as_upstream_with_the_report_written(
    sweep: Path, demo_data: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    mine = tmp_path / "mine.txt"
    mine.write_text("demo-diabetes\ndemo-breast-cancer\ndemo-absent\n")
    args = [str(sweep), "--data-dir", str(demo_data), "--no-summary"]
    proc = grade([*args, "--split", str(mine), "--split", "low", "--num-seeds", "3"], env, tmp_path)
    assert proc.returncode == 1
    aggs = report(sweep)["aggregates"]  # written all the same, runs and all
    assert report(sweep)["total_runs"] == 5 and list(aggs) == ["demo.txt", "mine", "low"]
    assert aggs["mine"]["split_source"] == "file" and aggs["mine"]["split_file"] == str(mine.resolve())
    assert "metrics" not in aggs["mine"] and "demo-absent" in aggs["mine"]["error"]
    assert "use --pad-missing" in aggs["mine"]["error"] and "\n" not in aggs["mine"]["error"]
    assert aggs["low"]["split_source"] == "upstream" and aggs["low"]["num_competitions_per_seed"] == 22
    assert aggs["low"]["split_file"].endswith("mlebench_hpc/data/splits/low.txt")  # shipped, no MLEBENCH_DIR
    # the sweep's own set, not asked for: its refusal (3 seeds, 2 complete) is no error of the command
    assert "only 2 complete seeds" in aggs["demo.txt"]["error"]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and errors[0].startswith("error: split mine: no runs of 1 of the split's 3")
    # padded, the file split has figures; 'all' is split75, of which the group ran nothing
    proc = grade([*args, "--split", str(mine), "--pad-missing"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert report(sweep)["aggregates"]["mine"]["num_competitions_per_seed"] == 3
    proc = grade(
        [*args, "--split", "all", "--split", str(mine), "--pad-missing", "--num-seeds", "4"], env, tmp_path
    )
    assert proc.returncode == 1 and list(report(sweep)["aggregates"]) == ["demo.txt", "split75", "mine"]
    assert "error: split split75: no runs of any of the split's 75 competitions: give" in proc.stderr
    assert "note: upstream renamed all.txt to split75.txt" in proc.stderr
    assert "error: split mine: --num-seeds 4 but only 3 seeds: ask for fewer" in proc.stderr
    # an unknown split is a usage error before anything is graded
    (sweep / "grading_report.json").unlink()
    proc = grade([*args, "--split", "nosuch"], env, tmp_path)
    assert proc.returncode == 2 and "nosuch" in proc.stderr and not (sweep / "grading_report.json").exists()


def test_runs_are_written_in_seed_order_so_upstream_pairs_recorded_seeds(
    demo_data: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    """A resumed sweep: breast-cancer seed 0 ran in a later array (52), so by path its seed 1 (array 40)
    comes first; the report lists seed 0 first and upstream's seed k is recorded seed k."""
    g = tmp_path / "resumed"
    db, bc = answers(demo_data, "demo-diabetes"), answers(demo_data, "demo-breast-cancer")
    for comp, seed, array, sub in (
        ("demo-diabetes", 0, "40", db),
        ("demo-diabetes", 1, "40", db.assign(target=150.0)),
        ("demo-breast-cancer", 0, "52", bc.assign(target=bc["target"].astype(float))),
        ("demo-breast-cancer", 1, "40", bc.iloc[:3]),
    ):
        make_run(g, f"{comp}_{array}_{seed}", sweep_meta(comp, seed, array, "finished", demo_data), sub)
    (g / "sweep.json").write_text(
        json.dumps({"submissions": [{"array_job_id": "40"}, {"array_job_id": "52"}], "tasks": []})
    )
    mine = tmp_path / "two.txt"
    mine.write_text("demo-diabetes\ndemo-breast-cancer\n")
    proc = grade([str(g), "--data-dir", str(demo_data), "--no-summary", "--split", str(mine)], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    rep = report(g)
    seeds = [(r["competition_id"], r["seed"]) for r in rep["competition_reports"]]
    assert seeds == [
        ("demo-breast-cancer", 0),
        ("demo-breast-cancer", 1),
        ("demo-diabetes", 0),
        ("demo-diabetes", 1),
    ]
    e = rep["aggregates"]["two"]
    assert "seed_pairing_note" not in e and "note: upstream's order" not in proc.stdout
    # seed 0: both gold (100%); seed 1: diabetes no medal, breast-cancer invalid (0%); in path order
    # upstream would have paired them 50% and 50% (SEM 0)
    assert e["metrics"]["any_medal_percentage"]["mean"] == 50.0
    assert e["metrics"]["any_medal_percentage"]["standard_error"] == 50.0
    assert e["metrics"]["valid_submissions_percentage"]["mean"] == 75.0


def test_make_grade_passes_args(sweep: Path, demo_data: Path, tmp_path: Path, env: dict[str, str]) -> None:
    root = Path(__file__).resolve().parents[2]
    make = [
        "make",
        "-s",
        "-C",
        str(root),
        "-o",
        ".venv/.installed",
        "grade",
        f"RUN={sweep}",
        f"DATA_DIR={demo_data}",
    ]
    proc = subprocess.run([*make, "ARGS=--no-summary --pad-missing"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (
        report(sweep)["aggregates"]["demo.txt"]["pad_missing"] is True and "demo.txt (padded)" in proc.stdout
    )
    proc = subprocess.run([*make, "ARGS=--no-summary --split low"], capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "error: split low: no runs of 22 of the split's 22" in proc.stderr


def test_upstream_splits_a_group_covers_are_reported(tmp_path: Path, env: dict[str, str]) -> None:
    """A group with runs of every spaceship-titanic competition (one: it) reports that split with no
    --split; dev (7) is not covered and is left out."""
    from mlebench_hpc.results.aggregation import add_aggregates

    comps = [
        {
            "competition_id": "spaceship-titanic",
            "seed": s,
            "gold_medal": s == 0,
            "silver_medal": False,
            "bronze_medal": False,
            "above_median": s == 0,
            "submission_exists": True,
            "valid_submission": True,
        }
        for s in range(3)
    ]
    group: dict[str, Any] = {"competition_reports": comps}
    assert add_aggregates(group, {}, {}, [], None) == []
    e = group["aggregates"]["spaceship-titanic"]
    assert list(group["aggregates"]) == ["spaceship-titanic"] and e["split_source"] == "upstream"
    assert e["metrics"]["gold_medal_percentage"]["mean"] == 100 / 3 and e["num_seeds_averaged"] == 3
