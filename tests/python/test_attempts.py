"""Which attempt of a sweep pair counts (mlebench_hpc.sweep.attempts), on hand-built groups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlebench_hpc.run.record import RunRecord, scan_runs
from mlebench_hpc.sweep.attempts import attempt_numbers, split_attempts, submission_order


def run(group: Path, name: str, comp: str, seed: int, array: str, start: str, **extra: Any) -> None:
    d = group / name
    d.mkdir(parents=True)
    meta = {
        "competition_id": comp,
        "seed": str(seed),
        "status": "finished",
        "sweep_array_job_id": array,
        "sweep_task_index": "0",
        "attempt_start": start,
        **extra,
    }
    (d / "metadata.json").write_text(json.dumps(meta))


def sweep_json(group: Path, arrays: list[str]) -> None:
    subs = [{"n": i + 1, "array_job_id": a} for i, a in enumerate(arrays)]
    (group / "sweep.json").write_text(json.dumps({"submissions": subs, "tasks": []}))


def names(runs: list[RunRecord]) -> list[str]:
    return sorted(r.path.name for r in runs)


def test_final_attempt_is_the_latest_submission(tmp_path: Path) -> None:
    g = tmp_path / "g"
    # job ids went down (the cluster was reinstalled): sweep.json's order decides, not the ids
    run(g, "a_900_0", "a", 0, "900", "2026-01-01T00:00:00Z", status="cancelled")
    run(g, "a_12_0", "a", 0, "12", "2026-01-01T01:00:00Z")
    run(g, "a_900_1", "a", 1, "900", "2026-01-01T00:00:00Z")  # a pair with one attempt
    run(g, "b_900_2", "b", 0, "900", "2026-01-01T00:00:00Z", status="failed")
    run(g, "b_12_1", "b", 0, "12", "2026-01-01T01:00:00Z", status="cancelled")
    run(g, "b_13_0", "b", 0, "13", "2026-01-01T00:30:00Z")  # not in sweep.json: newer than all listed
    sweep_json(g, ["900", "12"])
    assert submission_order(g) == {"900": 0, "12": 1}
    final, superseded = split_attempts(scan_runs(g))
    assert names(final) == ["a_12_0", "a_900_1", "b_13_0"]
    got = [(s.run.path.name, s.attempt, s.attempts, s.final.path.name) for s in superseded]
    assert got == [("a_900_0", 1, 2, "a_12_0"), ("b_900_2", 1, 3, "b_13_0"), ("b_12_1", 2, 3, "b_13_0")]
    d = superseded[0].as_dict()
    assert d["status"] == "cancelled" and d["ended"] == "cancelled (no submission)"
    assert d["superseded_by"].endswith("a_12_0")
    nums = attempt_numbers(scan_runs(g))
    assert nums[g / "b_13_0"] == (3, 3) and nums[g / "b_12_1"] == (2, 3) and g / "a_900_1" not in nums


def test_without_sweep_json_job_ids_then_start_times(tmp_path: Path) -> None:
    g = tmp_path / "g"
    run(g, "a_7_0", "a", 0, "7", "2026-01-01T05:00:00Z")
    run(g, "a_30_0", "a", 0, "30", "2026-01-01T01:00:00Z")
    run(g, "b_local1_0", "b", 0, "", "2026-01-01T02:00:00Z")  # made without Slurm
    run(g, "b_local2_0", "b", 0, "", "2026-01-01T01:00:00Z")
    final, superseded = split_attempts(scan_runs(g))
    assert names(final) == ["a_30_0", "b_local1_0"]
    assert [s.run.path.name for s in superseded] == ["a_7_0", "b_local2_0"]


def test_runs_not_from_a_sweep_each_count(tmp_path: Path) -> None:
    g = tmp_path / "g"
    for name in ("a_1", "a_2"):
        (g / name).mkdir(parents=True)
        (g / name / "metadata.json").write_text(json.dumps({"competition_id": "a", "seed": "0"}))
    final, superseded = split_attempts(scan_runs(g))
    assert names(final) == ["a_1", "a_2"] and superseded == []


def test_same_pair_in_two_groups_counts_in_each(tmp_path: Path) -> None:
    for g in (tmp_path / "g1", tmp_path / "g2"):
        run(g, "a_5_0", "a", 0, "5", "2026-01-01T00:00:00Z")
    final, superseded = split_attempts(scan_runs(tmp_path / "g1") + scan_runs(tmp_path / "g2"))
    assert len(final) == 2 and superseded == []
