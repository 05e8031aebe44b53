"""Each graded run's cost, at grading time: Slurm's accounting (`sacct`) where the site keeps it,
else the allocation the run's job recorded at its end (metadata.json `cost`, written by the host's
`run cost`), else None (a job killed before its end trap ran, on a site without accounting).
Nothing the agent wrote is read."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from mlebench_hpc import slurm_query
from mlebench_hpc.cost import components_from_sacct, run_cost, valid_cost
from mlebench_hpc.grading.report import CompetitionReport
from mlebench_hpc.runs import read_run


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


def accounted_cost(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The run's cost from sacct, or None when sacct does not know its job."""
    job = _job_of(meta)
    rows = slurm_query.sacct_rows(job) if job else None
    if not rows:
        return None
    allocs = sum(1 for r in rows if "." not in r.get("JobID", ""))
    return run_cost(components_from_sacct(rows, _names(meta, allocs)), "sacct", job)


def run_dir_cost(run_dir: Path, accounting: bool) -> dict[str, Any] | None:
    run = read_run(run_dir)
    if run is None:
        return None
    if accounting and (found := accounted_cost(run.meta)) is not None:
        return found
    return valid_cost(run.meta.get("cost"))


def with_costs(reports: list[CompetitionReport]) -> list[CompetitionReport]:
    """REPORTS with their runs' cost filled in (one check of the site's accounting for them all)."""
    if not any(r.run_dir for r in reports):
        return reports
    accounting = slurm_query.accounting_enabled()
    return [replace(r, cost=run_dir_cost(Path(r.run_dir), accounting)) if r.run_dir else r for r in reports]
