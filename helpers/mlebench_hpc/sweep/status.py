"""What a sweep group is doing: one PairStatus per (agent, competition, seed) from sweep.json, the
run records and Slurm (mlebench_hpc.sweep.plan holds the planning; `mlebench-hpc status` prints it:
mlebench_hpc.sweep.status_cli)."""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlebench_hpc.errors import HelperError
from mlebench_hpc.printable import printable
from mlebench_hpc.run.record import FAILED, RunRecord, RunStatus, run_dir_name
from mlebench_hpc.slurm.query import JobRecord
from mlebench_hpc.sweep.attempts import attempt_numbers, split_attempts
from mlebench_hpc.sweep.attribution import attribute, label, ordered
from mlebench_hpc.sweep.plan import (
    ACTIVE,
    LOG_TAIL_BYTES,
    PAIR_CANCELLED,
    PAIR_FAILED,
    PAIR_FINISHED,
    PAIR_LOST,
    PAIR_PENDING,
    PAIR_RUNNING,
    PAIR_STATES,
    PAIR_UNKNOWN,
    RUNNING_STATES,
    SWEEP_DIR,
    SWEEP_JSON,
    latest_tasks,
    load_sweep,
    settled_runs,
    task_job_id,
)
from mlebench_hpc.untrusted import UntrustedFileError, read_text_bounded


def _log_error(group_dir: Path, job_id: str) -> str:
    """The last `error:` line of the task's output file, for a failure reason, made printable."""
    # The job output holds what the agent printed: read its tail only, never through a link, and
    # split on newlines only (a CR or form feed of the agent's is escaped, not a line break).
    with contextlib.suppress(OSError, UntrustedFileError):
        text = read_text_bounded(group_dir, f"{SWEEP_DIR}/logs/{job_id}.out", LOG_TAIL_BYTES)
        lines = [ln.strip() for ln in text.split("\n") if "error:" in ln]
        if lines:
            return printable(lines[-1][:200])
    return ""


@dataclass(frozen=True)
class PairStatus:
    competition: str
    seed: int
    job: str
    state: str  # one of PAIR_STATES
    text: str
    agent: str | None = None


def _prefix(run: RunRecord | None, attempt: tuple[int, int] | None) -> str:
    parts = []
    if attempt is not None:
        parts.append(f"attempt {attempt[0]} of {attempt[1]}")
    n = run.requeue_count if run is not None else 0
    if n:
        parts.append(f"requeued {n} time{'s' if n != 1 else ''}")
    return "".join(f"{p}, " for p in parts)


def describe_task(
    task: dict[str, Any],
    run: RunRecord | None,
    slurm: dict[str, JobRecord] | None,
    group_dir: Path,
    attempt: tuple[int, int] | None = None,
) -> tuple[str, str]:
    """(state, one line) of a pair from its latest task, that task's run and Slurm's record."""
    job = task_job_id(task)
    ts = slurm.get(job) if slurm is not None else None
    prefix = _prefix(run, attempt)
    if ts is not None and ts.state in RUNNING_STATES:
        return PAIR_RUNNING, f"{prefix}running on {ts.nodes or '?'}"
    if ts is not None and ts.state in ACTIVE:
        reason = f" ({ts.reason})" if ts.reason else ""
        # the record says running, Slurm holds the task again: requeued without a chance to say so
        unsaid = run is not None and run.status in (RunStatus.STARTING, RunStatus.RUNNING)
        if unsaid and run is not None and ts.restarts > run.restart_count:
            return PAIR_PENDING, f"{prefix}requeued by Slurm (restart {ts.restarts}), pending{reason}"
        return PAIR_PENDING, f"{prefix}pending{reason}"
    if run is None:
        why = _log_error(group_dir, job)
        if ts is None:
            known = "Slurm was not asked" if slurm is None else f"Slurm no longer knows {job}"
            return PAIR_UNKNOWN, f"unknown: no run directory and {known}" + (f": {why}" if why else "")
        if ts.state == "CANCELLED":
            return PAIR_CANCELLED, "cancelled before it started"
        return PAIR_FAILED, f"failed before the agent started (Slurm {ts.state})" + (
            f": {why}" if why else ""
        )
    text = prefix + run.ended_text()
    if run.done:
        return PAIR_FINISHED, text
    if run.status == RunStatus.LOST:
        return PAIR_LOST, text
    if run.status == RunStatus.CANCELLED:
        return PAIR_CANCELLED, text
    if run.status in FAILED or run.status == RunStatus.INTEGRITY_FAILED:
        # a sweep task starts each attempt with slurm_end: null; only Slurm's own words replace the reason
        plain = not run.infrastructure_failure and not run.meta.get("slurm_end")
        why = _log_error(group_dir, job) if plain else ""
        return PAIR_FAILED, text + (f": {why}" if why else "")
    asked = "Slurm not asked" if slurm is None else "no answer from Slurm"
    if run.status == RunStatus.REQUEUED:
        return PAIR_UNKNOWN, f"{prefix}stopped for a requeue ({asked})"
    return PAIR_UNKNOWN, f"{prefix}record says {run.status_text or RunStatus.STARTING.value} ({asked})"


def _counts(pairs: list[PairStatus]) -> str:
    counts = Counter(r.state for r in pairs)
    return f"{len(pairs)} pairs: " + ", ".join(f"{counts[s]} {s}" for s in PAIR_STATES if counts[s])


@dataclass(frozen=True)
class SweepStatus:
    pairs: list[PairStatus]
    superseded: int  # earlier attempts of the pairs, not counted
    runs: list[RunRecord] = field(default_factory=list)  # every run directory of the group (sweep/cost.py)
    running: list[str] = field(default_factory=list)  # the tasks Slurm runs now (job ids)
    slurm_answered: bool = False

    @property
    def agents(self) -> list[str | None]:
        return ordered(r.agent for r in self.pairs)

    def counts_line(self) -> str:
        """Pairs per state, of the whole group, and the superseded attempts."""
        line = _counts(self.pairs)
        if self.superseded:
            line += f"; {self.superseded} earlier attempt{'s' if self.superseded != 1 else ''} superseded"
        return line

    def counts_lines(self) -> list[str]:
        """One line for a group of one agent (a group's usual case), else one per agent."""
        agents = self.agents
        if len(agents) < 2:
            return [self.counts_line()]
        lines = [
            f"agent {printable(label(a))}: {_counts([r for r in self.pairs if r.agent == a])}" for a in agents
        ]
        if self.superseded:
            lines.append(f"{self.superseded} earlier attempt{'s' if self.superseded != 1 else ''} superseded")
        return lines


def _pair_order(row: PairStatus) -> tuple[bool, str, str, int]:
    return (row.agent is None, row.agent or "", row.competition, row.seed)


def sweep_status(group_dir: Path, use_slurm: bool = True) -> SweepStatus:
    data = load_sweep(group_dir)
    if not data["tasks"]:
        raise HelperError(f"{group_dir} has no {SWEEP_JSON} with tasks: is it a sweep group directory?")
    runs, slurm = settled_runs(group_dir, data, use_slurm, reader="status")
    attribution = attribute(runs, data)
    by_name = {r.path.name: r for r in runs}
    attempts = attempt_numbers(runs)
    finals = {
        (attribution.of_run(r), r.competition, r.seed): r for r in split_attempts(runs)[0] if r.from_sweep
    }
    rows: list[PairStatus] = []
    for (agent, comp, seed), task in latest_tasks(data, attribution).items():
        job = task_job_id(task)
        run = by_name.get(run_dir_name(comp, job))
        final = finals.get((agent, comp, seed))
        ts = slurm.get(job) if slurm is not None else None
        if run is None and final is not None and not (ts is not None and ts.state in ACTIVE):
            # The latest task never made a run directory (cancelled or failed before it started):
            # the pair is its final attempt, as `grade` counts it.
            final_task = {"array_job_id": final.array_job_id, "array_index": final.meta["sweep_task_index"]}
            state, text = describe_task(final_task, final, slurm, group_dir, attempts.get(final.path))
            text += f"; then {job}: {describe_task(task, None, slurm, group_dir)[1]}"
            rows.append(PairStatus(comp, seed, task_job_id(final_task), state, text, agent))
            continue
        state, text = describe_task(task, run, slurm, group_dir, attempts.get(run.path) if run else None)
        rows.append(PairStatus(comp, seed, job, state, text, agent))
    superseded = sum(1 for n, total in attempts.values() if n < total)
    running = sorted(j for j, rec in (slurm or {}).items() if rec.state in RUNNING_STATES)
    return SweepStatus(sorted(rows, key=_pair_order), superseded, runs, running, slurm is not None)
