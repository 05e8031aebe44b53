"""`mlebench-hpc run <phase>`: one call per phase of an agent run, the only writers of its record.

The jobs (scripts_hpc/slurm_agent.sh, slurm_hetjob.sh, slurm_sweep_task.sh) own processes and
signals; this module owns the run's data: the grading server's URL and token, the run directory,
the agent's budget, the overlays and every metadata.json write (through mlebench_hpc.run.store),
statuses derived from exit codes included. One Python start per phase keeps a local hetjob, and a
sweep task around it, at five interpreter starts (bench/python_starts.sh). Values the bash side needs
come back as quoted shell assignments (`eval`)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from mlebench_hpc.atomic import write_atomic
from mlebench_hpc.errors import HelperError
from mlebench_hpc.run import store
from mlebench_hpc.run.layout import env, group_name, make_run_dir, now, run_path, shell
from mlebench_hpc.run.record import METADATA, RunStatus, run_dir_name
from mlebench_hpc.server.tokens import TOKEN_ENV
from mlebench_hpc.slurm import query as slurm_query

# The run's copy of the image's /home/agent (agent_home.py), made fresh by each attempt
AGENT_HOME_DIR = "agent"
STDERR_TAIL_BYTES = 4096


def read_metadata(run: Path) -> dict[str, Any]:
    """RUN's record as the store reads it: typed, {} when RUN has none yet. A record this checkout
    cannot read (not JSON, a field of the wrong type, a newer schema) raises RecordError, one line:
    `run start` reads it before it makes anything of the attempt."""
    return store.read(run)


def token_file_for(url: str, grading_job: str, comp: str, state_base: Path) -> Path | None:
    """The token of the grading server at URL: the hetjob's own, else auto:JOBID's state dir, else
    the state dir whose url file names URL."""
    own = env("MH_GRADING_TOKEN_FILE")
    if own and Path(own).is_file():
        return Path(own)
    if grading_job:
        cand = state_base / run_dir_name(comp, grading_job) / "token"
        if cand.is_file():
            return cand
    for url_file in sorted(state_base.glob("*/url")):
        try:
            first = (url_file.read_text().splitlines() or [""])[0].strip()
        except OSError:
            continue
        if first == url and (url_file.parent / "token").is_file():
            return url_file.parent / "token"
    return None


def stage_local_image(root: Path, checkout: Path, agent_dir: Path) -> None:
    """No-container runs: lay out the files the agent image would hold under ROOT (its "/"): the
    environment's /home files and the agent's directory as its Dockerfile copies it to /home/agent,
    so the same overlay code rewrites them. Made fresh by each attempt."""
    home = root / "home"
    if root.exists():
        shutil.rmtree(root)
    home.mkdir(parents=True)
    for name in ("instructions.txt", "instructions_obfuscated.txt", "validate_submission.sh"):
        shutil.copy2(checkout / "environment" / name, home / name)
    shutil.copytree(agent_dir, home / "agent", symlinks=True)


def agent_argv_shell(argv: list[str]) -> str:
    """MH_AGENT_ARGV=(...) for bash: the agent's command, every word quoted."""
    return "MH_AGENT_ARGV=(" + " ".join(shlex.quote(a) for a in argv) + ")\n"


def agent_budget(limit: int, used: int, slurm_left: int | None, margin: int) -> tuple[int, list[str]]:
    """The agent's wall-clock seconds for this attempt and what to log about them: its time limit
    less what earlier attempts of the run used (requeues never add up to more than upstream's limit),
    cut so that it ends MARGIN seconds before Slurm's own limit (time to copy logs and write the
    record); with less than two margins left, half of what is left."""
    secs, notes = limit - used, []
    if used:
        notes.append(f"earlier attempts used {used}s of the {limit}s budget")
    if slurm_left is not None and slurm_left - margin < secs:
        secs = slurm_left - margin if slurm_left > margin * 2 else slurm_left // 2
        notes.append(f"agent budget cut to {secs}s to end {margin}s before the Slurm limit")
    return secs, notes


def _int_env(name: str, default: int = 0) -> int:
    try:
        return int(env(name) or default)
    except ValueError:
        raise HelperError(f"{name}={env(name)!r} is not a whole number of seconds: fix the config") from None


def seed_of(text: str) -> int | None:
    """A run's seed: the sweep's integer, None outside a sweep."""
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise HelperError(f"seed {text!r} is not an integer") from None


@click.group("run")
def run_cmd() -> None:
    """The phases of one agent run (called by the scripts_hpc/ jobs)."""


@run_cmd.command("start")
@click.argument("competition")
@click.argument("spec")
@click.option("--job", "job", required=True, help="This agent run's job id (names the run dir).")
@click.option("--runtime", type=click.Choice(["apptainer", "none"]), required=True)
@click.option(
    "--grading-pid", type=int, default=None, help="Local grading server PID (hetjob without Slurm)."
)
@click.option("--grading-job", default="", help="Grading job id to watch while waiting (hetjob under Slurm).")
@click.option("--ready-timeout", type=click.FloatRange(min=0), default=300.0, show_default=True)
@click.option("--attempt", type=click.IntRange(min=0), default=None)
@click.option("--llm-url", default="", help="The agent's LLM endpoint as resolved (recorded, never its key).")
@click.option(
    "--env-file",
    "env_file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The run's env file to write (mode 0600): the variant's env vars and secrets, the token.",
)
def start_cmd(
    competition: str,
    spec: str,
    job: str,
    runtime: str,
    grading_pid: int | None,
    grading_job: str,
    ready_timeout: float,
    attempt: int | None,
    llm_url: str,
    env_file: Path,
) -> None:
    """Resolve the agent variant (AGENT_ID), find the grading server (URL or auto:JOBID), wait until
    it serves COMPETITION and takes the run's token, write the run's env file, make the run
    directory with a fresh copy of the image's /home/agent, record the start, write the overlays,
    and work out the agent's budget. Prints shell assignments: MH_URL, MH_RUN, MH_TOKEN_FILE,
    MH_USED_BEFORE, MH_AGENT_SECS, MH_TIME_LIMIT, MH_STEP_LIMIT and the array MH_AGENT_ARGV."""
    from mlebench_hpc.agents.registry import env_lines, write_env_file
    from mlebench_hpc.agents.registry import resolve as resolve_agent
    from mlebench_hpc.run.discovery import resolve_spec
    from mlebench_hpc.run.overlay import make_overlays
    from mlebench_hpc.run.readiness import check_token_file, wait_ready

    # The agent first: a wrong id or a missing secret must stop the run before anything starts.
    agent = resolve_agent(env("AGENT_ID"), Path(env("AGENTS_DIR")))
    budget = {k: agent.env_vars.get(k) or env(k) for k in ("TIME_LIMIT_SECS", "STEP_LIMIT")}
    plain = {k: v for k, v in agent.env_vars.items() if k not in budget}  # those two: the cut budget
    agent = replace(agent, env_vars=plain)
    user_env = env("AGENT_ENV_FILE")
    env_lines(agent, Path(user_env) if user_env else None, {})
    seed = seed_of(env("MH_SEED"))
    try:
        time_limit = int(budget["TIME_LIMIT_SECS"] or 0)
    except ValueError:
        raise HelperError(
            f"TIME_LIMIT_SECS={budget['TIME_LIMIT_SECS']!r} is not a whole number of seconds"
        ) from None
    state_base = Path(env("MH_STATE_BASE"))
    url = resolve_spec(spec, competition, 600.0, state_base)
    if spec.startswith("auto:"):
        grading_job = spec[len("auto:") :].strip()
    token_file = token_file_for(url, grading_job, competition, state_base)
    if token_file is None:
        click.echo(
            f"WARNING: no token found for {url} (a server started by hand?): validating without one", err=True
        )
    if grading_job and not slurm_query.slurm_available():
        grading_job = ""
    elapsed = wait_ready(url, competition, ready_timeout, grading_job or None, grading_pid)
    if token_file is not None:
        check_token_file(url, token_file)
    click.echo(f"run start: {url} serves {competition}, ready after {elapsed:.2f}s", err=True)

    # The record first: one this checkout cannot read (a newer schema, a field of the wrong type)
    # stops the attempt before anything of it is made (env file, run directory, overlays).
    group = group_name()
    run = run_path(competition, job, group)
    before = read_metadata(run)
    # A later attempt owns the run (the state dir, env file included, is every attempt's): stop first.
    if attempt is not None and store.owning_attempt(before, attempt) is not None:
        raise HelperError(f"{run} belongs to a later attempt of this task: this one stops")

    started: dict[str, Any] = {
        "competition_id": competition,
        "group": group,
        "agent_job_id": job,
        "grading_job_id": grading_job,
        "agent_node": env("SLURMD_NODENAME") or os.uname().nodename,
        "grading_server_url": url,
        "runtime": runtime,
        "data_dir": env("DATA_DIR"),
        "config": env("MH_CONFIG"),
        "seed": seed,
        "time_limit_secs": time_limit,
        # the LLM endpoint's model when the run has one (the leaderboard row's model column)
        "llm_model": env("LLM_MODEL") if env("LLM_BASE_URL") else "",
        "start": now(),
        "status": RunStatus.RUNNING.value,
        "slurm_cluster": env("SLURM_CLUSTER_NAME"),
        "network_access": "host network: the agent can reach whatever this node reaches",
        **agent.record(),
        "agent_argv": agent.argv(),
    }
    used = before.get("agent_secs_used", 0)  # an integer >= 0: read_metadata checked it
    left = slurm_query.time_left(env("SLURM_JOB_ID")) if env("SLURM_JOB_ID") else None
    secs, notes = agent_budget(time_limit, used, slurm_query.slurm_secs(left), _int_env("TIME_MARGIN_SECS"))
    started["agent_budget_secs"] = secs
    if llm_url:
        started.update(llm_base_url=llm_url, llm_base_url_config=env("LLM_BASE_URL"))
    store.check_updates(started, run / METADATA)  # a value of the wrong type: refused before anything is made
    token = token_file.read_text().splitlines()[0].strip() if token_file is not None else ""
    extra = {TOKEN_ENV: token} if token else {}
    write_env_file(env_file, env_lines(agent, Path(user_env) if user_env else None, extra))
    make_run_dir(run)
    if runtime == "apptainer":
        from mlebench_hpc.run.agent_home import copy_agent_dir

        agent_sif, grading_sif = Path(env("AGENT_SIF")), env("GRADING_SIF")
        make_overlays(agent_sif, None, url, run / "overlay")
        copied = copy_agent_dir(agent_sif, run / AGENT_HOME_DIR)
        started.update(
            agent_sif=str(agent_sif),
            grading_sif=grading_sif,
            agent_sif_sha256=store.sha256_file(agent_sif),
            agent_home_copy=copied.record(),
        )
        if grading_sif and Path(grading_sif).is_file():
            started["grading_sif_sha256"] = store.sha256_file(Path(grading_sif))
    else:
        root = run / ".agent-root"
        stage_local_image(root, Path(env("MH_ROOT")), agent.config_file.parent)
        make_overlays(None, root, url, run / "overlay")
    if not store.write(run, started, attempt):
        raise HelperError(f"{run} belongs to a later attempt of this task: this one stops")
    # beside the env file, in the job's host-only state dir: the hetjob's outro names the run
    write_atomic(env_file.parent / "run_dir", f"{run}\n".encode(), 0o600)
    for note in notes:
        click.echo(f"[mlebench-hpc {datetime.now().strftime('%H:%M:%S')}] {note}", err=True)
    sys.stdout.write(
        shell(
            {
                "MH_URL": url,
                "MH_RUN": str(run),
                "MH_TOKEN_FILE": str(token_file or ""),
                "MH_USED_BEFORE": used,
                "MH_AGENT_SECS": secs,
                "MH_TIME_LIMIT": budget["TIME_LIMIT_SECS"],
                "MH_STEP_LIMIT": budget["STEP_LIMIT"],
            }
        )
        + agent_argv_shell(agent.argv())
    )


@run_cmd.command("check")
@click.argument("run", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--no-container", is_flag=True, help="No container: record that there is no isolation.")
@click.option("--output", "output", type=click.Path(dir_okay=False, path_type=Path), help="Checker stdout.")
@click.option("--stderr", "stderr", type=click.Path(dir_okay=False, path_type=Path), help="Checker stderr.")
@click.option(
    "--checker",
    "checker",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The checker binary that ran.",
)
@click.option("--rc", type=int, default=0, help="Checker exit code.")
@click.option("--apptainer-version", default="unknown")
@click.option("--url", default="", help="The grading server URL the agent gets.")
@click.option(
    "--flag", "flags", multiple=True, help="One agent apptainer flag (--flag=--contain); repeatable."
)
@click.option("--bind", "binds", multiple=True, help="One agent bind; repeatable.")
@click.option("--attempt", type=click.IntRange(min=0), default=None)
def check_cmd(
    run: Path,
    no_container: bool,
    output: Path | None,
    stderr: Path | None,
    checker: Path | None,
    rc: int,
    apptainer_version: str,
    url: str,
    flags: tuple[str, ...],
    binds: tuple[str, ...],
    attempt: int | None,
) -> None:
    """Record the integrity check the agent's container ran (the static checker's output) with the
    agent's flags in RUN/metadata.json. Exit 0 when it passed, 1 when it did not."""
    updates: dict[str, Any] = {"apptainer_flags": list(flags)}
    if no_container:
        updates["integrity"] = {"ok": False, "runtime": "none", "reason": "no container: no isolation"}
        store.write(run, updates, attempt)
        return
    out = output.read_text(errors="replace") if output is not None and output.is_file() else ""
    err = b""
    if stderr is not None and stderr.is_file():
        with stderr.open("rb") as f:
            err = f.read()[-STDERR_TAIL_BYTES:]
    rec: dict[str, Any]
    try:
        lines = out.strip().splitlines()
        if len(lines) != 1:  # the checker prints one line; nothing else runs in its container
            raise ValueError(f"{len(lines)} lines where the checker prints one")
        rec = json.loads(lines[0])
        if not isinstance(rec, dict) or "ok" not in rec:
            raise ValueError("no ok key")
    except (ValueError, IndexError) as exc:
        rec = {"ok": False, "error": f"checker exit {rc}, unreadable output ({exc}): see stderr_tail"}
    if checker is not None and checker.is_file():
        rec.update(checker_path=str(checker), checker_sha256=store.sha256_file(checker))
    rec.update(
        apptainer_version=apptainer_version,
        apptainer_flags=list(flags),
        binds=list(binds),
        checked_at=now(),
        grading_server_url=url,
    )
    if err.strip():
        rec["stderr_tail"] = err.decode("utf-8", "replace")
    updates.update(integrity=rec, apptainer_version=apptainer_version)
    store.write(run, updates, attempt)
    if rec.get("ok") is not True:
        sys.exit(1)


# How a phase ended the agent: the status it records and the exit code the job exits with.
STOPS: dict[str, tuple[RunStatus, int]] = {
    "signal": (RunStatus.CANCELLED, 143),  # scancel, or the job's TERM
    "time-limit": (RunStatus.TIMEOUT, 124),  # Slurm's USR1 before its time limit
    "budget-used": (RunStatus.TIMEOUT, 124),  # earlier attempts used the whole budget
    "integrity-failed": (RunStatus.INTEGRITY_FAILED, 3),  # the isolation check failed
}


def status_of_exit(code: int) -> RunStatus:
    """The agent's own exit: 0 finished, 124 (timeout(1), the entrypoint's limit) timeout, else failed."""
    if code == 0:
        return RunStatus.FINISHED
    return RunStatus.TIMEOUT if code == 124 else RunStatus.FAILED


def _attempt_option(f: Any) -> Any:
    return click.option("--attempt", type=click.IntRange(min=0), default=None, help="Slurm's restart count.")(
        f
    )


@run_cmd.command("stop")
@click.argument("run", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--because", type=click.Choice(sorted(STOPS)), required=True, help="What stopped the agent.")
@click.option("--agent-secs-used", type=click.IntRange(min=0), default=None)
@_attempt_option
def stop_cmd(run: Path, because: str, agent_secs_used: int | None, attempt: int | None) -> None:
    """Record how the run was stopped, before the agent is stopped: Slurm's KILL may follow soon, and
    the record must survive it. No submission is collected (`run finish` does). Prints MH_EXIT (the
    code the job exits with)."""
    status, code = STOPS[because]
    updates: dict[str, Any] = {"status": status.value, "end": now(), "exit_code": code}
    if agent_secs_used is not None:
        updates["agent_secs_used"] = agent_secs_used
    store.write(run, updates, attempt)
    sys.stdout.write(shell({"MH_EXIT": code}))


@run_cmd.command("finish")
@click.argument("run", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--exit-code", type=int, default=None, help="The agent's exit code (none: only collect).")
@click.option("--agent-secs-used", type=click.IntRange(min=0), default=None)
@click.option(
    "--llm-job-ended",
    default="",
    metavar="JOBID",
    help="The LLM server job the agent used (auto:) ended before it did: the attempt failed.",
)
@click.option(
    "--peak-of",
    default=None,
    metavar="COMPONENT",
    help="A hetjob's agent step: record this node's peak memory for COMPONENT too (as `run cost --peak-of`).",
)
@_attempt_option
def finish_cmd(
    run: Path,
    exit_code: int | None,
    agent_secs_used: int | None,
    llm_job_ended: str,
    peak_of: str | None,
    attempt: int | None,
) -> None:
    """Record the run's end (status from the agent's exit code) and collect its submission, never
    following the agent's links. Prints MH_STATUS and MH_EXIT (non-zero when the LLM job ended)."""
    if peak_of is not None:
        from mlebench_hpc.run.cost_phase import record_peak

        record_peak(run, peak_of, attempt)
    updates: dict[str, Any] = {}
    status = None
    if exit_code is not None:
        status = status_of_exit(exit_code)
        updates.update(status=status.value, end=now(), exit_code=exit_code)
    if agent_secs_used is not None:
        updates["agent_secs_used"] = agent_secs_used
    store.write(run, updates, attempt, collect=True)
    code = exit_code
    if llm_job_ended and exit_code is not None:
        from mlebench_hpc.run.deaths import record_llm_death

        reason = f"the LLM server job {llm_job_ended} ended before the agent did: the agent was stopped"
        if record_llm_death(run, None, reason, attempt):
            status, code = RunStatus.FAILED, exit_code or 1
    if status is not None:
        sys.stdout.write(shell({"MH_STATUS": status.value, "MH_EXIT": code}))


def _register() -> None:
    from mlebench_hpc.run.cost_phase import cost_cmd
    from mlebench_hpc.run.deaths import died_cmd
    from mlebench_hpc.run.task import ended_cmd, prepare_cmd, requeued_cmd

    for cmd in (prepare_cmd, requeued_cmd, ended_cmd, died_cmd, cost_cmd):
        run_cmd.add_command(cmd)


_register()
