"""Upstream's aggregation by split: the figures of its leaderboard, as upstream's
experiments/aggregate_grading_reports.py (openai/mle-bench PR #104) computes them, written anew.

Upstream reads its grading reports in sorted path order, each file's `competition_reports` sorted
by competition id (a stable sort: per competition, the file's order) and forms seed k of a split
from the k-th run of each of its competitions: only complete seeds (the fewest runs any competition
has), or, with pad_missing, as many seeds as the most runs any competition has, a run it lacks
counted as no submission. Per seed: the percentage of the split's competitions with a submission, a
valid one, above median, gold, silver, bronze, any medal (and total_competitions, which upstream
averages too); then mean, SEM (numpy's std with ddof 1 over sqrt(n), as scipy.stats.sem computes it;
0.0 for one seed) and mean -/+ 1.96 SEM. tests/conformance/aggregation/ holds upstream's own outputs
on reports of ours and checks every figure here equals them exactly.

Where upstream refuses (a competition of the split without any run, no run at all, more seeds asked
than there are), `AggregationError` holds upstream's message and our one line saying what to do.
Our recorded seeds are not what upstream pairs by: `pairing_note` says when they would pair
differently (e.g. a cancelled pair shifts a competition's later runs one seed down).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlebench_hpc.competition_sets import (
    SHIPPED_SPLITS,
    UPSTREAM_SPLITS,
    AskedSet,
    read_competition_list,
    resolve_competition_set,
    split_name,
)
from mlebench_hpc.errors import HelperError

# Upstream's SeedMetrics fields, in its order (asdict(AggregateMetrics)["metrics"] keys).
SEED_METRICS: tuple[str, ...] = (
    "total_competitions",
    "submission_exists_percentage",
    "valid_submissions_percentage",
    "above_median_percentage",
    "gold_medal_percentage",
    "silver_medal_percentage",
    "bronze_medal_percentage",
    "any_medal_percentage",
)
Z_95 = 1.96
ALL_SEEDS = -1


class AggregationError(Exception):
    """Upstream's script would refuse: `upstream` is its message, `line` ours (what to do)."""

    def __init__(self, upstream: str, line: str) -> None:
        super().__init__(line)
        self.upstream = upstream
        self.line = line


@dataclass(frozen=True)
class Run:
    """What upstream reads of one competition report, and the seed we recorded."""

    competition_id: str
    gold_medal: bool
    silver_medal: bool
    bronze_medal: bool
    above_median: bool
    submission_exists: bool
    valid_submission: bool
    seed: Any = None

    @classmethod
    def from_dict(cls, r: dict[str, Any]) -> Run:
        return cls(
            competition_id=str(r["competition_id"]),
            gold_medal=bool(r["gold_medal"]),
            silver_medal=bool(r["silver_medal"]),
            bronze_medal=bool(r["bronze_medal"]),
            above_median=bool(r["above_median"]),
            submission_exists=bool(r["submission_exists"]),
            valid_submission=bool(r["valid_submission"]),
            seed=r.get("seed"),
        )


def runs_of_report(report: dict[str, Any]) -> list[Run]:
    """One run-group report's runs in upstream's reading order (by competition id, stable)."""
    comps = report.get("competition_reports")
    if not isinstance(comps, list):
        raise HelperError(
            "a grading report without competition_reports (a group of several agents?): give each "
            "agent's own report (by_agent/<agent>/grading_report.json)"
        )
    return [Run.from_dict(r) for r in sorted(comps, key=lambda r: str(r["competition_id"]))]


def runs_of_files(paths: Iterable[str]) -> list[Run]:
    """Several reports as upstream reads them: in sorted order of their paths as given."""
    runs: list[Run] = []
    for p in sorted(paths):
        try:
            report = json.loads(Path(p).read_text())
        except (OSError, ValueError) as exc:
            raise HelperError(
                f"cannot read grading report {p} ({exc}): give grading_report.json files"
            ) from None
        if not isinstance(report, dict):
            raise HelperError(f"{p} is not a grading report (a JSON object with competition_reports)")
        runs += runs_of_report(report)
    return runs


def _listed(ids: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(ids[:most])
    return shown + (f" and {len(ids) - most} more" if len(ids) > most else "")


def form_seeds(
    runs: Sequence[Run], ids: Sequence[str], num_seeds: int = ALL_SEEDS, pad_missing: bool = False
) -> list[list[Run | None]]:
    """Upstream's seeds: seed k holds the k-th run of each of IDS (None: padded, no submission)."""
    by_comp: dict[str, list[Run]] = {}
    for run in runs:
        by_comp.setdefault(run.competition_id, []).append(run)
    missing = [c for c in ids if c not in by_comp]
    if missing and not pad_missing:
        raise AggregationError(
            f"Missing reports for competitions: {', '.join(missing)}; cannot build complete seeds.",
            f"no runs of {len(missing)} of the split's {len(ids)} competitions ({_listed(missing)}): "
            "grade runs of them, or use --pad-missing to count them as no submission",
        )
    counts = [len(by_comp.get(c, [])) for c in ids]
    if not counts:
        raise AggregationError("No competitions provided.", "the split names no competition: give another")
    available = max(counts) if pad_missing else min(counts)
    if available == 0:
        raise AggregationError(
            "No reports available to form any seed.",
            f"no runs of any of the split's {len(ids)} competitions: give a split this group ran",
        )
    n = available if num_seeds == ALL_SEEDS else min(num_seeds, available)
    if n <= 0:
        raise AggregationError(
            "No seeds requested or available after evaluating competition coverage.",
            f"--num-seeds {num_seeds} asks for no seed: give a positive number, or -1 for all",
        )
    seeds = [[by_comp[c][k] if k < len(by_comp.get(c, [])) else None for c in ids] for k in range(n)]
    if num_seeds != ALL_SEEDS and num_seeds > len(seeds):
        raise AggregationError(
            f"Requested {num_seeds} seeds, but only {len(seeds)} complete seeds available.",
            f"--num-seeds {num_seeds} but only {len(seeds)} "
            f"{'seeds' if pad_missing else 'complete seeds'}: ask for fewer, or -1 for all"
            + ("" if pad_missing else " (or --pad-missing)"),
        )
    return seeds


def seed_metrics(seed: Sequence[Run | None]) -> dict[str, int | float]:
    """Upstream's SeedMetrics of one seed (a padded run counts as nothing)."""
    total = len(seed)
    runs = [r for r in seed if r is not None]

    def pct(n: int) -> float:
        return n / total * 100  # upstream's expression, for the same float

    return {
        "total_competitions": total,
        "submission_exists_percentage": pct(sum(1 for r in runs if r.submission_exists)),
        "valid_submissions_percentage": pct(sum(1 for r in runs if r.valid_submission)),
        "above_median_percentage": pct(sum(1 for r in runs if r.above_median)),
        "gold_medal_percentage": pct(sum(1 for r in runs if r.gold_medal)),
        "silver_medal_percentage": pct(sum(1 for r in runs if r.silver_medal)),
        "bronze_medal_percentage": pct(sum(1 for r in runs if r.bronze_medal)),
        "any_medal_percentage": pct(sum(1 for r in runs if r.gold_medal or r.silver_medal or r.bronze_medal)),
    }


def mean_interval(values: Sequence[float]) -> dict[str, float]:
    """mean, ci_lower, ci_upper, standard_error as upstream's AggregateMetric."""
    mean = float(np.mean(values))
    # scipy.stats.sem(values, ddof=1) is std(ddof=1) / n ** 0.5; the same operations give its bits
    sem = (
        float(np.std(np.asarray(values, dtype=float), axis=0, ddof=1) / len(values) ** 0.5)
        if len(values) > 1
        else 0.0
    )
    return {"mean": mean, "ci_lower": mean - Z_95 * sem, "ci_upper": mean + Z_95 * sem, "standard_error": sem}


@dataclass(frozen=True)
class Aggregate:
    seeds: list[list[Run | None]]
    per_seed: list[dict[str, int | float]]
    upstream: dict[str, Any]  # asdict(AggregateMetrics) exactly
    pairing_note: str | None = None


def pairing_note(seeds: Sequence[Sequence[Run | None]]) -> str | None:
    """One line when upstream's seed k joins runs we recorded under different seeds, else None."""
    mixed = []
    for k, seed in enumerate(seeds):
        recorded = {str(r.seed) for r in seed if r is not None and r.seed is not None}
        if len(recorded) > 1:
            mixed.append(
                (k, sorted(recorded, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s)))
            )
    if not mixed:
        return None
    k, recorded = mixed[0]
    return (
        f"upstream's order pairs runs of different recorded seeds in {len(mixed)} of {len(seeds)} "
        f"seeds (its seed {k + 1} joins recorded seeds {', '.join(recorded)}): the figures are "
        "upstream's; each competition's runs count in report order"
    )


def aggregate(
    runs: Sequence[Run], ids: Sequence[str], num_seeds: int = ALL_SEEDS, pad_missing: bool = False
) -> Aggregate:
    """Upstream's AggregateMetrics of RUNS over the split IDS. AggregationError where it refuses."""
    seeds = form_seeds(runs, ids, num_seeds, pad_missing)
    per_seed = [seed_metrics(s) for s in seeds]
    metrics = {k: mean_interval([float(m[k]) for m in per_seed]) for k in SEED_METRICS}
    upstream = {
        "num_seeds_averaged": len(per_seed),
        "num_competitions_per_seed": len(ids),
        "metrics": metrics,
    }
    return Aggregate(seeds, per_seed, upstream, pairing_note(seeds))


# ---- which splits a group reports, and its `aggregates` entries


@dataclass(frozen=True)
class Split:
    name: str
    path: Path | None
    source: str  # "upstream" | "file" | "sweep"
    ids: tuple[str, ...]
    explicit: bool = False  # asked for with --split: a refusal is an error of the command
    note: str = field(default="", compare=False)


def _read_split(path: Path) -> tuple[str, ...]:
    ids, problems = read_competition_list(path)
    if problems:
        raise HelperError(problems[0])
    return tuple(ids)


def upstream_split(name: str, mlebench_dir: str | None) -> Split:
    """One of upstream's splits by name: MLEBENCH_DIR's file when it has one, else the shipped one."""
    path, note = resolve_competition_set(split_name(name), mlebench_dir)
    return Split(split_name(name), path, "upstream", _read_split(path), note=note)


def resolve_split(value: str, mlebench_dir: str | None, cwd: Path | None = None) -> Split:
    """`--split NAME|FILE`: a file (named by its file name without .txt), else a split name."""
    here = Path(value).expanduser()
    if not here.is_absolute() and cwd is not None:
        here = cwd / here
    if here.is_file():
        path = here.resolve()
        source = "upstream" if path.parent == SHIPPED_SPLITS else "file"
        return Split(path.name.removesuffix(".txt"), path, source, _read_split(path), explicit=True)
    path, note = resolve_competition_set(value, mlebench_dir, cwd)
    return Split(split_name(path.name), path, "upstream", _read_split(path), explicit=True, note=note)


def group_splits(
    competitions: Iterable[str],
    asked: AskedSet | None,
    explicit: Sequence[Split],
    mlebench_dir: str | None,
) -> list[Split]:
    """Every upstream split all of whose competitions have runs, the sweep's own set, and the
    --split ones (those last win a name they share)."""
    have = set(competitions)
    out: dict[str, Split] = {}
    for name in UPSTREAM_SPLITS:
        try:
            s = upstream_split(name, mlebench_dir)
        except HelperError:
            continue
        if s.ids and set(s.ids) <= have:
            out[s.name] = s
    if asked is not None:
        if asked.split and all(split_name(n) in UPSTREAM_SPLITS for n in asked.names):
            for n in asked.names:
                s = upstream_split(n, mlebench_dir)
                out.setdefault(s.name, s)
        else:
            name = " + ".join(asked.names)
            out.setdefault(name, Split(name, None, "sweep", asked.ids))
    for s in explicit:
        out[s.name] = s
    return list(out.values())


def split_entry(
    runs: Sequence[Run], split: Split, num_seeds: int = ALL_SEEDS, pad_missing: bool = False
) -> dict[str, Any]:
    """One `aggregates` entry: upstream's AggregateMetrics, or `error`, plus where the split came from."""
    entry: dict[str, Any]
    try:
        agg = aggregate(runs, split.ids, num_seeds, pad_missing)
        entry = dict(agg.upstream)
        if agg.pairing_note:
            entry["seed_pairing_note"] = agg.pairing_note
    except AggregationError as exc:
        entry = {"num_competitions_per_seed": len(split.ids), "error": exc.line}
    if pad_missing:
        entry["pad_missing"] = True
    if num_seeds != ALL_SEEDS:
        entry["num_seeds_requested"] = num_seeds
    entry["split_file"] = str(split.path) if split.path is not None else None
    entry["split_source"] = split.source
    return entry


def aggregates(
    report: dict[str, Any], splits: Sequence[Split], num_seeds: int = ALL_SEEDS, pad_missing: bool = False
) -> dict[str, dict[str, Any]]:
    """The `aggregates` of one run-group report (one agent's), read as upstream reads that file."""
    runs = runs_of_report(report)
    return {s.name: split_entry(runs, s, num_seeds, pad_missing) for s in splits}


# ---- printing


LABELS: tuple[tuple[str, str], ...] = (
    ("any_medal_percentage", "any medal"),
    ("gold_medal_percentage", "gold"),
    ("silver_medal_percentage", "silver"),
    ("bronze_medal_percentage", "bronze"),
    ("above_median_percentage", "> median"),
    ("valid_submissions_percentage", "valid"),
    ("submission_exists_percentage", "submitted"),
)


def format_aggregates(aggs: dict[str, dict[str, Any]]) -> str:
    """The per-split table: mean ± SEM of upstream's percentages, the 95% interval of Any medal;
    a split upstream would refuse: its error; then the seed pairing notes."""
    from mlebench_hpc.printable import printable

    if not aggs:
        return "per split: none (no split of upstream's has runs of all its competitions; --split NAME|FILE)"
    header = ["split", "seeds", "comps", "any medal", "95% interval", *[lab for _, lab in LABELS[1:]]]
    rows: list[list[str]] = []
    notes: list[str] = []
    for name, e in aggs.items():
        shown = printable(name) + (" (padded)" if e.get("pad_missing") else "")
        if "error" in e:
            notes.append(f"  {printable(name)}: {printable(e['error'])}")
            rows.append([shown, "-", str(e.get("num_competitions_per_seed", "-")), "error (below)"])
            continue
        m = e["metrics"]
        any_medal = m["any_medal_percentage"]
        rows.append(
            [shown, str(e["num_seeds_averaged"]), str(e["num_competitions_per_seed"])]
            + [f"{m['any_medal_percentage']['mean']:.1f} ± {any_medal['standard_error']:.1f}"]
            + [f"[{any_medal['ci_lower']:.1f}, {any_medal['ci_upper']:.1f}]"]
            + [f"{m[k]['mean']:.1f} ± {m[k]['standard_error']:.1f}" for k, _ in LABELS[1:]]
        )
        if e.get("seed_pairing_note"):
            notes.append(f"  {printable(name)}: note: {printable(e['seed_pairing_note'])}")
    widths = [max([len(h), *(len(r[i]) for r in rows if i < len(r))]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i > 0 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        ).rstrip()

    out = [
        "per split (upstream's aggregation: % of the split's competitions per seed, mean ± SEM over seeds):",
        line(header),
        line(["-" * w for w in widths]),
        *[line(r) for r in rows],
    ]
    return "\n".join(out + notes)


def add_aggregates(
    group: dict[str, Any],
    own: dict[Any, dict[str, Any]],
    asked: dict[Any, AskedSet | None],
    explicit: Sequence[Split],
    mlebench_dir: str | None,
    num_seeds: int = ALL_SEEDS,
    pad_missing: bool = False,
) -> list[str]:
    """Put `aggregates` into the group's report, or, with several agents, into each agent's own
    (`own`, the same objects as the group's `by_agent`): never their sum. Returns one line per
    --split that could not be aggregated (the command's error)."""
    errors: list[str] = []
    if own:
        reports = own
    else:
        ids = {r.get("agent_id") for r in group.get("competition_reports", [])}
        reports = {ids.pop() if len(ids) == 1 else None: group}
    for agent, report in reports.items():
        comps = {str(r["competition_id"]) for r in report.get("competition_reports", [])}
        mine = asked[agent] if agent in asked else next(iter(asked.values())) if len(asked) == 1 else None
        splits = group_splits(comps, mine, explicit, mlebench_dir)
        report["aggregates"] = aggregates(report, splits, num_seeds, pad_missing)
        for s in splits:
            entry = report["aggregates"][s.name]
            if s.explicit and "error" in entry:
                who = f"agent {agent}: " if own else ""
                errors.append(f"{who}split {s.name}: {entry['error']}")
    return errors


def format_group_aggregates(group: dict[str, Any]) -> str:
    """The per-split table of a group; several agents: one per agent, never their sum."""
    from mlebench_hpc.printable import printable

    if "by_agent" in group:
        return "\n\n".join(
            f"agent {printable(a)}:\n{format_aggregates(r.get('aggregates', {}))}"
            for a, r in group["by_agent"].items()
        )
    return format_aggregates(group.get("aggregates", {}))
