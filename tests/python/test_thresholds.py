"""Medal rule (DESIGN.md "Medal thresholds"), leaderboard reading and the Git LFS pointer case."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlebench_hpc.grading import GradingSetupError, Thresholds, load_competition, medal_flags, rank_thresholds
from mlebench_hpc.grading.thresholds import find_thresholds, medal_positions, read_leaderboard

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


def test_upstream_leaderboard_wins_over_data_dir(tmp_path: Path) -> None:
    mle = tmp_path / "mle-bench"
    _write_board(mle / "mlebench" / "competitions" / "spaceship-titanic" / "leaderboard.csv", [0.9, 0.8, 0.7])
    _write_board(tmp_path / "data" / "spaceship-titanic" / "leaderboard.csv", [0.5, 0.4])
    th, scores = find_thresholds("spaceship-titanic", tmp_path / "data", mle)
    assert scores == [0.9, 0.8, 0.7] and "upstream" in th.source and th.gold == 0.9
    th2, _ = find_thresholds("spaceship-titanic", tmp_path / "data", None)
    assert th2.gold == 0.5 and th2.n_teams == 2


def test_git_lfs_pointer_is_a_clear_error(tmp_path: Path) -> None:
    # A real pointer file, byte for byte as Git LFS writes them (upstream's leaderboards are these).
    pointer = (
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        "size 12345\n"
    )
    path = tmp_path / "mle" / "mlebench" / "competitions" / "spaceship-titanic" / "leaderboard.csv"
    path.parent.mkdir(parents=True)
    path.write_text(pointer)
    with pytest.raises(GradingSetupError) as err:
        read_leaderboard(path, "spaceship-titanic")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(
        "leaderboard for spaceship-titanic is a Git LFS pointer: run `git lfs pull` in MLEBENCH_DIR"
    )
    with pytest.raises(GradingSetupError, match="Git LFS pointer"):
        find_thresholds("spaceship-titanic", tmp_path / "data", tmp_path / "mle")


def test_leaderboard_without_score_column(tmp_path: Path) -> None:
    path = tmp_path / "leaderboard.csv"
    path.write_text("teamName,points\na,1\n")
    with pytest.raises(GradingSetupError, match="no `score`"):
        read_leaderboard(path, "x")


def test_unknown_thresholds_without_any_leaderboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLEBENCH_DIR", raising=False)
    comp = load_competition("spaceship-titanic", tmp_path, need_answers=False)
    assert comp.thresholds() is None  # nothing shipped: unknown, no medal claimed
