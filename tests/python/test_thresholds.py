"""Medal rule (DESIGN.md "Medal thresholds"), leaderboard reading and the Git LFS pointer case."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
from mlebench_hpc.grading import GradingSetupError, Thresholds, load_competition, medal_flags, rank_thresholds
from mlebench_hpc.grading.thresholds import (
    SHIPPED_LEADERBOARDS,
    file_sha256,
    find_thresholds,
    leaderboard_placement,
    medal_positions,
    read_leaderboard,
    upstream_oids,
)

# n -> (gold, silver, bronze) positions, worked out by hand from the rule
POSITIONS = {
    99: (9, 19, 39),
    100: (10, 20, 40),
    249: (10, 49, 99),
    250: (10, 50, 100),
    999: (11, 50, 100),
    1000: (12, 50, 100),
    5: (1, 1, 2),
    1: (1, 1, 1),
}


@pytest.mark.parametrize("n", sorted(POSITIONS))
def test_medal_positions(n: int) -> None:
    assert medal_positions(n) == POSITIONS[n]


@pytest.mark.parametrize("n", [99, 100, 249, 250, 999, 1000])
def test_thresholds_higher_is_better(n: int) -> None:
    scores = [float(n - i) for i in range(n)]  # position p holds n - p + 1
    th = rank_thresholds(scores, "test")
    g, s, b = POSITIONS[n]
    assert (th.gold, th.silver, th.bronze) == (n - g + 1, n - s + 1, n - b + 1)
    assert th.median == pytest.approx((n + 1) / 2)
    assert th.n_teams == n
    # inclusive at the threshold, exclusive just below
    assert medal_flags(th.gold, th, False)["gold_medal"]
    below_gold = medal_flags(th.gold - 0.5, th, False)
    assert not below_gold["gold_medal"] and below_gold["silver_medal"] == (th.gold - 0.5 >= th.silver)
    bronze = medal_flags(th.bronze, th, False)
    assert bronze["bronze_medal"] and bronze["any_medal"] and not bronze["silver_medal"]
    assert not medal_flags(th.bronze - 0.5, th, False)["any_medal"]


@pytest.mark.parametrize("n", [99, 100, 249, 250, 999, 1000])
def test_thresholds_lower_is_better(n: int) -> None:
    scores = [float(i) for i in range(1, n + 1)]  # best first = lowest first
    th = rank_thresholds(scores)
    g, s, b = POSITIONS[n]
    assert (th.gold, th.silver, th.bronze) == (g, s, b)
    assert medal_flags(float(g), th, True)["gold_medal"]
    assert medal_flags(g + 0.5, th, True)["silver_medal"] == (g + 0.5 <= s)
    assert not medal_flags(b + 0.5, th, True)["any_medal"]


def test_median_is_strict() -> None:
    th = Thresholds(gold=10, silver=9, bronze=8, median=5, source="x", n_teams=None)
    assert not medal_flags(5.0, th, False)["above_median"]
    assert medal_flags(5.01, th, False)["above_median"]
    assert medal_flags(4.99, th, True)["above_median"]


def test_no_score_or_no_thresholds_claims_nothing() -> None:
    th = Thresholds(1, 1, 1, 1, "x", 1)
    for flags in (medal_flags(None, th, False), medal_flags(5.0, None, False)):
        assert not any(flags.values())
        assert set(flags) == {"gold_medal", "silver_medal", "bronze_medal", "any_medal", "above_median"}


def test_gold_excludes_silver_and_bronze() -> None:
    th = Thresholds(gold=0.9, silver=0.8, bronze=0.7, median=0.5, source="x", n_teams=10)
    flags = medal_flags(0.95, th, False)
    assert flags == {
        "gold_medal": True,
        "silver_medal": False,
        "bronze_medal": False,
        "any_medal": True,
        "above_median": True,
    }


def _write_board(path: Path, scores: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"teamName": [f"t{i}" for i in range(len(scores))], "score": scores}).to_csv(
        path, index=False
    )


def test_mlebench_dir_leaderboard_used_only_when_it_is_upstreams(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cid = "spaceship-titanic"
    shipped = SHIPPED_LEADERBOARDS / f"{cid}.csv"
    upstream_copy = tmp_path / "mle" / "mlebench" / "competitions" / cid / "leaderboard.csv"
    upstream_copy.parent.mkdir(parents=True)
    upstream_copy.write_bytes(shipped.read_bytes())
    th, scores = find_thresholds(cid, tmp_path / "data", tmp_path / "mle")
    assert th.source.startswith(f"upstream leaderboard {upstream_copy} (sha256 ")
    assert th.source.endswith(f"{file_sha256(shipped)[:12]})") and len(scores) == th.n_teams
    # a different file there (edited, re-downloaded top rows...): one warning, the shipped copy
    _write_board(upstream_copy, [0.9, 0.8, 0.7])
    with caplog.at_level(logging.WARNING, logger="mlebench_hpc.grading"):
        for _ in range(3):
            th2, _ = find_thresholds(cid, tmp_path / "data", tmp_path / "mle")
    assert th2.source.startswith(
        "shipped upstream leaderboard mlebench_hpc/data/leaderboards/spaceship-titanic.csv"
    )
    warnings = [r.getMessage() for r in caplog.records]
    assert (
        len(warnings) == 1
        and "differs from upstream's" in warnings[0]
        and "using the shipped copy" in warnings[0]
    )


def test_git_lfs_pointer_in_mlebench_dir_falls_back_to_the_shipped_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A real pointer file, byte for byte as Git LFS writes them (upstream's leaderboards are these).
    oid = upstream_oids()["spaceship-titanic"]
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 12345\n"
    path = tmp_path / "mle" / "mlebench" / "competitions" / "spaceship-titanic" / "leaderboard.csv"
    path.parent.mkdir(parents=True)
    path.write_text(pointer)
    with caplog.at_level(logging.WARNING, logger="mlebench_hpc.grading"):
        th, _ = find_thresholds("spaceship-titanic", tmp_path / "data", tmp_path / "mle")
    assert th.source.startswith("shipped upstream leaderboard") and th.n_teams == 2288
    assert [r.getMessage() for r in caplog.records] == [
        f"leaderboard for spaceship-titanic at {path} is a Git LFS pointer; using the shipped copy"
    ]
    with pytest.raises(GradingSetupError) as err:  # reading a pointer directly stays a clear error
        read_leaderboard(path, "spaceship-titanic")
    assert "\n" not in str(err.value) and "Git LFS pointer" in str(err.value)


def test_demo_competitions_use_their_data_dir_baseline(tmp_path: Path) -> None:
    _write_board(tmp_path / "data" / "demo-diabetes" / "leaderboard.csv", [40.0, 50.0, 60.0])
    th, scores = find_thresholds("demo-diabetes", tmp_path / "data", None)
    assert scores == [40.0, 50.0, 60.0] and th.gold == 40.0
    assert th.source.startswith(
        f"leaderboard {tmp_path / 'data' / 'demo-diabetes' / 'leaderboard.csv'} (sha256 "
    )


def test_every_shipped_leaderboard_is_byte_for_byte_upstreams() -> None:
    oids = upstream_oids()
    shipped = sorted(SHIPPED_LEADERBOARDS.glob("*.csv"))
    assert len(oids) == 82 and len(shipped) == 81
    for path in shipped:
        assert file_sha256(path) == oids[path.stem], path.name
    assert {p.stem for p in shipped} == set(oids) - {"ventilator-pressure-prediction"}


def test_leaderboard_without_score_column(tmp_path: Path) -> None:
    path = tmp_path / "leaderboard.csv"
    path.write_text("teamName,points\na,1\n")
    with pytest.raises(GradingSetupError, match="no `score`"):
        read_leaderboard(path, "x")


def test_unknown_thresholds_without_any_leaderboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLEBENCH_DIR", raising=False)
    comp = load_competition("demo-breast-cancer", tmp_path, need_answers=False)
    assert comp.thresholds() is None  # nothing shipped, no baseline: unknown, no medal claimed


# ---- where a score would stand on the leaderboard --------------------------------------------
@pytest.mark.parametrize(
    "score, lower, rank, beaten",
    [
        (0.95, False, 1, 5),  # better than all
        (0.9, False, 1, 3),  # tied with the two best: takes their rank, beats neither
        (0.85, False, 3, 3),
        (0.7, False, 5, 0),  # tied with the last: beats nobody
        (0.1, False, 6, 0),  # below all
        (0.7, True, 1, 4),  # lower is better: the smallest score is first
        (0.9, True, 4, 0),
    ],
)
def test_leaderboard_placement_and_ties(score: float, lower: bool, rank: int, beaten: int) -> None:
    board = [0.9, 0.9, 0.8, 0.75, 0.7] if not lower else [0.7, 0.75, 0.8, 0.9, 0.9]
    place = leaderboard_placement(score, board, lower)
    assert (place.rank, place.beaten, place.n_teams) == (rank, beaten, 5)
    assert place.share_beaten == pytest.approx(beaten / 5)


def test_leaderboard_placement_refuses_nan_and_empty() -> None:
    with pytest.raises(ValueError, match="NaN"):
        leaderboard_placement(float("nan"), [1.0], False)
    with pytest.raises(ValueError, match="at least one"):
        leaderboard_placement(1.0, [], False)
    assert leaderboard_placement(1.0, [float("nan"), 2.0], False).n_teams == 1
