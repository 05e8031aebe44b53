"""Medal thresholds: upstream's rule (kaggle.com/progression) applied to a leaderboard."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import GradingSetupError

LFS_POINTER_PREFIX = "version https://git-lfs.github.com/spec/v1"
SHIPPED_THRESHOLDS = Path(__file__).resolve().parent.parent / "data" / "thresholds.json"


@dataclass(frozen=True)
class Thresholds:
    gold: float
    silver: float
    bronze: float
    median: float
    source: str
    n_teams: int | None


def medal_positions(n_teams: int) -> tuple[int, int, int]:
    """1-based leaderboard positions of the gold, silver and bronze thresholds for n teams."""
    if n_teams < 1:
        raise ValueError("a leaderboard needs at least one team")
    if n_teams < 100:
        return max(1, int(n_teams * 0.1)), max(1, int(n_teams * 0.2)), max(1, int(n_teams * 0.4))
    if n_teams < 250:
        return 10, max(1, int(n_teams * 0.2)), max(1, int(n_teams * 0.4))
    if n_teams < 1000:
        return 10 + int(n_teams * 0.002), 50, 100
    return 10 + int(n_teams * 0.002), max(1, int(n_teams * 0.05)), max(1, int(n_teams * 0.1))


def rank_thresholds(scores: Sequence[float], source: str = "") -> Thresholds:
    """Thresholds from leaderboard scores ordered best first (used as given, like upstream)."""
    values = [float(s) for s in scores]
    gold, silver, bronze = (values[p - 1] for p in medal_positions(len(values)))
    median = float(pd.Series(values).median())
    return Thresholds(gold, silver, bronze, median, source, len(values))


def leaderboard_is_lower_better(scores: Sequence[float]) -> bool:
    """Upstream's rule: lower is better when the first score is below the last."""
    return bool(scores[0] < scores[-1])


def medal_flags(score: float | None, th: Thresholds | None, is_lower_better: bool) -> dict[str, bool]:
    """Upstream's comparisons: medals inclusive and exclusive of better medals, median strict."""
    flags = dict.fromkeys(("gold_medal", "silver_medal", "bronze_medal", "any_medal", "above_median"), False)
    if score is None or th is None or (isinstance(score, float) and math.isnan(score)):
        return flags

    def at_least(threshold: float) -> bool:
        return score <= threshold if is_lower_better else score >= threshold

    flags["gold_medal"] = at_least(th.gold)
    flags["silver_medal"] = not flags["gold_medal"] and at_least(th.silver)
    flags["bronze_medal"] = not flags["gold_medal"] and not flags["silver_medal"] and at_least(th.bronze)
    flags["any_medal"] = flags["gold_medal"] or flags["silver_medal"] or flags["bronze_medal"]
    flags["above_median"] = score < th.median if is_lower_better else score > th.median
    return flags


def read_leaderboard(path: Path, competition_id: str) -> list[float]:
    """The `score` column of a leaderboard.csv, in file order (best first)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(len(LFS_POINTER_PREFIX))
    except OSError as e:
        raise GradingSetupError(
            f"cannot read leaderboard for {competition_id} at {path}: {e.strerror}"
        ) from e
    if head == LFS_POINTER_PREFIX.encode():
        raise GradingSetupError(
            f"leaderboard for {competition_id} is a Git LFS pointer: "
            f"run `git lfs pull` in MLEBENCH_DIR ({path})"
        )
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise GradingSetupError(
            f"leaderboard for {competition_id} at {path} is not a readable CSV: {e}"
        ) from e
    if "score" not in table.columns or table["score"].dropna().empty:
        raise GradingSetupError(f"leaderboard for {competition_id} at {path} has no `score` values")
    return [float(s) for s in pd.to_numeric(table["score"], errors="coerce").dropna()]


def upstream_leaderboard_path(mlebench_dir: Path, competition_id: str) -> Path:
    return mlebench_dir / "mlebench" / "competitions" / competition_id / "leaderboard.csv"


def shipped_thresholds(competition_id: str) -> Thresholds | None:
    """Thresholds shipped as data with their public source; none are shipped yet (see data/README.md)."""
    try:
        table = json.loads(SHIPPED_THRESHOLDS.read_text("utf-8"))
    except FileNotFoundError:
        return None
    entry = table.get("competitions", {}).get(competition_id)
    if not entry or not entry.get("source"):
        return None  # never claim medals from numbers without a source
    return Thresholds(
        float(entry["gold"]), float(entry["silver"]), float(entry["bronze"]), float(entry["median"]),
        str(entry["source"]), entry.get("n_teams"),
    )  # fmt: skip


def find_thresholds(
    competition_id: str, data_dir: Path, mlebench_dir: Path | None
) -> tuple[Thresholds, list[float] | None] | None:
    """Order: MLEBENCH_DIR leaderboard > DATA_DIR/<id>/leaderboard.csv > shipped data > None.

    Returns the thresholds and, when they came from a leaderboard, its scores.
    """
    if mlebench_dir is not None:
        path = upstream_leaderboard_path(Path(mlebench_dir), competition_id)
        if path.exists():
            scores = read_leaderboard(path, competition_id)
            return rank_thresholds(scores, f"upstream leaderboard {path}"), scores
    path = Path(data_dir) / competition_id / "leaderboard.csv"
    if path.exists():
        scores = read_leaderboard(path, competition_id)
        return rank_thresholds(scores, f"leaderboard {path}"), scores
    shipped = shipped_thresholds(competition_id)
    return (shipped, None) if shipped else None
