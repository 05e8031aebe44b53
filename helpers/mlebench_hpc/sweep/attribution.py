"""Which agent a run, task or submission of a sweep group belongs to: pairs are (agent, competition,
seed), and several agents' numbers in one group never mix.

Since sweeps take --agent-id, every task row, every sweep.json task and submission, and every run's
metadata.json (at task start, before anything can fail) names its agent id. Groups made before hold
runs and tasks without one; each belongs to
1. the agent of its array: the one agent id that sweep.json's tasks of that array, or the other
   runs of it, name (e.g. a task that failed before its agent started, in an array submitted
   before task rows named their agent: every task of an array ran the same agent);
2. else the group's legacy agent: sweep.json's `legacy_agent_id`, which the first submission that
   names its agent records into a group holding such runs or tasks; until then the one agent the
   group names, when it names exactly one, else the agent being planned (sweep-plan), else unknown
   (None; `status` and `grade` show "(unknown)" when the group holds other agents as well).
So resuming an old group with the agent it ran (the config's AGENT_ID, the default) keeps its runs
that agent's, and an agent added to the group later never takes them over. Only host-written
records are read (metadata.json, sweep.json): an agent cannot move its run to another agent."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mlebench_hpc.run.record import RunRecord

UNKNOWN = "(unknown)"  # how the agent of a run no record names is shown (JSON keeps null)
LEGACY_KEY = "legacy_agent_id"


def _text(value: object) -> str:
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Attribution:
    legacy: str | None
    by_array: dict[str, str] = field(default_factory=dict)

    def _of(self, named: str, array: str) -> str | None:
        return named or self.by_array.get(array) or self.legacy

    def of_run(self, run: RunRecord) -> str | None:
        return self._of(run.agent_id, run.array_job_id)

    def of_task(self, task: dict[str, Any]) -> str | None:
        """A sweep.json task, or a submission (both name their array and, since --agent-id, their agent)."""
        return self._of(_text(task.get("agent_id")), _text(task.get("array_job_id")))


def unnamed(runs: Iterable[RunRecord], data: dict[str, Any]) -> bool:
    """Some run or task of the group names no agent (made before sweeps recorded agent ids)."""
    return any(not r.agent_id for r in runs) or any(
        not _text(t.get("agent_id")) for t in data.get("tasks", [])
    )


def attribute(runs: Iterable[RunRecord], data: dict[str, Any], planned: str | None = None) -> Attribution:
    """The attribution of one group: its runs and its sweep.json DATA ({} without one)."""
    runs = list(runs)
    per_array: dict[str, set[str]] = defaultdict(set)
    named: set[str] = set()
    for array, agent in [(r.array_job_id, r.agent_id) for r in runs] + [
        (_text(t.get("array_job_id")), _text(t.get("agent_id"))) for t in data.get("tasks", [])
    ]:
        if agent:
            named.add(agent)
            if array:
                per_array[array].add(agent)
    by_array = {a: next(iter(ids)) for a, ids in per_array.items() if len(ids) == 1}
    legacy = _text(data.get(LEGACY_KEY)) or (next(iter(named)) if len(named) == 1 else planned) or None
    return Attribution(legacy, by_array)


def label(agent: str | None) -> str:
    return agent if agent else UNKNOWN


def ordered(agents: Iterable[str | None]) -> list[str | None]:
    """Agent ids in the order reports list them: by id, unknown last."""
    return sorted(set(agents), key=lambda a: (a is None, a or ""))
