"""Each graded run's cost, at grading time: Slurm's accounting (`sacct`) where the site keeps it,
else the allocation the run's job recorded at its end (metadata.json `cost`, written by the host's
`run cost`), else None (a job killed before its end trap ran, on a site without accounting).
Nothing the agent wrote is read."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from mlebench_hpc.results.report import CompetitionReport
from mlebench_hpc.run.cost import components_from_sacct, run_cost, valid_cost
from mlebench_hpc.run.record import read_run
from mlebench_hpc.slurm import query as slurm_query


def _job_of(meta: dict[str, Any]) -> str:
    """The job Slurm's accounting knows the run by: the sweep task's own id, else the agent job's."""
    recorded = meta.get("cost") if isinstance(meta.get("cost"), dict) else {}
    for job in (recorded.get("slurm_job_id"), meta.get("sweep_task_job_id"), meta.get("agent_job_id")):
        if isinstance(job, str) and slurm_query.valid_job_id(job):
            return job
    return ""


def _names(meta: dict[str, Any], n: int) -> str:
    """The component names the job recorded, else the hetjob's (two components) or a sweep task's."""
    recorded = meta.get("cost") if isinstance(meta.get("cost"), dict) else {}
    comps = recorded.get("components")
    if isinstance(comps, list) and len(comps) == n and all(isinstance(c, dict) for c in comps):
        return ",".join("+".join([str(c.get("name")), *map(str, c.get("with") or [])]) for c in comps)
    return "grading,agent" if n == 2 else "agent+grading"


def rows_of(rows: list[dict[str, str]], job: str) -> list[dict[str, str]]:
    """JOB's own rows: itself (`45_6`), its hetjob components (`123+1`) and their steps (`.batch`)."""
    return [r for r in rows if (j := r.get("JobID", "")) == job or j.startswith((job + "+", job + "."))]


def accounted_cost(meta: dict[str, Any], rows: list[dict[str, str]]) -> dict[str, Any] | None:
    """The run's cost from sacct's ROWS, or None when they do not hold its job. sacct keeps the last
    attempt of a requeued job only: a run whose job recorded several attempts keeps that sum."""
    recorded = valid_cost(meta.get("cost"))
    if recorded is not None and int(recorded.get("attempts") or 1) > 1:
        return None
    job = _job_of(meta)
    mine = rows_of(rows, job) if job else []
    allocs = sum(1 for r in mine if "." not in r.get("JobID", ""))
    return run_cost(components_from_sacct(mine, _names(meta, allocs)), "sacct", job) if allocs else None


def with_costs(reports: list[CompetitionReport]) -> list[CompetitionReport]:
    """REPORTS with their runs' cost: sacct's where the site keeps accounting (one sacct call for
    them all), else what the run's job recorded at its end, else None."""
    runs = {r.run_dir: read_run(Path(r.run_dir)) for r in reports if r.run_dir}
    if not runs:
        return reports
    metas = {d: run.meta for d, run in runs.items() if run is not None}
    rows: list[dict[str, str]] = []
    if slurm_query.accounting_enabled():
        rows = slurm_query.sacct_rows([j for m in metas.values() if (j := _job_of(m))]) or []

    def cost(run_dir: str | None) -> dict[str, Any] | None:
        meta = metas.get(run_dir) if run_dir else None
        if meta is None:
            return None
        return (accounted_cost(meta, rows) if rows else None) or valid_cost(meta.get("cost"))

    return [replace(r, cost=cost(r.run_dir)) for r in reports]
