"""Medal thresholds: upstream's rule (kaggle.com/progression) applied to a leaderboard, upstream's
leaderboards shipped as data and checked by hash, and where a score would place on one."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from mlebench_hpc.git_lfs import is_lfs_pointer

from .errors import GradingSetupError

SHIPPED_LEADERBOARDS = Path(__file__).resolve().parent.parent / "data" / "leaderboards"
LOG = logging.getLogger("mlebench_hpc.grading")


@dataclass(frozen=True)
class Thresholds:
    gold: float
    silver: float
    bronze: float
    median: float
    source: str
    n_teams: int | None
    # the leaderboard's scores, best first (for placing a score on it); empty when not from one
    scores: tuple[float, ...] = field(default=(), compare=False, repr=False)


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
    return Thresholds(gold, silver, bronze, median, source, len(values), tuple(values))


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
        pointer = is_lfs_pointer(path)
    except OSError as e:
        raise GradingSetupError(
            f"cannot read leaderboard for {competition_id} at {path}: {e.strerror}"
        ) from e
    if pointer:
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


@cache
def upstream_oids() -> dict[str, str]:
    """competition -> sha256 of upstream's leaderboard (the oid of its Git LFS pointer)."""
    table = pd.read_csv(SHIPPED_LEADERBOARDS / "UPSTREAM_POINTERS.tsv", sep="\t", dtype=str)
    return dict(zip(table["competition"], table["sha256"], strict=True))


def shipped_leaderboard(competition_id: str) -> Path | None:
    path = SHIPPED_LEADERBOARDS / f"{competition_id}.csv"
    return path if path.is_file() else None


@cache
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    st = path.stat()
    return _sha256(path, st.st_size, st.st_mtime_ns)


_warned: set[tuple[str, str]] = set()


def _warn_once(competition_id: str, path: Path, why: str) -> None:
    key = (competition_id, str(path))
    if key not in _warned:
        _warned.add(key)
        LOG.warning("leaderboard for %s at %s %s", competition_id, path, why)


def _usable_upstream_copy(competition_id: str, path: Path) -> bool:
    """A leaderboard under MLEBENCH_DIR counts only when it is byte for byte upstream's."""
    want = upstream_oids().get(competition_id)
    try:
        is_pointer = is_lfs_pointer(path)
        digest = file_sha256(path)
    except OSError as e:
        _warn_once(competition_id, path, f"cannot be read ({e.strerror}); using the shipped copy")
        return False
    if want is not None and digest == want:
        return True
    shipped = shipped_leaderboard(competition_id) is not None
    fallback = "the shipped copy" if shipped else "no leaderboard (medals unknown)"
    if is_pointer:
        why = f"is a Git LFS pointer; using {fallback}"
    elif want is None:
        why = f"is not one of upstream's (no known sha256 for {competition_id}); using {fallback}"
    else:
        why = f"differs from upstream's (sha256 {digest[:12]}, upstream {want[:12]}); using {fallback}"
    _warn_once(competition_id, path, why)
    return False


def _from_leaderboard(competition_id: str, path: Path, shown: str) -> tuple[Thresholds, list[float]]:
    scores = read_leaderboard(path, competition_id)
    return rank_thresholds(scores, f"{shown} (sha256 {file_sha256(path)[:12]})"), scores


def find_thresholds(
    competition_id: str, data_dir: Path, mlebench_dir: Path | None
) -> tuple[Thresholds, list[float]] | None:
    """Order: MLEBENCH_DIR's leaderboard when its sha256 is upstream's > the shipped copy of
    upstream's > DATA_DIR/<id>/leaderboard.csv (demo baselines) > None (medals unknown).

    Returns the thresholds and the leaderboard's scores (best first).
    """
    if mlebench_dir is not None:
        path = upstream_leaderboard_path(Path(mlebench_dir), competition_id)
        if path.is_file() and _usable_upstream_copy(competition_id, path):
            return _from_leaderboard(competition_id, path, f"upstream leaderboard {path}")
    shipped = shipped_leaderboard(competition_id)
    if shipped is not None:
        shown = f"shipped upstream leaderboard mlebench_hpc/data/leaderboards/{shipped.name}"
        return _from_leaderboard(competition_id, shipped, shown)
    path = Path(data_dir) / competition_id / "leaderboard.csv"
    if path.exists():
        return _from_leaderboard(competition_id, path, f"leaderboard {path}")
    return None


@dataclass(frozen=True)
class Placement:
    """Where a score would stand on a leaderboard of n teams (best first)."""

    rank: int  # 1-based position it would take: 1 + the number of teams strictly better
    beaten: int  # teams strictly worse
    share_beaten: float  # beaten / n_teams
    n_teams: int


def leaderboard_placement(score: float, scores: Sequence[float], is_lower_better: bool) -> Placement:
    """Rank the score would take among the leaderboard's teams and the share of teams it beats.

    Ties: a team with exactly the same score is neither better nor beaten, so the score takes
    the best rank among equals (Kaggle's "1224" competition ranking) and ties do not count as
    beaten. NaN scores on the leaderboard count as neither. Raises ValueError for an empty
    leaderboard or a NaN score.
    """
    values = np.asarray(scores, dtype=np.float64)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        raise ValueError("a leaderboard needs at least one scored team")
    if math.isnan(score):
        raise ValueError("an invalid (NaN) score has no place on the leaderboard")
    if is_lower_better:
        better, worse = int((values < score).sum()), int((values > score).sum())
    else:
        better, worse = int((values > score).sum()), int((values < score).sum())
    return Placement(rank=better + 1, beaten=worse, share_beaten=worse / len(values), n_teams=len(values))
