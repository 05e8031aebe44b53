"""The aggregation cases: grading reports in our grader's format (made with our CompetitionReport and
`aggregate`, deterministically) and how upstream's aggregate_grading_reports.py is asked about them.

A run is (competition, recorded seed, outcome); outcomes: gold, silver, bronze, median (above median,
no medal), valid (below median), invalid (a submission upstream's grader rejects), missing (no
submission), error (a setup error of ours: no score, submission present, not valid).
make_vectors.py writes each case's reports and split file, runs upstream's script and keeps its
output; test_aggregation_vectors.py rebuilds the same reports and checks our figures equal it."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from mlebench_hpc.competition_sets import SHIPPED_SPLITS, read_competition_list
from mlebench_hpc.results.report import CompetitionReport, aggregate

Run = tuple[str, int, str]
OUTCOMES = ("gold", "silver", "bronze", "median", "valid", "invalid", "missing", "error")
WHEN = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Case:
    name: str
    reports: dict[str, list[Run]]  # report file name -> its runs, in the file's order
    split: list[str] | str  # the split's competitions (written as <case>.txt), or an upstream split name
    num_seeds: int = -1
    pad_missing: bool = False
    order: tuple[str, ...] = ()  # the report files in the order given on the command line

    def args(self, root: Path) -> list[str]:
        """upstream's command-line arguments, paths relative to the case directory ROOT."""
        split = self.split if isinstance(self.split, str) else str(root / f"{self.name}.txt")
        out = ["--grading-reports", *[f"reports/{f}" for f in (self.order or self.reports)]]
        out += ["--split", split, "--num-seeds", str(self.num_seeds)]
        return out + (["--pad-missing"] if self.pad_missing else [])

    def split_ids(self) -> list[str]:
        if isinstance(self.split, str):
            return read_competition_list(SHIPPED_SPLITS / f"{self.split}.txt")[0]
        return list(self.split)


def report(comp: str, seed: int, outcome: str) -> CompetitionReport:
    medal = outcome if outcome in ("gold", "silver", "bronze") else None
    exists = outcome != "missing"
    valid = outcome in ("gold", "silver", "bronze", "median", "valid")
    return CompetitionReport(
        competition_id=comp,
        score=0.5 if valid else None,
        gold_threshold=0.9,
        silver_threshold=0.8,
        bronze_threshold=0.7,
        median_threshold=0.6,
        any_medal=medal is not None,
        gold_medal=medal == "gold",
        silver_medal=medal == "silver",
        bronze_medal=medal == "bronze",
        above_median=medal is not None or outcome == "median",
        submission_exists=exists,
        valid_submission=valid,
        is_lower_better=False,
        created_at=WHEN,
        submission_path=f"/runs/{comp}_seed{seed}/submission/submission.csv" if exists else "",
        grading_backend="builtin",
        run_dir=f"/runs/{comp}_seed{seed}",
        seed=seed,
        error="grading setup failed" if outcome == "error" else None,
    )


def write_case(case: Case, root: Path) -> dict[str, str]:
    """Write CASE's reports (and split file) under ROOT; the sha256 of each file written."""
    (root / "reports").mkdir(parents=True, exist_ok=True)
    sums: dict[str, str] = {}
    for name, runs in case.reports.items():
        group = aggregate([report(*r) for r in runs], {"backend": "builtin", "version": "test"})
        group["created_at"] = WHEN.isoformat()
        data = (json.dumps(group, indent=2) + "\n").encode()
        (root / "reports" / name).write_bytes(data)
        sums[f"reports/{name}"] = hashlib.sha256(data).hexdigest()
    if not isinstance(case.split, str):
        data = "\n".join(case.split).encode()  # upstream's files end without a newline
        (root / f"{case.name}.txt").write_bytes(data)
        sums[f"{case.name}.txt"] = hashlib.sha256(data).hexdigest()
    return sums


def _grid(
    comps: list[str], seeds: int, rng: random.Random, weights: tuple[int, ...] | None = None
) -> list[Run]:
    w = weights or (2, 2, 3, 3, 4, 2, 2, 1)
    return [(c, s, rng.choices(OUTCOMES, w)[0]) for c in comps for s in range(seeds)]


def cases() -> list[Case]:
    rng = random.Random(19)
    abc = ["c-alpha", "c-beta", "c-gamma"]
    out: list[Case] = []
    basic = _grid(abc, 3, rng)
    out.append(Case("basic", {"grading_report.json": basic}, abc))
    out.append(Case("one_seed", {"grading_report.json": _grid(abc, 1, rng)}, abc))
    out.append(Case("num_seeds_2", {"grading_report.json": basic}, abc, num_seeds=2))
    out.append(Case("num_seeds_too_many", {"grading_report.json": basic}, abc, num_seeds=5))
    out.append(Case("num_seeds_zero", {"grading_report.json": basic}, abc, num_seeds=0))
    # every outcome of ours in one seed: invalid, missing and setup errors counted as upstream does
    every = [(f"c-{o}", 0, o) for o in OUTCOMES] + [(f"c-{o}", 1, "valid") for o in OUTCOMES]
    out.append(Case("every_outcome", {"grading_report.json": every}, [f"c-{o}" for o in OUTCOMES]))
    # uneven seeds: c-beta lost a pair (seed 0), so file order pairs its seeds 1, 2 with 0, 1
    uneven = [r for r in _grid(abc, 3, rng) if r[:2] != ("c-beta", 0)]
    out.append(Case("uneven", {"grading_report.json": uneven}, abc))
    out.append(Case("uneven_pad", {"grading_report.json": uneven}, abc, pad_missing=True))
    out.append(Case("uneven_pad_num_seeds_2", {"grading_report.json": uneven}, abc, 2, True))
    out.append(Case("uneven_pad_too_many", {"grading_report.json": uneven}, abc, 4, True))
    # a split with a competition no report has
    abcd = [*abc, "c-delta"]
    out.append(Case("split_with_absent", {"grading_report.json": basic}, abcd))
    out.append(Case("split_with_absent_pad", {"grading_report.json": basic}, abcd, pad_missing=True))
    out.append(Case("nothing_of_split_pad", {"grading_report.json": basic}, ["c-x", "c-y"], pad_missing=True))
    # several groups (one seed each, given out of order), with competitions outside the split
    groups = {f"group-{g}.json": _grid([*abc, "c-extra"], 1, rng) for g in "bca"}
    for g, runs in groups.items():
        groups[g] = [(c, "bca".index(g[6]), o) for c, _, o in runs]
    out.append(Case("several_groups", groups, abc, order=("group-b.json", "group-c.json", "group-a.json")))
    out.append(Case("several_groups_2", groups, abc, num_seeds=2, order=tuple(sorted(groups))))
    # recorded seeds out of file order, and files that list competitions unsorted
    shuffled = _grid(abc, 3, rng)
    rng.shuffle(shuffled)
    out.append(Case("seed_order", {"grading_report.json": shuffled}, abc))
    # many seeds: numpy's pairwise summation (blocks of 8 and 128) against a plain sum
    out.append(Case("many_seeds", {"grading_report.json": _grid(abc[:2], 140, rng)}, abc[:2]))
    out.append(Case("ten_seeds", {"grading_report.json": _grid(abc, 10, rng)}, abc))
    # real shipped splits: low, 22 synthetic competitions x 3 seeds; spaceship-titanic x 5
    low = read_competition_list(SHIPPED_SPLITS / "low.txt")[0]
    out.append(Case("low_22x3", {"grading_report.json": _grid(low, 3, rng)}, "low"))
    out.append(
        Case(
            "spaceship_5", {"grading_report.json": _grid(["spaceship-titanic"], 5, rng)}, "spaceship-titanic"
        )
    )
    return out
