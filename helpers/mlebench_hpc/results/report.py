"""The grading report's data: one `CompetitionReport` per run and the run group's totals.

`CompetitionReport` has upstream MLE-bench's fields (mlebench/grade_helpers.py), in upstream's
order, then a few additive ones (backend, thresholds source, run dir, seed, error, isolation record,
the leaderboard placement, the data graded against, the run's cost). `aggregate` is upstream's
aggregate_reports() (same keys, same sums) plus ours (the group's cost among them). What
grading_report.json holds is exactly `to_dict()` of these.

A group holding several agents (mlebench_hpc.sweep.attribution) never adds their numbers up: its report
has no upstream keys at the top, `agents` lists them and `by_agent` holds, per agent, that agent's
own upstream run-group report (`aggregate_agents`), also written as a file of its own
(report_output.py), which upstream's experiments/aggregate_grading_reports.py reads as it is.

The rest of grading a run group, by concern: find_runs.py (which runs, which data), grade_one.py
(one run, in a worker), pool.py (the workers), report_output.py (the JSON file and the table),
summary.py (summary.csv/.md/.png), grade_cli.py (`mlebench-hpc grade`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any

from mlebench_hpc.run.cost import group_cost

# Upstream's CompetitionReport.to_dict() keys, in upstream's order.
UPSTREAM_FIELDS: tuple[str, ...] = (
    "competition_id",
    "score",
    "gold_threshold",
    "silver_threshold",
    "bronze_threshold",
    "median_threshold",
    "any_medal",
    "gold_medal",
    "silver_medal",
    "bronze_medal",
    "above_median",
    "submission_exists",
    "valid_submission",
    "is_lower_better",
    "created_at",
    "submission_path",
)
EXTRA_FIELDS: tuple[str, ...] = (
    "grading_backend",
    "grading_backend_version",
    "thresholds_source",
    "run_dir",
    "seed",
    "error",
    "isolation",
    "submission_sha256",
    "leaderboard_rank",
    "leaderboard_share_beaten",
    "leaderboard_teams",
    "data_dir",
    "recorded_data_dir",
    "agent_id",
    "cost",
)
REPORT_FIELDS: tuple[str, ...] = UPSTREAM_FIELDS + EXTRA_FIELDS
# Upstream's aggregate_reports() keys.
GROUP_KEYS: tuple[str, ...] = (
    "total_runs",
    "total_runs_with_submissions",
    "total_valid_submissions",
    "total_medals",
    "total_gold_medals",
    "total_silver_medals",
    "total_bronze_medals",
    "total_above_median",
    "competition_reports",
)
MEDALS: tuple[str, ...] = ("gold", "silver", "bronze")


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class CompetitionReport:
    """One graded run. Where upstream always has a value, ours may say "unknown" with None:
    thresholds without a leaderboard, is_lower_better when the competition could not be loaded."""

    # ---- upstream's fields, in upstream's order
    competition_id: str
    score: float | None
    gold_threshold: float | None
    silver_threshold: float | None
    bronze_threshold: float | None
    median_threshold: float | None
    any_medal: bool
    gold_medal: bool
    silver_medal: bool
    bronze_medal: bool
    above_median: bool
    submission_exists: bool
    valid_submission: bool
    is_lower_better: bool | None
    created_at: datetime
    submission_path: str
    # ---- ours
    grading_backend: str | None = None
    grading_backend_version: str | None = None
    thresholds_source: str | None = None  # the leaderboard file, or "unknown"
    run_dir: str | None = None
    seed: int | str | None = None  # an int in a sweep; a submissions file's own label otherwise
    error: str | None = None  # one line: why there is no score, or what else went wrong
    isolation: Any = None  # the run's integrity record (metadata.json `integrity`)
    submission_sha256: str | None = None
    leaderboard_rank: int | None = None
    leaderboard_share_beaten: float | None = None
    leaderboard_teams: int | None = None
    data_dir: str | None = None  # the prepared data graded against (--data-dir, else the config's)
    recorded_data_dir: str | None = None  # the run's metadata.json data_dir when it differs (not used)
    agent_id: str | None = (
        None  # the agent variant of the run (None: unknown; mlebench_hpc.sweep.attribution)
    )
    cost: Any = (
        None  # the run's job as Slurm allocated or accounted it (mlebench_hpc.run.cost); None: unknown
    )

    @property
    def medal(self) -> str | None:
        """gold, silver or bronze (the best one won), or None."""
        return next((m for m in MEDALS if getattr(self, f"{m}_medal")), None)

    def to_dict(self) -> dict[str, Any]:
        """The report's JSON object: REPORT_FIELDS in order, created_at in ISO 8601."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["created_at"] = self.created_at.isoformat()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompetitionReport:
        """A report as grading_report.json holds it (ours or upstream's: missing extras are None)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        created = values.get("created_at")
        values["created_at"] = datetime.fromisoformat(created) if isinstance(created, str) else now_utc()
        for name in EXTRA_FIELDS:
            values.setdefault(name, None)
        return cls(**values)


def aggregate(
    reports: Iterable[CompetitionReport],
    backend: dict[str, str] | None = None,
    superseded: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Upstream's run-group report (same keys and sums) plus created_at, the grading backend and the
    superseded attempts of sweep pairs (listed, not in REPORTS, never counted)."""
    reports = list(reports)
    gold = sum(r.gold_medal for r in reports)
    silver = sum(r.silver_medal for r in reports)
    bronze = sum(r.bronze_medal for r in reports)
    group: dict[str, Any] = {
        "total_runs": len(reports),
        "total_runs_with_submissions": sum(r.submission_exists for r in reports),
        "total_valid_submissions": sum(r.valid_submission for r in reports),
        "total_medals": gold + silver + bronze,
        "total_gold_medals": gold,
        "total_silver_medals": silver,
        "total_bronze_medals": bronze,
        "total_above_median": sum(r.above_median for r in reports),
        "competition_reports": [r.to_dict() for r in reports],
        "created_at": now_utc().isoformat(),
    }
    if backend is not None:
        group["grading_backend"] = backend.get("backend")
        group["grading_backend_version"] = backend.get("version")
    group["superseded_runs"] = list(superseded or [])
    group["cost"] = group_cost(r.cost for r in reports)
    return group


def agents_in(reports: Iterable[CompetitionReport]) -> list[str | None]:
    """The agents of REPORTS, by id, unknown (None) last."""
    from mlebench_hpc.sweep.attribution import ordered

    return ordered(r.agent_id for r in reports)


def aggregate_agents(
    reports: list[CompetitionReport],
    backend: dict[str, str] | None = None,
    superseded: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str | None, dict[str, Any]]]:
    """(the group's report, each agent's own report). One agent: `aggregate` alone, and no per-agent
    report. Several: upstream's keys per agent only."""
    from mlebench_hpc.sweep.attribution import label

    agents = agents_in(reports)
    if len(agents) < 2:
        return aggregate(reports, backend, superseded), {}
    every = list(superseded or [])
    own = {
        a: aggregate(
            [r for r in reports if r.agent_id == a],
            backend,
            [s for s in every if s.get("agent_id") == a],
        )
        for a in agents
    }
    group: dict[str, Any] = {
        "agents": [label(a) for a in agents],
        "by_agent": {label(a): own[a] for a in agents},
        "created_at": now_utc().isoformat(),
    }
    if backend is not None:
        group["grading_backend"] = backend.get("backend")
        group["grading_backend_version"] = backend.get("version")
    group["superseded_runs"] = every
    group["cost"] = group_cost(r.cost for r in reports)
    return group, own
