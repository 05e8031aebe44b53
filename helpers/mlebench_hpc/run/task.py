"""`mlebench-hpc run prepare|requeued|ended`: the sweep task's own phases (scripts_hpc/slurm_sweep_task.sh).

`prepare` is the task's start in one Python start: its row of the task list, the config (checked
for the pair, as the hetjob's steps then inherit it), the run directory (the same after a
requeue), the skip of a pair that already finished, and the record of the attempt's start.
`requeued` marks a run Slurm requeues into the same directory; `ended` settles a pair that failed
before its agent started."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from mlebench_hpc import config
from mlebench_hpc.errors import HelperError
from mlebench_hpc.run import store
from mlebench_hpc.run.layout import env, make_run_dir, now, run_path, shell
from mlebench_hpc.run.record import EXITED, RunStatus, read_run

# The images a pair needs (the hetjob's grading server and agent), checked once by `prepare`.
PAIR_IMAGES = ("GRADING_SIF", "AGENT_SIF")


def task_row(tasks: Path, index: int) -> tuple[str, int, str]:
    """(competition, seed, agent id or '') of row INDEX of a task list (index<TAB>competition<TAB>seed
    [<TAB>agent]: sweep.plan.write_tasks_file; lists written before rows named their agent have three)."""
    try:
        lines = tasks.read_text().splitlines()
    except OSError as exc:
        raise HelperError(f"cannot read the task list {tasks}: {exc.strerror}") from None
    for line in lines:
        cells = line.split("\t")
        if len(cells) >= 3 and cells[0] == str(index):
            try:
                seed = int(cells[2])
            except ValueError:
                raise HelperError(f"task {index} of {tasks} has seed {cells[2]!r}, not an integer") from None
            return cells[1], seed, cells[3] if len(cells) > 3 else ""
    raise HelperError(f"task {index} is not in {tasks}: submit the sweep with scripts_hpc/submit_sweep.sh")


def _config_error(message: str) -> None:
    click.echo(f"config error: {message}", err=True)


@click.command("prepare")
@click.argument("tasks", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("group")
@click.option("--index", type=click.IntRange(min=0), required=True, help="The array task's index.")
@click.option("--job-id", required=True, help="The task's run id: <array job id>_<index>.")
@click.option("--runtime", type=click.Choice(["apptainer", "none"]), required=True)
@click.option(
    "--attempt", type=click.IntRange(min=0), default=0, show_default=True, help="Slurm's restart count."
)
def prepare_cmd(tasks: Path, group: str, index: int, job_id: str, runtime: str, attempt: int) -> None:
    """Start sweep task INDEX of TASKS into GROUP: read its row, load and check the config, make the
    run directory and record the attempt's start (status starting), unless the pair already
    finished. Prints the config as `config --shell` does and MH_CONFIG_CHECKED (the pair's steps
    inherit it), then MH_COMP, MH_SEED, MH_GROUP, MH_RUN, MH_REQUEUES and MH_SKIP (why the task
    has nothing to do, or empty). A config the pair cannot run with is recorded as a failed run
    (it counts as the agent's failed attempt) and exits 2."""
    comp, seed, agent = task_row(tasks, index)
    if agent:  # the row's agent wins over the config's, here and in the pair
        os.environ["AGENT_ID"] = agent
    path = config.find_config_path(None)
    if path is None:
        _config_error("no config: set MLEBENCH_HPC_CONFIG or copy scripts_hpc/config.example.env")
        sys.exit(2)
    try:
        values = config.resolve(path)
    except config.ConfigError as exc:
        _config_error(str(exc))
        sys.exit(2)
    run = run_path(comp, job_id, group, base=values["OUTPUT_BASE"])
    before = read_run(run)  # a record that cannot be read is refused before anything is made
    make_run_dir(run)
    skip = ""
    if before is not None and before.status in EXITED and before.has_submission:
        # requeued (e.g. preempted) after the agent had already finished: nothing left to do
        skip = f"{run} already finished ({before.status_text}): not running it again"
    else:
        # A requeued attempt starts a clean end: an earlier attempt's failure or Slurm end is not its own.
        started = {
            "competition_id": comp,
            "seed": seed,
            "group": group,
            "agent_id": values.get("AGENT_ID", ""),
            "sweep_array_job_id": env("SLURM_ARRAY_JOB_ID"),
            "sweep_task_index": index,
            "sweep_task_job_id": env("SLURM_JOB_ID"),
            "status": RunStatus.STARTING.value,
            "attempt_start": now(),
            "slurm_cluster": env("SLURM_CLUSTER_NAME"),
            "failure": None,
            "slurm_end": None,
            "slurm_restart_count": attempt,
        }
        if not store.write(run, started, attempt):
            raise HelperError(f"{run} belongs to a later attempt of this task: this one stops")
        need = PAIR_IMAGES if runtime == "apptainer" else ()
        problems = config.problems_with(values, path, need, (comp,))
        if problems:
            for p in problems:
                _config_error(p)
            failed = {
                "status": RunStatus.FAILED.value,
                "end": now(),
                "exit_code": 2,
                "submission_exists": False,
            }
            store.write(run, failed, attempt)
            sys.exit(2)
    requeues = before.requeue_count if before is not None else 0
    # after the check, which fills in what the config left empty (AGENT_SIF from AGENT_ID's agent)
    out = config.shell_assignments(values, path)
    out += shell(
        {"MH_CONFIG_CHECKED": f"{comp}:{' '.join(PAIR_IMAGES)}", "MH_GROUP": group, "MH_SEED": seed},
        export=True,
    )
    out += shell({"MH_COMP": comp, "MH_RUN": run, "MH_REQUEUES": requeues, "MH_SKIP": skip})
    sys.stdout.write(out)


@click.command("requeued")
@click.argument("run", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--attempt", type=click.IntRange(min=0), default=None, help="Slurm's restart count.")
def requeued_cmd(run: Path, attempt: int | None) -> None:
    """The task is being requeued into RUN (time limit near, preemption): status requeued and one
    more requeue counted, unless the agent already exited (it keeps its verdict; the requeued task
    then skips it)."""

    def merge(current: dict[str, object]) -> dict[str, object] | None:
        if RunStatus.parse(current.get("status", "")) in EXITED:
            return None
        n = current.get("requeue_count", 0)
        n = n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else 0
        return {"status": RunStatus.REQUEUED.value, "end": now(), "requeue_count": n + 1}

    store.update(run, merge, attempt)


@click.command("ended")
@click.argument("run", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--exit-code", type=int, required=True, help="The pair's exit code.")
@click.option("--attempt", type=click.IntRange(min=0), default=None, help="Slurm's restart count.")
def ended_cmd(run: Path, exit_code: int, attempt: int | None) -> None:
    """The pair ended with EXIT_CODE. A run still `starting` failed before its agent started (its
    grading server, discovery, readiness): it becomes a failed run without a submission. A run the
    agent recorded keeps its own end."""

    def merge(current: dict[str, object]) -> dict[str, object] | None:
        if RunStatus.parse(current.get("status", "")) != RunStatus.STARTING:
            return None
        return {
            "status": RunStatus.FAILED.value,
            "end": now(),
            "exit_code": exit_code,
            "submission_exists": False,
        }

    store.update(run, merge, attempt)
