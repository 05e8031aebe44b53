"""Summary numbers (mean +- s.e. over seeds) against hand-computed values, and the written files."""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlebench_hpc.competition_sets import AskedSet
from mlebench_hpc.results.report import CompetitionReport
from mlebench_hpc.results.summary import (
    mean_se,
    seed_keys,
    summarize,
    summarize_agents,
    to_markdown,
    write_summaries,
)


def rep(
    comp: str,
    seed: Any,
    score: float | None,
    medal: str | None = None,
    *,
    exists: bool = True,
    lower: bool = False,
    run_dir: str | None = None,
    beats: float | None = None,
) -> CompetitionReport:
    """A report as grade makes it (only the fields the summary reads matter)."""
    return CompetitionReport.from_dict(
        {
            "competition_id": comp,
            "score": score,
            "gold_threshold": 0.9,
            "silver_threshold": 0.8,
            "bronze_threshold": 0.7,
            "median_threshold": 0.5,
            "any_medal": medal is not None,
            "gold_medal": medal == "gold",
            "silver_medal": medal == "silver",
            "bronze_medal": medal == "bronze",
            "above_median": score is not None and score > 0.5,
            "submission_exists": exists,
            "valid_submission": score is not None,
            "is_lower_better": lower,
            "created_at": "2026-01-01T00:00:00",
            "submission_path": f"/runs/{comp}_{seed}/submission/submission.csv",
            "grading_backend": "builtin",
            "grading_backend_version": "test",
            "thresholds_source": "hand",
            "run_dir": run_dir or f"/runs/{comp}_{seed}",
            "seed": seed,
            "error": None if score is not None else "invalid",
            "isolation": None,
            "leaderboard_rank": None if beats is None else 1,
            "leaderboard_share_beaten": beats,
            "leaderboard_teams": None if beats is None else 10,
        }
    )


# Two competitions x three seeds.
#   seed 0: a gold (0.95), b bronze (0.72)   -> any medal 100 %, valid 100 %
#   seed 1: a silver (0.85), b invalid       -> any medal  50 %, valid  50 %
#   seed 2: a no medal (0.60), b missing     -> any medal   0 %, valid  50 %
# Share of the leaderboard beaten: a 0.9, 0.6, 0.3; b 0.5, then none (no valid score).
REPORTS = [
    rep("a", 0, 0.95, "gold", beats=0.9),
    rep("b", 0, 0.72, "bronze", beats=0.5),
    rep("a", 1, 0.85, "silver", beats=0.6),
    rep("b", 1, None),
    rep("a", 2, 0.60, beats=0.3),
    rep("b", 2, None, exists=False),
]


def test_mean_se_by_hand() -> None:
    ms = mean_se([100.0, 50.0, 0.0])
    assert ms is not None
    assert ms.mean == pytest.approx(50.0)
    # sd(ddof=1) = sqrt(((50)^2 + 0 + (50)^2) / 2) = 50; s.e. = 50 / sqrt(3)
    assert ms.se == pytest.approx(50.0 / math.sqrt(3))
    assert ms.text(2, "%") == "50.00% ± 28.87%"
    one = mean_se([42.0])
    assert one is not None and one.se is None and one.text() == "42.00 ± n/a"
    assert mean_se([]) is None


def test_overall_rates_over_seeds() -> None:
    s = summarize(REPORTS)
    assert s.competitions == ["a", "b"]
    assert s.seeds == ["0", "1", "2"]
    assert list(s.per_seed["any_medal"]) == [100.0, 50.0, 0.0]
    assert list(s.per_seed["valid_submission"]) == [100.0, 50.0, 50.0]
    assert s.overall["any_medal"].mean == pytest.approx(50.0)
    assert s.overall["any_medal"].se == pytest.approx(50.0 / math.sqrt(3))
    # valid: 100, 50, 50 -> mean 66.667, sd = sqrt((33.33^2 + 16.67^2 * 2) / 2) = 28.868, se = 16.667
    assert s.overall["valid_submission"].mean == pytest.approx(200.0 / 3)
    assert s.overall["valid_submission"].se == pytest.approx(50.0 / 3)
    # gold: 50, 0, 0 -> mean 16.667, se = sd(ddof=1)/sqrt(3) = 28.868/1.732 = 16.667
    assert s.overall["gold_medal"].mean == pytest.approx(50.0 / 3)
    assert s.overall["gold_medal"].se == pytest.approx(50.0 / 3)


def test_share_of_the_leaderboard_beaten() -> None:
    s = summarize(REPORTS)
    # per seed, the mean over both competitions (a run without a valid score beats none):
    # seed 0 (0.9 + 0.5) / 2 = 70 %, seed 1 (0.6 + 0) / 2 = 30 %, seed 2 (0.3 + 0) / 2 = 15 %
    assert s.share_beaten is not None and s.share_beaten.n == 3
    assert s.share_beaten.mean == pytest.approx(115.0 / 3)
    # deviations 31.667, -8.333, -23.333: sd(ddof=1) = sqrt(1616.67 / 2) = 28.431; se = 16.415
    assert s.share_beaten.se == pytest.approx(16.4148, abs=1e-4)
    df = s.per_competition.set_index("competition_id")
    assert df.loc["a", "share_beaten_mean"] == pytest.approx(0.6)
    assert df.loc["b", "share_beaten_mean"] == pytest.approx(0.5)


def test_per_competition_rows() -> None:
    df = summarize(REPORTS).per_competition.set_index("competition_id")
    a, b = df.loc["a"], df.loc["b"]
    assert (a["runs"], a["valid"], a["gold"], a["silver"], a["bronze"], a["any_medal"]) == (3, 3, 1, 1, 0, 2)
    assert a["above_median"] == 3
    # scores 0.95, 0.85, 0.60: mean 0.8, sd = sqrt((0.15^2 + 0.05^2 + 0.2^2)/2) = 0.18028, se = 0.10408
    assert a["score_mean"] == pytest.approx(0.8)
    assert a["score_se"] == pytest.approx(math.sqrt((0.15**2 + 0.05**2 + 0.2**2) / 2) / math.sqrt(3))
    assert (b["runs"], b["submissions"], b["valid"], b["bronze"], b["any_medal"]) == (3, 2, 1, 1, 1)
    assert b["score_mean"] == pytest.approx(0.72) and pd.isna(b["score_se"])  # one score: no s.e.
    assert a["gold_threshold"] == 0.9 and a["median_threshold"] == 0.5


def test_single_seed_has_no_standard_error() -> None:
    s = summarize([rep("a", 7, 0.95, "gold"), rep("b", 7, 0.1)])
    assert s.overall["any_medal"].mean == 50.0 and s.overall["any_medal"].se is None
    assert "50.00% ± n/a" in to_markdown(s, "g", None)


def test_missing_pair_counts_as_failure_and_duplicates_count_once() -> None:
    reports = [
        rep("a", 0, 0.95, "gold"),
        rep("b", 0, 0.95, "gold"),
        rep("a", 1, 0.95, "gold"),
        rep("a", 1, 0.1, run_dir="/runs/a_1_rerun"),
    ]
    s = summarize(reports)
    # seed 1 has no run of b: 1 of 2 competitions -> 50 %; the second run of (a, 1) is ignored
    assert list(s.per_seed["any_medal"]) == [100.0, 50.0]
    assert any("no run" in n for n in s.notes) and any("more than one run" in n for n in s.notes)


def test_seedless_runs_are_numbered_per_competition_in_run_order() -> None:
    reports = [
        rep("a", None, 0.9, "gold", run_dir="/g/a_2"),
        rep("a", None, 0.1, run_dir="/g/a_1"),
        rep("b", None, 0.1, run_dir="/g/b_1"),
    ]
    assert seed_keys(reports) == ["run1", "run0", "run0"]


def test_written_files(tmp_path: Path) -> None:
    warnings: list[str] = []
    paths = write_summaries(REPORTS, tmp_path, title="hand-built", warn=warnings.append)
    assert [p.name for p in paths] == ["summary.csv", "summary.md", "summary.png", "report.html"]
    assert not warnings
    csv = pd.read_csv(tmp_path / "summary.csv")
    assert list(csv["competition_id"]) == ["a", "b", "OVERALL", "LEADERBOARD"]
    assert list(csv["row_type"]) == ["COMPETITION", "COMPETITION", "OVERALL", "LEADERBOARD"]
    overall = csv.set_index("competition_id").loc["OVERALL"]
    assert overall["runs"] == 6 and overall["n_seeds"] == 3 and overall["n_competitions"] == 2
    assert overall["any_medal_pct_mean"] == pytest.approx(50.0)
    assert overall["any_medal_pct_se"] == pytest.approx(28.8675, abs=1e-4)
    md = (tmp_path / "summary.md").read_text()
    assert "**Any medal: 50.00% ± 28.87%** (3 seeds)" in md
    assert "**Valid submission: 66.67% ± 16.67%** (3 seeds)" in md
    assert (
        "| a | 3 | 3 | 1 | 1 | 0 | 2 | 3 | 0.8 ± 0.10408 (n=3) | 60.0% | 0.9 | 0.8 | 0.7 | 0.5 | higher |"
        in md
    )
    assert "- Leaderboard teams beaten (beyond upstream): 38.33% ± 16.41% (3 seeds;" in md
    assert overall["share_beaten_pct_mean"] == pytest.approx(115.0 / 3)
    png = (tmp_path / "summary.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_nothing_graded_still_writes_files(tmp_path: Path) -> None:
    """An unprepared competition: no scores, no thresholds, direction unknown."""
    r = replace(
        rep("c", 0, None),
        gold_threshold=None,
        silver_threshold=None,
        bronze_threshold=None,
        median_threshold=None,
        is_lower_better=None,
        thresholds_source=None,
    )
    paths = write_summaries([r], tmp_path, title="t", warn=pytest.fail)
    assert len(paths) == 4
    md = (tmp_path / "summary.md").read_text()
    assert "| c | 1 | 0 | 0 | 0 | 0 | 0 | 0 | - | - | - | - | - | - | ? | - |" in md
    assert "Leaderboard teams beaten" not in md  # no leaderboard: nothing to claim
    assert "**Any medal: 0.00% ± n/a** (1 seeds)" in md


def test_png_skipped_with_one_warning_without_matplotlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    warnings: list[str] = []
    paths = write_summaries(REPORTS, tmp_path, title="t", warn=warnings.append)
    assert [p.name for p in paths] == ["summary.csv", "summary.md", "report.html"]
    assert len(warnings) == 1 and "matplotlib" in warnings[0] and "summary.png skipped" in warnings[0]
    assert not (tmp_path / "summary.png").exists()


# ---------------------------------------------------------------- several agents, competition sets

# Agent B on the same two competitions x three seeds, worse than REPORTS (agent A):
#   seed 0: a bronze, b invalid  -> any medal 50 %; seed 1: a none, b none -> 0 %; seed 2: as seed 1
B_REPORTS = [
    rep("a", 0, 0.75, "bronze"),
    rep("b", 0, None),
    rep("a", 1, 0.55),
    rep("b", 1, 0.40),
    rep("a", 2, 0.30),
    rep("b", 2, None, exists=False),
]


def two_agents() -> list[CompetitionReport]:
    a = [replace(r, agent_id="A", run_dir=f"{r.run_dir}_A") for r in REPORTS]
    b = [replace(r, agent_id="B", run_dir=f"{r.run_dir}_B") for r in B_REPORTS]
    return b + a  # in no particular order


def test_each_agent_is_summarized_over_its_own_runs() -> None:
    sa, sb = summarize_agents(two_agents())
    assert (sa.agent_id, sb.agent_id) == ("A", "B")
    # A exactly as REPORTS alone
    alone = summarize(REPORTS)
    assert list(sa.per_seed["any_medal"]) == list(alone.per_seed["any_medal"]) == [100.0, 50.0, 0.0]
    assert sa.overall["any_medal"].mean == pytest.approx(50.0)
    # B: 50, 0, 0 -> mean 16.667, s.e. 16.667 (as gold for A above)
    assert list(sb.per_seed["any_medal"]) == [50.0, 0.0, 0.0]
    assert sb.overall["any_medal"].mean == pytest.approx(50.0 / 3)
    assert sb.overall["any_medal"].se == pytest.approx(50.0 / 3)
    assert list(sb.per_seed["valid_submission"]) == [50.0, 100.0, 50.0]
    # control: the same runs naming no agent are one agent's, and B's runs collide with A's per
    # (competition, seed): only one of each pair of runs counts, the other is dropped with a note
    mixed = summarize([replace(r, agent_id=None) for r in two_agents()])
    assert sum("more than one run" in n for n in mixed.notes) == 6
    assert len(summarize_agents([replace(r, agent_id=None) for r in two_agents()])) == 1


def test_a_competition_of_the_set_without_any_run_counts_as_a_failure() -> None:
    low = AskedSet(("low",), True, ("a", "b", "c"))
    s = summarize(REPORTS, low)
    assert s.competitions == ["a", "b", "c"]
    # seed 0: a gold, b bronze, c nothing -> 2 of 3; seed 1: 1 of 3; seed 2: 0 of 3
    assert list(s.per_seed["any_medal"]) == pytest.approx([200.0 / 3, 100.0 / 3, 0.0])
    c = s.per_competition.set_index("competition_id").loc["c"]
    assert c["runs"] == 0 and pd.isna(c["score_mean"])
    assert any("1 competition of upstream's split low (3 competitions) has no run" in n for n in s.notes)
    md = to_markdown(s, "g", None)
    assert "Competition set: upstream's split low (3 competitions)." in md
    # control: without the set, c is not known and the rate is over 2 competitions
    assert list(summarize(REPORTS).per_seed["any_medal"]) == [100.0, 50.0, 0.0]


def test_files_of_two_agents(tmp_path: Path) -> None:
    sets = {"A": AskedSet(("low",), True, ("a", "b")), "B": None}
    paths = write_summaries(
        two_agents(), tmp_path, title="two", warn=pytest.fail, notes=["group note"], sets=sets
    )
    assert [p.name for p in paths] == ["summary.csv", "summary.md", "summary.png", "report.html"]
    csv = pd.read_csv(tmp_path / "summary.csv")
    assert list(csv.columns[:2]) == ["agent_id", "competition_id"]
    lb = csv[csv["row_type"] == "LEADERBOARD"]
    assert list(lb["agent_id"]) == ["A", "B"] and lb["lb_low"].isna().all()  # n/a: no aggregates
    csv = csv[csv["row_type"] != "LEADERBOARD"]  # the rows before leaderboard rows were added
    assert list(zip(csv["agent_id"], csv["competition_id"], strict=True)) == [
        ("A", "a"),
        ("A", "b"),
        ("A", "OVERALL"),
        ("B", "a"),
        ("B", "b"),
        ("B", "OVERALL"),
    ]
    overall = csv[csv["competition_id"] == "OVERALL"].set_index("agent_id")
    assert overall.loc["A", "any_medal_pct_mean"] == pytest.approx(50.0)
    assert overall.loc["B", "any_medal_pct_mean"] == pytest.approx(50.0 / 3)
    assert overall.loc["A", "runs"] == 6 and overall.loc["B", "runs"] == 6
    assert overall.loc["A", "competition_set"] == "low" and pd.isna(overall.loc["B", "competition_set"])
    md = (tmp_path / "summary.md").read_text()
    assert "12 runs of 2 agents" in md and "agents are never added up" in md
    assert "| A | low | 6 | 3 | 50.00% ± 28.87% |" in md
    assert "| B | - | 6 | 3 | 16.67% ± 16.67% |" in md
    a_at, b_at = md.index("## Agent A"), md.index("## Agent B")
    assert a_at < b_at and "### Overall (mean ± s.e. over seeds)" in md[a_at:b_at]
    assert "**Any medal: 16.67% ± 16.67%** (3 seeds)" in md[b_at:]
    assert md.rstrip().endswith("- group note")
    png = (tmp_path / "summary.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_agent_summary_names_it_and_keeps_its_shape(tmp_path: Path) -> None:
    one = [replace(r, agent_id="A") for r in REPORTS]
    write_summaries(one, tmp_path, title="one", warn=pytest.fail)
    md = (tmp_path / "summary.md").read_text()
    assert "Agent: A." in md and "## Agent A" not in md and "## Overall (mean ± s.e. over seeds)" in md
    csv = pd.read_csv(tmp_path / "summary.csv")
    assert list(csv["agent_id"]) == ["A"] * 4
    assert list(csv["competition_id"]) == ["a", "b", "OVERALL", "LEADERBOARD"]


def test_leaderboard_rows_only_add_to_summary_csv(tmp_path: Path) -> None:
    """The rows and columns summary.csv had before the leaderboard row keep their text exactly."""
    from mlebench_hpc.results.leaderboard import leaderboard_rows
    from mlebench_hpc.results.report import aggregate
    from mlebench_hpc.results.summary import to_csv

    summaries = summarize_agents(REPORTS)
    to_csv(summaries, tmp_path / "before.csv")
    to_csv(summaries, tmp_path / "after.csv", leaderboard_rows(aggregate(REPORTS), {}))
    before = pd.read_csv(tmp_path / "before.csv", dtype=str, keep_default_na=False)
    after = pd.read_csv(tmp_path / "after.csv", dtype=str, keep_default_na=False)
    assert list(after.columns[: len(before.columns)]) == list(before.columns)
    assert after.iloc[: len(before)][list(before.columns)].equals(before)
    assert list(after["row_type"].iloc[len(before) :]) == ["LEADERBOARD"]
