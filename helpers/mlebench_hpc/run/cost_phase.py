"""`mlebench-hpc run cost`: what a run's job cost as Slurm allocated it, recorded at the job's end
(the cost model: mlebench_hpc.run.cost)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mlebench_hpc.run import cost as costs
from mlebench_hpc.run import store
from mlebench_hpc.run.cgroup_memory import job_peak_mem_mb
from mlebench_hpc.run.layout import now, resolve_run
from mlebench_hpc.run.record import METADATA
from mlebench_hpc.slurm import query as slurm_query

# cgroup v1 counts a cgroup's page cache in its usage; v2's memory.peak too (README "Cost").
PEAK_SOURCE = "the job's cgroup per node (memory.max_usage_in_bytes or memory.peak), read by its scripts"


@click.command("cost")
@click.argument("run", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--job", required=True, help="The Slurm job whose allocation the run held (a hetjob's id).")
@click.option(
    "--components",
    default="agent",
    show_default=True,
    help="The job's components in Slurm's order, '+' for what shares one (grading,agent+llm).",
)
@click.option("--peak-of", default=None, help="Only record this node's peak memory, for component NAME.")
@click.option("--competition", default=None, help="Instead of RUN: this job's run of COMPETITION.")
@click.option("--job-id", default=None, help="With --competition: the run's job id (default: $MH_JOB_ID).")
@click.option("--attempt", type=click.IntRange(min=0), default=None)
def cost_cmd(
    run: Path | None,
    job: str,
    components: str,
    peak_of: str | None,
    competition: str | None,
    job_id: str | None,
    attempt: int | None,
) -> None:
    """Record what RUN's job cost as Slurm allocated it (metadata.json `cost`: CPUs, memory, GPUs,
    nodes, elapsed per component; CPU- and GPU-hours; peak memory from the job's cgroup), at the
    job's end. A requeued run adds up its attempts (`cost_attempts`). Slurm cannot be asked: the
    reason goes into `cost_unknown`, exit 0 (the run's result stands without it)."""
    run = resolve_run(run, competition, job_id)
    if not (run / METADATA).is_file():
        return  # no run record (the job failed before it made one): nothing to add the cost to
    if peak_of is not None:
        record_peak(run, peak_of, attempt)
        return
    key = str(attempt or 0)
    peak = job_peak_mem_mb()
    why = ""
    try:
        shown = slurm_query.show_job(job, detail=True) if slurm_query.valid_job_id(job) else None
        records = costs.records_of(shown, job) if shown else None
    except slurm_query.SlurmError as exc:
        records, why = None, str(exc)
    if not records:
        why = why or f"Slurm does not know job {job!r}"
        click.echo(f"WARNING: no cost recorded for {run.name}: {why}", err=True)
        _record_cost(run, attempt, lambda cur: {"cost_unknown": why})
        return
    own = costs.component_names(components)[0][0]  # the batch script runs on component 0's node

    def merge(current: dict[str, Any]) -> dict[str, Any]:
        cur_peaks = _with_peak(current, key, own, peak)["cost_peaks"][key] if peak is not None else {}
        peaks = {**(current.get("cost_peaks") or {}).get(key, {}), **cur_peaks}
        this = costs.run_cost(costs.components_from_scontrol(records, components, peaks), "allocation", job)
        assert this is not None
        this.update(recorded_at=now(), peak_mem_source=PEAK_SOURCE)
        before = (current.get("cost_attempts") or {}).get(key)
        if isinstance(before, dict) and float(before.get("elapsed_s") or 0) > this["elapsed_s"]:
            this = before  # a later call of the same attempt saw a reset RunTime (requeued): keep the first
        attempts = {**(current.get("cost_attempts") or {}), key: this}
        ordered = [attempts[k] for k in sorted(attempts, key=lambda k: int(k) if k.isdigit() else 0)]
        return {"cost": costs.combine_attempts(ordered), "cost_attempts": attempts, "cost_unknown": None}

    _record_cost(run, attempt, merge)


def record_peak(run: Path, component: str, attempt: int | None) -> None:
    """This node's peak memory (the job's cgroup), for COMPONENT of this attempt: a hetjob's step
    records its own node's, the batch script the rest at the job's end."""
    peak = job_peak_mem_mb()
    if peak is not None:
        key = str(attempt or 0)
        _record_cost(run, attempt, lambda cur: _with_peak(cur, key, component, peak))


def _with_peak(current: dict[str, Any], key: str, name: str, peak: float) -> dict[str, Any]:
    peaks = dict(current.get("cost_peaks") or {})
    mine = dict(peaks.get(key) or {})
    mine[name] = max(peak, float(mine.get(name) or 0))
    peaks[key] = mine
    return {"cost_peaks": peaks}


def _record_cost(run: Path, attempt: int | None, make: Any) -> None:
    store.update(run, make, attempt)
