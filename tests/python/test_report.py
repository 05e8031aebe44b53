"""Report building with the real grading engine on real prepared demo data (no mocks)."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlebench_hpc.config import UPSTREAM_DEFAULT_DATA_DIR
from mlebench_hpc.grading.messages import one_line
from mlebench_hpc.results.find_runs import (
    DirResolver,
    RunSpec,
    RunSpecError,
    find_run_dirs,
    specs_from_dir,
    specs_from_jsonl,
)
from mlebench_hpc.results.grade_one import grade_run
from mlebench_hpc.results.pool import grade_runs
from mlebench_hpc.results.report import CompetitionReport, aggregate
from mlebench_hpc.results.report_output import format_table, write_json_atomic
from upstream_keys import GROUP_KEYS, REPORT_FIELDS, UPSTREAM_REPORT_FIELDS

BIN = Path(sys.executable).parent


def answers(data: Path, comp: str) -> pd.DataFrame:
    return pd.read_csv(data / comp / "prepared" / "private" / "test.csv")[["id", "target"]]


def expected_thresholds(data: Path, comp: str) -> tuple[float, float, float, float]:
    """Upstream's rule for n < 100 teams, computed here from the leaderboard file."""
    scores = pd.read_csv(data / comp / "leaderboard.csv")["score"].tolist()
    n = len(scores)
    assert n < 100
    pos = [max(1, int(n * f)) for f in (0.1, 0.2, 0.4)]
    return scores[pos[0] - 1], scores[pos[1] - 1], scores[pos[2] - 1], float(np.median(scores))


def make_run(root: Path, name: str, meta: dict[str, Any], sub: pd.DataFrame | None) -> Path:
    """A run directory as the job lays it out: <competition>_<jobid>, submission/ and logs/."""
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


def spec_for(data: Path, comp: str, sub_path: Path, **kw: Any) -> RunSpec:
    return RunSpec(competition_id=comp, submission_path=sub_path, data_dir=data, **kw)


# ---------------------------------------------------------------- grading single runs


def test_valid_invalid_missing_reports(demo_data: Path, tmp_path: Path) -> None:
    ans = answers(demo_data, "demo-diabetes")
    perfect = tmp_path / "perfect.csv"
    ans.to_csv(perfect, index=False)
    half = tmp_path / "half.csv"
    ans.iloc[: len(ans) // 2].to_csv(half, index=False)
    mean_pred = tmp_path / "mean.csv"
    ans.assign(target=150.0).to_csv(mean_pred, index=False)

    gold, silver, bronze, median = expected_thresholds(demo_data, "demo-diabetes")
    r = grade_run(
        spec_for(demo_data, "demo-diabetes", perfect, seed=3, isolation={"ok": True})
    ).report.to_dict()
    assert list(r) == REPORT_FIELDS
    assert r["score"] == 0.0 and r["valid_submission"] and r["submission_exists"]
    assert r["gold_medal"] and r["any_medal"] and r["above_median"] and not r["silver_medal"]
    assert r["is_lower_better"] is True
    assert (
        r["gold_threshold"],
        r["silver_threshold"],
        r["bronze_threshold"],
        r["median_threshold"],
    ) == pytest.approx((gold, silver, bronze, median))
    assert r["seed"] == 3 and r["isolation"] == {"ok": True} and r["error"] is None
    assert r["grading_backend"] == "builtin" and r["grading_backend_version"].startswith("mlebench-hpc")
    assert "leaderboard" in r["thresholds_source"]

    r = grade_run(spec_for(demo_data, "demo-diabetes", mean_pred)).report.to_dict()
    rmse = round(math.sqrt(float(((ans["target"] - 150.0) ** 2).mean())), 5)
    assert r["score"] == pytest.approx(rmse, abs=1e-5)
    assert r["any_medal"] is (rmse <= bronze) and r["above_median"] is (rmse < median)

    r = grade_run(spec_for(demo_data, "demo-diabetes", half)).report.to_dict()
    assert r["submission_exists"] and not r["valid_submission"] and r["score"] is None
    assert not r["any_medal"] and "rows" in r["error"] and "\n" not in r["error"]

    missing = grade_run(spec_for(demo_data, "demo-diabetes", tmp_path / "nope.csv"))
    r = missing.report.to_dict()
    assert missing.graded and not r["submission_exists"] and not r["valid_submission"]
    assert r["error"].startswith("no submission") and r["gold_threshold"] == pytest.approx(gold)


def test_setup_errors_are_reports_not_crashes(demo_data: Path, tmp_path: Path) -> None:
    sub = tmp_path / "s.csv"
    answers(demo_data, "demo-diabetes").to_csv(sub, index=False)
    unknown = grade_run(spec_for(demo_data, "no-such-competition", sub))
    assert not unknown.graded and "no-such-competition" in unknown.report.error
    assert unknown.report.submission_exists and not unknown.report.valid_submission
    empty = tmp_path / "empty-data"
    empty.mkdir()
    unprepared = grade_run(spec_for(empty, "demo-diabetes", sub))
    assert not unprepared.graded and "not prepared" in unprepared.report.error
    assert str(empty) in unprepared.report.error
    assert list(unprepared.report.to_dict()) == REPORT_FIELDS


def test_parallel_equals_sequential(demo_data: Path, tmp_path: Path) -> None:
    specs = []
    for i, comp in enumerate(["demo-breast-cancer", "demo-diabetes"] * 3):
        ans = answers(demo_data, comp)
        path = tmp_path / f"{i}.csv"
        if i % 3 == 0:
            ans.to_csv(path, index=False)
        elif i % 3 == 1:
            ans.iloc[1:].to_csv(path, index=False)
        specs.append(spec_for(demo_data, comp, path, seed=i))
    specs.append(spec_for(tmp_path, "demo-diabetes", tmp_path / "0.csv"))  # unprepared there

    def strip(results: list[Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.report.to_dict().items() if k != "created_at"} for r in results]

    seq, par = grade_runs(specs, jobs=1, progress=False), grade_runs(specs, jobs=2, progress=False)
    assert strip(seq) == strip(par)
    assert [r.graded for r in par] == [True] * 6 + [False]
    assert [r.report.seed for r in par[:6]] == list(range(6))


# ---------------------------------------------------------------- finding runs


def test_find_run_dirs_nested_and_not_inside_runs(tmp_path: Path) -> None:
    meta = {"competition_id": "demo-diabetes"}
    a = make_run(tmp_path, "g1/demo-diabetes_1", meta, None)
    b = make_run(tmp_path, "g1/deeper/still/demo-diabetes_2", meta, None)
    # an agent's code/ may hold its own metadata.json: not a run
    (a / "code").mkdir()
    (a / "code" / "metadata.json").write_text(json.dumps(meta))
    (tmp_path / ".git" / "x").mkdir(parents=True)
    (tmp_path / ".git" / "x" / "metadata.json").write_text(json.dumps(meta))
    (tmp_path / "grading_report.json").write_text("{}")
    assert find_run_dirs(tmp_path) == [b, a]  # sorted by path: g1/deeper/... first
    assert find_run_dirs(a) == [a]  # a run directory itself
    c1 = make_run(tmp_path, "g3/demo-diabetes_3", {**meta, "seed": ""}, None)  # "" outside sweeps
    c2 = make_run(tmp_path, "g3/demo-diabetes_4", {**meta, "seed": "2"}, None)
    bad = make_run(tmp_path, "g2/bad", {"no": "competition"}, None)
    warnings: list[str] = []
    specs = specs_from_dir(
        tmp_path, DirResolver(data_dir=tmp_path, config_lookup=lambda _k: None), warnings.append
    )
    assert [s.run_dir for s in specs] == [b, a, c1, c2]
    assert [s.seed for s in specs[2:]] == [None, 2]
    assert len(warnings) == 1 and str(bad) in warnings[0] and "competition_id" in warnings[0]
    assert specs[1].submission_path == a / "submission" / "submission.csv"


def test_jsonl_specs(tmp_path: Path) -> None:
    f = tmp_path / "subs.jsonl"
    f.write_text(
        "# a comment\n\n"
        '{"competition_id": "demo-diabetes", "submission_path": "rel/s.csv"}\n'
        "// another\n"
        '{"competition_id": "demo-breast-cancer", "submission_path": "/abs/s.csv", "seed": 2}\n'
    )
    specs = specs_from_jsonl(f, DirResolver(data_dir=tmp_path))
    assert [(s.competition_id, s.submission_path, s.seed) for s in specs] == [
        ("demo-diabetes", tmp_path / "rel" / "s.csv", None),
        ("demo-breast-cancer", Path("/abs/s.csv"), 2),
    ]
    f.write_text('{"competition_id": "x"}\n')
    with pytest.raises(RunSpecError, match="subs.jsonl:1"):
        specs_from_jsonl(f, DirResolver(data_dir=tmp_path))


def test_data_dir_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "cfg.env"
    cfg.write_text(f"DATA_DIR={tmp_path}/from-config\nMLEBENCH_DIR={tmp_path}/mle\n")
    monkeypatch.setenv("MLEBENCH_HPC_CONFIG", str(cfg))
    monkeypatch.delenv("MLEBENCH_DIR", raising=False)
    # --data-dir, else the config's DATA_DIR: a run's recorded data_dir is never asked for
    assert DirResolver(data_dir=tmp_path / "cli").data_dir() == tmp_path / "cli"
    assert DirResolver().data_dir() == tmp_path / "from-config"
    assert DirResolver().mlebench_dir() == tmp_path / "mle"
    monkeypatch.setenv("MLEBENCH_DIR", str(tmp_path / "env-mle"))
    assert DirResolver().mlebench_dir() == tmp_path / "env-mle"
    assert DirResolver(mlebench_dir=tmp_path / "opt").mlebench_dir() == tmp_path / "opt"
    cfg.write_text("RUN_GROUP=x\n")  # a config without DATA_DIR
    assert DirResolver().data_dir() == UPSTREAM_DEFAULT_DATA_DIR
    # the config is read only when needed: a broken one does not matter with --data-dir
    cfg.write_text("NOT_A_KEY=1\n")
    assert DirResolver(data_dir=tmp_path).data_dir() == tmp_path
    assert DirResolver(data_dir=tmp_path).scratch_dir() is None  # scratch then known by its layout
    cfg.write_text(f"SCRATCH_DIR={tmp_path}/s\n")
    assert DirResolver().scratch_dir() == Path(os.path.realpath(tmp_path / "s"))


# ---------------------------------------------------------------- output


def test_aggregate_write_and_table(demo_data: Path, tmp_path: Path) -> None:
    ans = answers(demo_data, "demo-breast-cancer")
    good = tmp_path / "good.csv"
    ans.assign(target=ans["target"].astype(float)).to_csv(good, index=False)
    runs = [
        grade_run(spec_for(demo_data, "demo-breast-cancer", good, seed=0)).report,
        grade_run(spec_for(demo_data, "demo-breast-cancer", tmp_path / "no.csv", seed=1)).report,
    ]
    group = aggregate(runs, {"backend": "builtin", "version": "v"})
    assert list(group) == GROUP_KEYS
    assert (
        group["total_runs"],
        group["total_runs_with_submissions"],
        group["total_valid_submissions"],
        group["total_medals"],
        group["total_gold_medals"],
    ) == (2, 1, 1, 1, 1)
    assert group["grading_backend"] == "builtin" and "created_at" in group
    out = tmp_path / "out" / "grading_report.json"
    write_json_atomic(out, group)
    assert json.loads(out.read_text())["total_runs"] == 2
    assert [p.name for p in out.parent.iterdir()] == ["grading_report.json"]  # no temporary left
    table = format_table(runs).splitlines()
    assert table[0].split()[:6] == ["competition", "seed", "run", "valid", "score", "medal"]
    assert table[2].split()[:6] == ["demo-breast-cancer", "0", "good.csv", "yes", "1", "gold"]
    assert table[3].split()[:4] == ["demo-breast-cancer", "1", "no.csv", "missing"]
    assert any("no submission" in line for line in table[4:])


def test_competition_report_is_upstreams_then_ours_and_round_trips(demo_data: Path, tmp_path: Path) -> None:
    sub = tmp_path / "s.csv"
    answers(demo_data, "demo-diabetes").to_csv(sub, index=False)
    report = grade_run(spec_for(demo_data, "demo-diabetes", sub, seed=2)).report
    assert isinstance(report, CompetitionReport) and report.medal == "gold"
    data = json.loads(json.dumps(report.to_dict()))
    assert list(data) == REPORT_FIELDS
    assert data["created_at"] == report.created_at.isoformat()
    assert CompetitionReport.from_dict(data) == report
    # upstream's own report (no extras) reads too; the extras are then unknown
    upstream = CompetitionReport.from_dict({k: data[k] for k in UPSTREAM_REPORT_FIELDS})
    assert upstream.score == report.score and upstream.run_dir is None and upstream.seed is None


def test_one_line_drops_upstream_preamble() -> None:
    msg = (
        "Submission invalid! The attempt to grade the submission has resulted in the following "
        "error message:\nSubmission has 3 rows\nbut 4 expected"
    )
    assert one_line(msg) == "Submission invalid: Submission has 3 rows but 4 expected"
    assert len(one_line("x" * 1000)) == 400


def test_cleanup_demo_copy_is_independent(demo_data: Path, tmp_path: Path) -> None:
    """Grading reads the data dir only: a copy graded elsewhere gives the same score."""
    copy = tmp_path / "copy"
    shutil.copytree(demo_data / "demo-diabetes", copy / "demo-diabetes")
    sub = tmp_path / "s.csv"
    answers(demo_data, "demo-diabetes").assign(target=100.0).to_csv(sub, index=False)
    a = grade_run(spec_for(demo_data, "demo-diabetes", sub)).report.score
    b = grade_run(spec_for(copy, "demo-diabetes", sub)).report.score
    assert a == b and a is not None


def test_leaderboard_placement_in_the_report(demo_data: Path, tmp_path: Path) -> None:
    """Beyond upstream: rank and share of the leaderboard's teams beaten, by hand from the file."""
    ans = answers(demo_data, "demo-diabetes")
    mean_pred = tmp_path / "mean.csv"
    ans.assign(target=150.0).to_csv(mean_pred, index=False)
    r = grade_run(spec_for(demo_data, "demo-diabetes", mean_pred)).report.to_dict()
    board = pd.read_csv(demo_data / "demo-diabetes" / "leaderboard.csv")["score"].to_numpy()
    score = r["score"]
    # lower is better: teams with a lower RMSE are better, teams with a higher one are beaten
    assert r["leaderboard_rank"] == 1 + int((board < score).sum())
    assert r["leaderboard_share_beaten"] == pytest.approx((board > score).sum() / len(board), abs=1e-6)
    assert r["leaderboard_teams"] == len(board)
    invalid = grade_run(spec_for(demo_data, "demo-diabetes", tmp_path / "missing.csv")).report.to_dict()
    assert invalid["leaderboard_rank"] is None and invalid["leaderboard_share_beaten"] is None
