"""One run per (competition, seed): a sweep pair's final attempt counts, earlier ones are superseded.

A pair of a sweep group can have several run directories: an attempt cancelled, killed, lost on a
dead node or failed by its grading server, and the attempt a resume submitted after it (a requeue by
Slurm reuses the same directory, so it is one attempt). Every group number (the grading report's
totals, summary.csv/.md/.png, `status`) counts the pair's **final attempt** only; the earlier ones
stay on disk and are listed as superseded, with how they ended.

Final attempt: a pair's attempts are its run directories in the group (metadata.json with the
pair's competition_id and seed, written by a sweep task: `sweep_task_index` set), ordered by when
their array was submitted: the array's position in GROUP/sweep.json's `submissions`; an array that
sweep.json does not list (its record failed, or sweep.json is gone) is newer than every listed one,
and such arrays come in job id order; ties (and runs made without Slurm) by the attempt's start
time, then by directory name. The last one is final, whatever its state: a resume submits a pair
again only when no attempt is done, so a later attempt exists only because the earlier ones did not
count. Runs not made by a sweep task each count, as before."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from mlebench_hpc.runs import Run

SWEEP_JSON = "sweep.json"


@dataclass(frozen=True)
class Superseded:
    run: Run
    final: Run
    attempt: int  # 1-based, in submission order
    attempts: int  # of this pair, the final one included

    def as_dict(self) -> dict[str, object]:
        return {
            "run_dir": str(self.run.path),
            "competition_id": self.run.competition,
            "seed": self.run.seed,
            "attempt": self.attempt,
            "attempts": self.attempts,
            "status": self.run.status_text,
            "ended": self.run.ended_text(),
            "superseded_by": str(self.final.path),
        }


def submission_order(group_dir: Path) -> dict[str, int]:
    """array job id -> its position among GROUP/sweep.json's submissions ({} without sweep.json)."""
    try:
        data = json.loads((group_dir / SWEEP_JSON).read_text())
        subs = data.get("submissions", []) if isinstance(data, dict) else []
        return {str(s["array_job_id"]): i for i, s in enumerate(subs) if isinstance(s, dict)}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def attempt_key(run: Run, order: dict[str, int]) -> tuple[int, int, str, str]:
    rank = order.get(run.array_job_id)
    if rank is not None:
        return (0, rank, run.attempt_start, run.path.name)
    job = int(run.array_job_id) if run.array_job_id.isdigit() else -1
    return (1, job, run.attempt_start, run.path.name)


def split_attempts(runs: list[Run]) -> tuple[list[Run], list[Superseded]]:
    """(runs that count, superseded attempts). Counting runs keep the order of RUNS."""
    pairs: dict[tuple[Path, str, int | None], list[Run]] = defaultdict(list)
    for run in runs:
        if run.from_sweep:
            pairs[(run.path.parent, run.competition, run.seed)].append(run)
    orders: dict[Path, dict[str, int]] = {}
    superseded: list[Superseded] = []
    dropped: set[Path] = set()
    for (group, _comp, _seed), attempts in pairs.items():
        if len(attempts) < 2:
            continue
        order = orders.setdefault(group, submission_order(group))
        ranked = sorted(attempts, key=lambda r: attempt_key(r, order))
        final = ranked[-1]
        for i, run in enumerate(ranked[:-1], 1):
            superseded.append(Superseded(run, final, i, len(ranked)))
            dropped.add(run.path)
    superseded.sort(key=lambda s: (str(s.run.path.parent), s.run.competition, s.run.seed or 0, s.attempt))
    return [r for r in runs if r.path not in dropped], superseded


def attempt_numbers(runs: list[Run]) -> dict[Path, tuple[int, int]]:
    """run dir -> (its attempt number, the pair's attempts) for sweep runs of pairs with several."""
    _final, superseded = split_attempts(runs)
    out: dict[Path, tuple[int, int]] = {}
    for s in superseded:
        out[s.run.path] = (s.attempt, s.attempts)
        out[s.final.path] = (s.attempts, s.attempts)
    return out


def settle_and_split(run_dirs: list[Path], reader: str) -> tuple[set[Path], list[Superseded]]:
    """For a reader of run directories (grade): record the end of stale runs (one Slurm call, only
    when some record says running), then (the directories that count, the superseded attempts).
    A directory whose metadata cannot be read is kept: the caller reports it as it always did."""
    from mlebench_hpc.runs import read_run
    from mlebench_hpc.stale_runs import settle

    runs = [r for r in (read_run(d) for d in run_dirs) if r is not None]
    runs, _records = settle(runs, reader)
    _final, superseded = split_attempts(runs)
    dropped = {s.run.path for s in superseded}
    return {d for d in run_dirs if d not in dropped}, superseded
