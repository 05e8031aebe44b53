"""With no MLEBENCH_DIR, the engine `make grade` uses reports upstream's thresholds and medals for
all 23 built-in upstream competitions: the vectors hold upstream's own Grader.rank_score and
is_lower_better on upstream's leaderboard (its sha256 checked against upstream's LFS oid)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlebench_hpc.grading import load_competition, medal_flags
from mlebench_hpc.grading.competitions import upstream_specs

VECTORS = Path(__file__).resolve().parent / "vectors"


@pytest.fixture(autouse=True)
def _no_upstream_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLEBENCH_HPC_BACKEND", "builtin")
    monkeypatch.delenv("MLEBENCH_DIR", raising=False)


@pytest.mark.parametrize("cid", sorted(s.competition_id for s in upstream_specs()))
def test_thresholds_and_medals_equal_upstreams(cid: str, tmp_path: Path) -> None:
    want = json.loads((VECTORS / f"{cid}.json").read_text("utf-8"))["medals"]
    comp = load_competition(cid, tmp_path, need_answers=False)  # an empty data dir: nothing else to use
    th = comp.thresholds()
    assert th is not None, f"{cid}: no shipped leaderboard"
    got = {"gold_threshold": th.gold, "silver_threshold": th.silver, "bronze_threshold": th.bronze,
           "median_threshold": th.median}  # fmt: skip
    assert got == want["thresholds"]
    assert th.n_teams == want["n_teams"]
    assert comp.is_lower_better == want["is_lower_better"]
    assert f"{cid}.csv (sha256 {want['leaderboard_sha256'][:12]})" in th.source
    for probe in want["probes"]:
        flags = medal_flags(probe["score"], th, comp.is_lower_better)
        expected = {k: probe[k] for k in ("gold_medal", "silver_medal", "bronze_medal", "above_median")}
        assert {k: flags[k] for k in expected} == expected, probe
        assert flags["any_medal"] == (
            expected["gold_medal"] or expected["silver_medal"] or expected["bronze_medal"]
        )
