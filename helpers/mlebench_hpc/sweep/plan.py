"""Sweeps: agents x competitions x seeds, one Slurm array per agent (scripts_hpc/submit_sweep.sh).

`mlebench-hpc sweep-plan` resolves and validates the competition set (a file, or a split of
upstream's by name: mlebench_hpc.competition_sets), decides which (agent, competition, seed) pairs
of the agent being submitted still need a run (the resume rule below), writes the array's task list
and records each submission in GROUP/sweep.json. `mlebench-hpc status GROUP` prints one line per
pair and a line of counts per state (per agent when the group holds several).

Resume rule: a pair is done when one of its runs has an agent that exited (finished, failed or
at its time limit) with a submission collected and its grading server alive until the agent ended,
or when two of its runs failed. A pair whose latest array task is still pending or running in
Slurm is not submitted again. Only the pair's own agent's runs count (mlebench_hpc.sweep.attribution:
runs made before sweeps recorded agent ids included). Runs are found by their metadata.json
(mlebench_hpc.run.record); before deciding anything, runs whose record says running while Slurm says
their job ended get that end recorded (mlebench_hpc.sweep.stale). Which attempt of a pair counts:
mlebench_hpc.sweep.attempts."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from mlebench_hpc.atomic import write_atomic
from mlebench_hpc.competition_sets import competition_set, read_competition_list, resolve_competition_set
from mlebench_hpc.errors import HelperError
from mlebench_hpc.run.layout import run_in_group
from mlebench_hpc.run.record import RunRecord, RunStatus, array_task_id, scan_runs
from mlebench_hpc.slurm.query import WAITING_STATES, JobRecord
from mlebench_hpc.sweep.attribution import LEGACY_KEY, Attribution, attribute, unnamed
from mlebench_hpc.sweep.stale import settle

SWEEP_JSON = "sweep.json"
SWEEP_DIR = ".sweep"
MAX_FAILURES = 2
# Slurm states in which an array task may still run its script (again), or is still ending:
# not to be submitted a second time.
ACTIVE = WAITING_STATES | {"RUNNING", "COMPLETING"}
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING"})
# an agent id must fit in one field of a task row (tab-separated, read by awk and bash)
_AGENT_ID = re.compile(r"^[^\s\x00-\x1f\x7f]+$")
LOG_TAIL_BYTES = 64 * 1024
# The states `status` counts pairs in: how the pair's run ended (a RunStatus), where Slurm holds its
# task (running, pending), or unknown.
PAIR_FINISHED = RunStatus.FINISHED.value
PAIR_FAILED = RunStatus.FAILED.value
PAIR_CANCELLED = RunStatus.CANCELLED.value
PAIR_LOST = RunStatus.LOST.value
PAIR_RUNNING = RunStatus.RUNNING.value
PAIR_PENDING = "pending"
PAIR_UNKNOWN = "unknown"
# In the order of `status`'s last line.
PAIR_STATES: tuple[str, ...] = (
    PAIR_FINISHED,
    PAIR_FAILED,
    PAIR_CANCELLED,
    PAIR_LOST,
    PAIR_RUNNING,
    PAIR_PENDING,
    PAIR_UNKNOWN,
)


# ------------------------------------------------------------------ competition list
def competition_problems(ids: list[str], data_dir: Path) -> list[str]:
    """Every unknown or unprepared competition, one line each (nothing is submitted then)."""
    from mlebench_hpc.grading import GradingSetupError, load_competition

    problems: list[str] = []
    for cid in ids:
        prepared = data_dir / cid / "prepared"
        try:
            load_competition(cid, data_dir, need_answers=False)
        except GradingSetupError as exc:
            problems.append(f"{cid}: {exc}")
            continue
        missing = [p for p in ("public", "private") if not (prepared / p).is_dir()]
        if missing:
            problems.append(
                f"{cid}: not prepared in {data_dir} ({'/, '.join(missing)}/ missing): run "
                f"`mlebench prepare -c {cid}` (demo competitions: "
                f"`mlebench-hpc prepare-demo --data-dir {data_dir}`)"
            )
    return problems


# ------------------------------------------------------------------ pairs
Pair = tuple[str | None, str, int]  # (agent id, competition, seed); None: an agent nobody named


@dataclass
class PairState:
    agent: str | None
    competition: str
    seed: int
    runs: list[RunRecord] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return any(r.done for r in self.runs)

    @property
    def failures(self) -> int:
        return sum(r.failed for r in self.runs)

    @property
    def finished(self) -> bool:
        """Nothing more to run: done, or failed MAX_FAILURES times."""
        return self.done or self.failures >= MAX_FAILURES


def pair_states(pairs: list[Pair], runs: list[RunRecord], attribution: Attribution) -> dict[Pair, PairState]:
    """Each pair with its agent's runs of its competition and seed (another agent's never count)."""
    states = {p: PairState(*p) for p in pairs}
    for run in runs:
        seed = run.seed
        if seed is None:
            continue
        key = (attribution.of_run(run), run.competition, seed)
        if key in states:
            states[key].runs.append(run)
    return states


def check_agent_id(agent: str) -> None:
    if not _AGENT_ID.match(agent):
        raise HelperError(
            f"agent id {agent!r} holds white space or control characters, which a sweep's task rows "
            "cannot carry: rename the variant in its config.yaml"
        )


# ------------------------------------------------------------------ sweep.json
def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_sweep(group_dir: Path) -> dict[str, Any]:
    path = group_dir / SWEEP_JSON
    if not path.is_file():
        return {"submissions": [], "tasks": []}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        raise HelperError(f"{path} is not valid JSON: fix or move it away") from None
    data.setdefault("submissions", [])
    data.setdefault("tasks", [])
    return data


def save_sweep(group_dir: Path, data: dict[str, Any]) -> None:
    """Atomic: a concurrent `status` never reads half a file."""
    write_atomic(group_dir / SWEEP_JSON, (json.dumps(data, indent=2) + "\n").encode(), 0o644)


def latest_tasks(data: dict[str, Any], attribution: Attribution) -> dict[Pair, dict[str, Any]]:
    """The most recent array task of every pair (later submissions win)."""
    out: dict[Pair, dict[str, Any]] = {}
    for task in data.get("tasks", []):
        out[(attribution.of_task(task), str(task["competition"]), int(task["seed"]))] = task
    return out


# ------------------------------------------------------------------ Slurm
def task_job_id(task: dict[str, Any]) -> str:
    return array_task_id(task["array_job_id"], task["array_index"])


def array_ids(data: dict[str, Any]) -> list[str]:
    return sorted({str(t["array_job_id"]) for t in data.get("tasks", [])})


def settled_runs(
    group_dir: Path, data: dict[str, Any], use_slurm: bool, reader: str
) -> tuple[list[RunRecord], dict[str, JobRecord] | None]:
    """The group's runs, stale ones settled, and Slurm's records of its arrays (None: not asked
    or no answer). One squeue call for the arrays and any stale run outside them."""
    runs = scan_runs(group_dir)
    if not use_slurm:
        return runs, None
    return settle(runs, reader, extra_ids=array_ids(data))


# ------------------------------------------------------------------ sweep-plan
def plan_pairs(
    competitions: list[str],
    seeds: int,
    runs: list[RunRecord],
    latest: dict[Pair, dict[str, Any]],
    slurm: dict[str, JobRecord] | None,
    agent: str | None,
    attribution: Attribution,
) -> tuple[list[Pair], dict[str, int]]:
    """The pairs of AGENT still to run, and counts of the rest (only AGENT's runs and tasks count)."""
    pairs: list[Pair] = [(agent, c, s) for c in competitions for s in range(seeds)]
    states = pair_states(pairs, runs, attribution)
    todo: list[Pair] = []
    counts = {"pairs": len(pairs), "done": 0, "failed_twice": 0, "active": 0, "to_submit": 0}
    for pair in pairs:
        st = states[pair]
        if st.done:
            counts["done"] += 1
            continue
        if st.failures >= MAX_FAILURES:
            counts["failed_twice"] += 1
            continue
        task = latest.get(pair)
        if task is not None and slurm is not None:
            ts = slurm.get(task_job_id(task))
            if ts is not None and ts.state in ACTIVE:
                counts["active"] += 1
                continue
        todo.append(pair)
    counts["to_submit"] = len(todo)
    return todo, counts


def record_submission(
    group_dir: Path,
    array_job_id: str,
    tasks_file: Path,
    asked: dict[str, Any],
    command: str,
    agent: str | None = None,
) -> dict[str, Any]:
    """Add a submitted array to sweep.json. The first submission naming its agent into a group with
    runs or tasks that name none records whose they are (attribution.py: `legacy_agent_id`)."""
    data = load_sweep(group_dir)
    rows = read_tasks_file(tasks_file)
    if agent and LEGACY_KEY not in data:
        runs = scan_runs(group_dir) if group_dir.is_dir() else []
        if unnamed(runs, data):
            data[LEGACY_KEY] = attribute(runs, data, planned=agent).legacy
    n = len(data["submissions"]) + 1
    data.update({"group": group_dir.name, "group_dir": str(group_dir.resolve()), "asked": asked})
    data["submissions"].append(
        {
            "n": n,
            "array_job_id": array_job_id,
            "agent_id": agent,
            "submitted": now_iso(),
            "tasks_file": str(tasks_file),
            "n_tasks": len(rows),
            "command": command,
            "asked": asked,
        }
    )
    for index, comp, seed, row_agent in rows:
        data["tasks"].append(
            {
                "competition": comp,
                "seed": seed,
                "agent_id": row_agent or agent,
                "array_job_id": array_job_id,
                "array_index": index,
                "job_id": array_task_id(array_job_id, index),
                "submission": n,
                "run_dir": str(run_in_group(group_dir.resolve(), comp, array_task_id(array_job_id, index))),
            }
        )
    save_sweep(group_dir, data)
    return data


def write_tasks_file(path: Path, todo: list[Pair]) -> None:
    """index<TAB>competition<TAB>seed<TAB>agent id, one row per task."""
    write_atomic(path, "".join(f"{i}\t{c}\t{s}\t{a or ''}\n" for i, (a, c, s) in enumerate(todo)).encode())


def read_tasks_file(path: Path) -> list[tuple[int, str, int, str | None]]:
    """(index, competition, seed, agent id); task files written before rows named their agent
    have three columns (agent None)."""
    rows: list[tuple[int, str, int, str | None]] = []
    for line in path.read_text().splitlines():
        if line.strip():
            index, comp, seed, *rest = line.split("\t")
            rows.append((int(index), comp, int(seed), rest[0] if rest and rest[0] else None))
    return rows


def _asked(list_file: Path | None, seeds: int, max_parallel: int, agent: str | None) -> dict[str, Any]:
    asked: dict[str, Any] = {
        "competitions_file": str(list_file.resolve()) if list_file else None,
        "seeds": seeds,
        "max_parallel": max_parallel,
        "agent_id": agent,
    }
    if list_file is not None:
        cs = competition_set(list_file.resolve())
        asked.update(competition_set=cs.name, split=cs.name if cs.split else None)
    return asked


@click.command("sweep-plan")
@click.option("--group-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--competitions",
    "--competition-set",
    "list_value",
    help="Competition set: a file of one id per line (# comments and blank lines ignored), or the name "
    "of a split (split75, low, ...) of $MLEBENCH_DIR/experiments/splits/, else upstream's as shipped.",
)
@click.option(
    "--mlebench-dir",
    default=None,
    help="Upstream's checkout whose experiments/splits/ names sets (MLEBENCH_DIR of the config).",
)
@click.option("--agent-id", "agent", default=None, help="The agent variant the pairs are planned for.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Prepared data (DATA_DIR of the config).",
)
@click.option(
    "--tasks-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the pairs to run here (index<TAB>competition<TAB>seed<TAB>agent id).",
)
@click.option("--no-slurm", is_flag=True, help="Do not ask Slurm which tasks are still queued.")
@click.option(
    "--check-only",
    is_flag=True,
    help="Only resolve and validate the competition set; print the file it names.",
)
@click.option(
    "--record",
    "record_job",
    metavar="ARRAY_JOB_ID",
    help="Record a submitted array (with --tasks) in GROUP_DIR/sweep.json.",
)
@click.option("--tasks", "tasks_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--max-parallel", type=int, default=0)
@click.option("--command", "command", default="", help="The sbatch command line (recorded).")
def sweep_plan_cmd(
    group_dir: Path | None,
    list_value: str | None,
    mlebench_dir: str | None,
    agent: str | None,
    seeds: int,
    data_dir: Path | None,
    tasks_out: Path | None,
    no_slurm: bool,
    record_job: str | None,
    tasks_file: Path | None,
    max_parallel: int,
    command: str,
    check_only: bool,
) -> None:
    """Resolve and validate the competition set and print how many pairs of --agent-id still need a
    run (writing them to --tasks-out), or, with --record, record a submitted array in sweep.json."""
    list_file: Path | None = None
    if list_value:
        list_file, note = resolve_competition_set(list_value, mlebench_dir, Path.cwd())
        if note and check_only:
            click.echo(note, err=True)
    if agent is not None:
        check_agent_id(agent)
    if record_job:
        if group_dir is None or tasks_file is None or not tasks_file.is_file():
            raise HelperError(
                "--record needs --group-dir and --tasks FILE (the task list that was submitted)"
            )
        asked = _asked(list_file, seeds, max_parallel, agent)
        if list_file is not None:
            asked["competitions"], _ = read_competition_list(list_file)
        record_submission(group_dir, record_job, tasks_file, asked, command, agent)
        return
    if list_file is None or data_dir is None:
        raise HelperError("sweep-plan needs --competitions FILE and --data-dir DIR")
    ids, problems = read_competition_list(list_file)
    if not problems:
        problems = competition_problems(ids, data_dir)
    if problems:
        for p in problems:
            click.echo(f"sweep error: {p}", err=True)
        raise HelperError(f"{len(problems)} problem(s) in {list_file}: fix the list (nothing was submitted)")
    if check_only:
        click.echo(str(list_file))
        return
    if group_dir is None or not agent:
        raise HelperError("sweep-plan needs --group-dir DIR and --agent-id ID to plan")
    data = load_sweep(group_dir)
    runs, slurm = settled_runs(group_dir, data, use_slurm=not no_slurm, reader="sweep-plan")
    if not no_slurm and slurm is None:
        click.echo(
            "sweep: warning: cannot ask Slurm which tasks are queued; "
            "pairs still queued may be submitted twice",
            err=True,
        )
    attribution = attribute(runs, data, planned=agent)
    todo, counts = plan_pairs(ids, seeds, runs, latest_tasks(data, attribution), slurm, agent, attribution)
    click.echo(
        f"sweep: agent {agent}: {counts['pairs']} pairs ({len(ids)} competitions x {seeds} seeds): "
        f"{counts['done']} done, {counts['failed_twice']} failed twice, "
        f"{counts['active']} queued or running, {counts['to_submit']} to submit",
        err=True,
    )
    if tasks_out is not None:
        write_tasks_file(tasks_out, todo)
    click.echo(str(len(todo)))


# ------------------------------------------------------------------ status
