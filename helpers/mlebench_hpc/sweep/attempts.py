"""One run per (agent, competition, seed): a sweep pair's final attempt counts, earlier ones are superseded.

A pair of a sweep group can have several run directories: an attempt cancelled, killed, lost on a
dead node or failed by its grading server, and the attempt a resume submitted after it (a requeue by
Slurm reuses the same directory, so it is one attempt). Every group number (the grading report's
totals, summary.csv/.md/.png, `status`) counts the pair's **final attempt** only; the earlier ones
stay on disk and are listed as superseded, with how they ended.

Final attempt: a pair's attempts are its run directories in the group (metadata.json with the
pair's competition_id and seed, written by a sweep task: `sweep_task_index` set, of the pair's agent:
mlebench_hpc.sweep.attribution), ordered by when
their array was submitted: the array's position in GROUP/sweep.json's `submissions`; an array that
sweep.json does not list (its record failed, or sweep.json is gone) is newer than every listed one,
and such arrays come in job id order; ties (and runs made without Slurm) by the attempt's start
time, then by directory name. The last one is final, whatever its state: a resume submits a pair
again only when no attempt is done, so a later attempt exists only because the earlier ones did not
count. Runs not made by a sweep task each count on their own."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlebench_hpc.run.record import RunRecord
from mlebench_hpc.sweep.attribution import Attribution, attribute

SWEEP_JSON = "sweep.json"


@dataclass(frozen=True)
class Superseded:
    run: RunRecord
    final: RunRecord
    attempt: int  # 1-based, in submission order
    attempts: int  # of this pair, the final one included
    agent: str | None = None  # the pair's agent (attribution.py)

    def as_dict(self) -> dict[str, object]:
        return {
            "run_dir": str(self.run.path),
            "agent_id": self.agent,
            "competition_id": self.run.competition,
            "seed": self.run.seed,
            "attempt": self.attempt,
            "attempts": self.attempts,
            "status": self.run.status_text,
            "ended": self.run.ended_text(),
            "superseded_by": str(self.final.path),
        }


def read_sweep_json(group_dir: Path) -> dict[str, Any]:
    """GROUP/sweep.json as far as it can be read ({} without one): submissions and tasks are lists of
    objects (anything else in them is dropped)."""
    try:
        data = json.loads((group_dir / SWEEP_JSON).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    for key in ("submissions", "tasks"):
        items = data.get(key)
        data[key] = [x for x in items if isinstance(x, dict)] if isinstance(items, list) else []
    return data


def _order(data: dict[str, Any]) -> dict[str, int]:
    return {str(s.get("array_job_id")): i for i, s in enumerate(data.get("submissions", []))}


def submission_order(group_dir: Path) -> dict[str, int]:
    """array job id -> its position among GROUP/sweep.json's submissions ({} without sweep.json)."""
    return _order(read_sweep_json(group_dir))


def by_group(runs: list[RunRecord]) -> dict[Path, list[RunRecord]]:
    groups: dict[Path, list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[run.path.parent].append(run)
    return groups


def group_attributions(runs: list[RunRecord]) -> dict[Path, Attribution]:
    """Each group's attribution (its runs among RUNS and its sweep.json)."""
    return {g: attribute(rs, read_sweep_json(g)) for g, rs in by_group(runs).items()}


def run_agents(runs: list[RunRecord]) -> dict[Path, str | None]:
    """run dir -> the agent it belongs to (None: unknown)."""
    attr = group_attributions(runs)
    return {r.path: attr[r.path.parent].of_run(r) for r in runs}


def attempt_key(run: RunRecord, order: dict[str, int]) -> tuple[int, int, str, str]:
    rank = order.get(run.array_job_id)
    if rank is not None:
        return (0, rank, run.attempt_start, run.path.name)
    job = int(run.array_job_id) if run.array_job_id.isdigit() else -1
    return (1, job, run.attempt_start, run.path.name)


def split_attempts(runs: list[RunRecord]) -> tuple[list[RunRecord], list[Superseded]]:
    """(runs that count, superseded attempts). Counting runs keep the order of RUNS."""
    pairs: dict[tuple[Path, str | None, str, int | None], list[RunRecord]] = defaultdict(list)
    datas = {g: read_sweep_json(g) for g in by_group(runs)}
    attr = {g: attribute(rs, datas[g]) for g, rs in by_group(runs).items()}
    for run in runs:
        if run.from_sweep:
            group = run.path.parent
            pairs[(group, attr[group].of_run(run), run.competition, run.seed)].append(run)
    superseded: list[Superseded] = []
    dropped: set[Path] = set()
    for (group, agent, _comp, _seed), attempts in pairs.items():
        if len(attempts) < 2:
            continue
        order = _order(datas[group])
        ranked = sorted(attempts, key=lambda r: attempt_key(r, order))
        final = ranked[-1]
        for i, run in enumerate(ranked[:-1], 1):
            superseded.append(Superseded(run, final, i, len(ranked), agent))
            dropped.add(run.path)
    superseded.sort(
        key=lambda s: (str(s.run.path.parent), s.agent or "", s.run.competition, s.run.seed or 0, s.attempt)
    )
    return [r for r in runs if r.path not in dropped], superseded


def attempt_numbers(runs: list[RunRecord]) -> dict[Path, tuple[int, int]]:
    """run dir -> (its attempt number, the pair's attempts) for sweep runs of pairs with several."""
    _final, superseded = split_attempts(runs)
    out: dict[Path, tuple[int, int]] = {}
    for s in superseded:
        out[s.run.path] = (s.attempt, s.attempts)
        out[s.final.path] = (s.attempts, s.attempts)
    return out


def asked_by_agent(runs: list[RunRecord]) -> dict[str | None, list[dict[str, Any]]]:
    """agent -> what its sweep submissions asked (sweep.json `asked`: the competition set, seeds),
    over the groups of RUNS."""
    out: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for group, rs in by_group(runs).items():
        data = read_sweep_json(group)
        attr = attribute(rs, data)
        for sub in data.get("submissions", []):
            asked = sub.get("asked")
            if isinstance(asked, dict):
                out[attr.of_task(sub)].append(asked)
    return dict(out)


@dataclass(frozen=True)
class Counted:
    """What a reader of run directories (grade) counts: the directories, the superseded attempts,
    each run's agent and what each agent's sweeps asked."""

    dirs: set[Path]
    superseded: list[Superseded]
    agents: dict[Path, str | None]
    asked: dict[str | None, list[dict[str, Any]]]


def settle_and_split(run_dirs: list[Path], reader: str) -> Counted:
    """For a reader of run directories (grade): record the end of stale runs (one Slurm call, only
    when some record says running), then what counts. A directory whose metadata cannot be read is
    kept: the caller reports it as it always did."""
    from mlebench_hpc.run.record import read_run
    from mlebench_hpc.sweep.stale import settle

    runs = [r for r in (read_run(d) for d in run_dirs) if r is not None]
    runs, _records = settle(runs, reader)
    _final, superseded = split_attempts(runs)
    dropped = {s.run.path for s in superseded}
    return Counted(
        {d for d in run_dirs if d not in dropped}, superseded, run_agents(runs), asked_by_agent(runs)
    )
