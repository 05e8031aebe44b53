"""`mlebench-hpc run start|check|stop|finish|read|server-died`: one call per phase of an agent run.

The agent job (scripts_hpc/slurm_agent.sh) owns processes; this module owns the run's data: the
grading server's URL and token, the run directory, the overlays and every metadata.json write.
One Python start per phase keeps a local hetjob at five interpreter starts (config, server, start,
check, finish). Values the bash side needs come back as quoted shell assignments (`eval`)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import stat
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from mlebench_hpc.errors import HelperError
from mlebench_hpc.run.record import EXITED, FailureCause, RunStatus, run_dir_name
from mlebench_hpc.run.store import fenced_update as record
from mlebench_hpc.run.store import superseded_attempt, update_metadata_if
from mlebench_hpc.server.inflight import INFLIGHT_FILE, read_inflight
from mlebench_hpc.server.tokens import TOKEN_ENV
from mlebench_hpc.slurm import query as slurm_query

RUN_SUBDIRS = ("submission", "logs", "code", "overlay")
# The run's copy of the image's /home/agent (agent_home.py), made fresh by each attempt
AGENT_HOME_DIR = "agent"
STDERR_TAIL_BYTES = 4096


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def _shell(values: dict[str, str]) -> str:
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def read_metadata(run: Path) -> dict[str, Any]:
    try:
        value = json.loads((run / "metadata.json").read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def token_file_for(url: str, grading_job: str, comp: str, state_base: Path) -> Path | None:
    """The token of the grading server at URL: the hetjob's own, else auto:JOBID's state dir, else
    the state dir whose url file names URL."""
    own = _env("MH_GRADING_TOKEN_FILE")
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


@click.group("run")
def run_cmd() -> None:
    """The phases of one agent run (called by scripts_hpc/slurm_agent.sh)."""


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
    env_file: Path,
) -> None:
    """Resolve the agent variant (AGENT_ID), find the grading server (URL or auto:JOBID), wait until
    it serves COMPETITION and takes the run's token, write the run's env file, make the run
    directory with a fresh copy of the image's /home/agent, record the start, write the overlays.
    Prints shell assignments: MH_URL, MH_RUN, MH_TOKEN_FILE, MH_USED_BEFORE, MH_SLURM_LEFT,
    MH_TIME_LIMIT, MH_STEP_LIMIT and the array MH_AGENT_ARGV."""
    from mlebench_hpc.agents.registry import env_lines, write_env_file
    from mlebench_hpc.agents.registry import resolve as resolve_agent
    from mlebench_hpc.run.discovery import resolve_spec
    from mlebench_hpc.run.overlay import make_overlays
    from mlebench_hpc.run.readiness import check_token_file, wait_ready

    # The agent first: a wrong id or a missing secret must stop the run before anything starts.
    agent = resolve_agent(_env("AGENT_ID"), Path(_env("AGENTS_DIR")))
    budget = {k: agent.env_vars.get(k) or _env(k) for k in ("TIME_LIMIT_SECS", "STEP_LIMIT")}
    plain = {k: v for k, v in agent.env_vars.items() if k not in budget}  # those two: the cut budget
    agent = replace(agent, env_vars=plain)
    user_env = _env("AGENT_ENV_FILE")
    env_lines(agent, Path(user_env) if user_env else None, {})
    state_base = Path(_env("MH_STATE_BASE"))
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
    click.echo(f"wait-ready: {url} serves {competition}, ready after {elapsed:.2f}s", err=True)

    token = token_file.read_text().splitlines()[0].strip() if token_file is not None else ""
    extra = {TOKEN_ENV: token} if token else {}
    write_env_file(env_file, env_lines(agent, Path(user_env) if user_env else None, extra))

    group = _env("MH_GROUP") or _env("RUN_GROUP")
    run = Path(_env("OUTPUT_BASE")) / group / run_dir_name(competition, job)
    for sub in RUN_SUBDIRS:
        (run / sub).mkdir(parents=True, exist_ok=True)
    used_before = read_metadata(run).get("agent_secs_used", 0)
    started: dict[str, Any] = {
        "competition_id": competition,
        "group": group,
        "agent_job_id": job,
        "grading_job_id": grading_job,
        "agent_node": _env("SLURMD_NODENAME") or os.uname().nodename,
        "grading_server_url": url,
        "runtime": runtime,
        "data_dir": _env("DATA_DIR"),
        "config": _env("MH_CONFIG"),
        "seed": _env("MH_SEED"),
        "time_limit_secs": int(budget["TIME_LIMIT_SECS"] or 0),
        # the LLM endpoint's model when the run has one (the leaderboard row's model column)
        "llm_model": _env("LLM_MODEL") if _env("LLM_BASE_URL") else "",
        "start": now(),
        "status": RunStatus.RUNNING.value,
        "slurm_cluster": _env("SLURM_CLUSTER_NAME"),
        "network_access": "host network: the agent can reach whatever this node reaches",
        **agent.record(),
        "agent_argv": agent.argv(),
    }
    if attempt is not None and superseded_attempt(read_metadata(run), attempt) is not None:
        raise HelperError(f"{run} belongs to a later attempt of this task: this one stops")
    if runtime == "apptainer":
        from mlebench_hpc.run.agent_home import copy_agent_dir
        from mlebench_hpc.run.store import sha256_file

        agent_sif, grading_sif = Path(_env("AGENT_SIF")), _env("GRADING_SIF")
        make_overlays(agent_sif, None, url, run / "overlay")
        copied = copy_agent_dir(agent_sif, run / AGENT_HOME_DIR)
        started.update(
            agent_sif=str(agent_sif),
            grading_sif=grading_sif,
            agent_sif_sha256=sha256_file(agent_sif),
            agent_home_copy=copied.record(),
        )
        if grading_sif and Path(grading_sif).is_file():
            started["grading_sif_sha256"] = sha256_file(Path(grading_sif))
    else:
        root = run / ".agent-root"
        stage_local_image(root, Path(_env("MH_ROOT")), agent.config_file.parent)
        make_overlays(None, root, url, run / "overlay")
    if not record(run, started, attempt):
        raise HelperError(f"{run} belongs to a later attempt of this task: this one stops")
    left = slurm_query.time_left(_env("SLURM_JOB_ID")) if _env("SLURM_JOB_ID") else None
    used = used_before if isinstance(used_before, int) and used_before >= 0 else 0
    sys.stdout.write(
        _shell(
            {
                "MH_URL": url,
                "MH_RUN": str(run),
                "MH_TOKEN_FILE": str(token_file or ""),
                "MH_USED_BEFORE": str(used),
                "MH_SLURM_LEFT": left or "",
                "MH_TIME_LIMIT": budget["TIME_LIMIT_SECS"],
                "MH_STEP_LIMIT": budget["STEP_LIMIT"],
            }
        )
        + agent_argv_shell(agent.argv())
    )


@run_cmd.command("check")
@click.argument("run", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--budget-secs", type=int, required=True, help="The agent's budget for this attempt.")
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
    budget_secs: int,
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
    agent's flags and budget in RUN/metadata.json. Exit 0 when it passed, 1 when it did not."""
    updates: dict[str, Any] = {"agent_budget_secs": budget_secs, "apptainer_flags": list(flags)}
    if no_container:
        updates["integrity"] = {"ok": False, "runtime": "none", "reason": "no container: no isolation"}
        record(run, updates, attempt)
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
        from mlebench_hpc.run.store import sha256_file

        rec.update(checker_path=str(checker), checker_sha256=sha256_file(checker))
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
    record(run, updates, attempt)
    if rec.get("ok") is not True:
        sys.exit(1)


def _end_options(f: Any) -> Any:
    f = click.option("--attempt", type=click.IntRange(min=0), default=None)(f)
    f = click.option("--agent-secs-used", type=click.IntRange(min=0), default=None)(f)
    f = click.option("--exit-code", type=int, default=None)(f)
    f = click.option("--status", type=click.Choice([s.value for s in RunStatus]), default=None)(f)
    f = click.argument("run", type=click.Path(file_okay=False, exists=True, path_type=Path))(f)
    return f


def _end_updates(status: str | None, exit_code: int | None, secs: int | None) -> dict[str, Any]:
    updates: dict[str, Any] = {}
    if status is not None:
        updates.update(status=status, end=now())
    if exit_code is not None:
        updates["exit_code"] = exit_code
    if secs is not None:
        updates["agent_secs_used"] = secs
    return updates


@run_cmd.command("stop")
@_end_options
def stop_cmd(
    run: Path, status: str | None, exit_code: int | None, agent_secs_used: int | None, attempt: int | None
) -> None:
    """Record how the run was stopped (a signal: cancelled, timeout), before the agent is stopped:
    Slurm's KILL may follow soon, and the record must survive it. No submission is collected."""
    record(run, _end_updates(status, exit_code, agent_secs_used), attempt)


@run_cmd.command("finish")
@_end_options
def finish_cmd(
    run: Path, status: str | None, exit_code: int | None, agent_secs_used: int | None, attempt: int | None
) -> None:
    """Record the run's end and collect its submission (never following the agent's links)."""
    record(run, _end_updates(status, exit_code, agent_secs_used), attempt, collect=True)


@run_cmd.command("read")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.argument("keys", nargs=-1, required=True)
def read_cmd(run: Path, keys: tuple[str, ...]) -> None:
    """Print KEY... of RUN/metadata.json as shell assignments (MH_META_<key>='value'; empty when absent)."""
    meta = read_metadata(run)
    values = {}
    for key in keys:
        if not key.isidentifier() or not key.isascii():
            raise HelperError(f"run read: {key!r} is not a metadata key (letters, digits, _)")
        v = meta.get(key, "")
        values[f"MH_META_{key}"] = "" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))
    sys.stdout.write(_shell(values))


@run_cmd.command("server-died")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--exit-code", type=int, required=True, help="The grading server's exit code.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The grading server's host-only state dir: its inflight.json tells what it was doing.",
)
@click.option("--attempt", type=click.IntRange(min=0), default=None)
def server_died_cmd(run: Path, exit_code: int, state_dir: Path | None, attempt: int | None) -> None:
    """The grading server died before the agent ended. Died while validating the agent's uploads
    (its record of requests in flight, which only the host and the server can write): the agent's
    own requests killed it, the run keeps its status and counts as a normal attempt. Otherwise the
    agent was denied the validation it was promised: the attempt failed whatever the agent did (a
    resume runs the pair again). Only a run whose record exists and has not been settled otherwise
    is changed. Prints MH_SERVER_DEATH=agent|infrastructure|none."""
    verdict = "none"
    if (run / "metadata.json").is_file():
        verdict = _record_server_death(run, exit_code, state_dir, attempt)
    sys.stdout.write(_shell({"MH_SERVER_DEATH": verdict}))


def _exit_words(code: int) -> tuple[str, str | None]:
    """('exit 1' | 'exit 137, killed by SIGKILL', signal name or None): bash and srun report a
    process killed by signal N as 128 + N."""
    if 128 < code < 128 + 65:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = f"signal {code - 128}"
        return f"exit {code}, killed by {name}", name
    return f"exit {code}", None


def _server_exit_code(state_dir: Path) -> int | None:
    """The code slurm_grading_server.sh saw its server exit with (STATE/exit_code), if any."""
    try:
        fd = os.open(state_dir / "exit_code", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = (
            os.read(fd, 16).decode("ascii", "replace").strip() if stat.S_ISREG(os.fstat(fd).st_mode) else ""
        )
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


def _record_server_death(run: Path, exit_code: int, state_dir: Path | None, attempt: int | None) -> str:
    record = read_inflight(state_dir / INFLIGHT_FILE) if state_dir is not None else None
    own = _server_exit_code(state_dir) if state_dir is not None else None
    failure: dict[str, Any] = {}
    if own is not None and own != exit_code:  # srun says 1 for a task the OOM killer took
        failure["step_exit_code"] = exit_code
        exit_code = own
    how, sig = _exit_words(exit_code)
    failure.update(server_exit_code=exit_code, server_signal=sig)
    if record is not None:
        failure["server_requests"] = {
            "in_flight": record.in_flight,
            "in_flight_bytes": record.in_flight_bytes,
            "requests": record.requests,
            "over_budget": record.over_budget,
            "recorded": record.updated,
        }
    by_agent = record is not None and record.in_flight > 0
    if by_agent:
        assert record is not None
        failure["cause"] = FailureCause.AGENT_KILLED_SERVER.value
        failure["reason"] = (
            f"the grading server died ({how}) while validating the agent's own uploads "
            f"({record.describe()}): the agent's requests killed it; the attempt counts as the agent left it"
        )
    else:
        doing = "with no request in flight" if record is not None else "(no record of its requests)"
        failure["cause"] = FailureCause.GRADING_SERVER_DIED.value
        failure["reason"] = (
            f"the grading server died ({how}) {doing} before the agent ended: the agent could not validate"
        )
    changeable = {RunStatus.STARTING, RunStatus.RUNNING, *EXITED}

    def merge(current: dict[str, Any]) -> dict[str, Any] | None:
        if attempt is not None and superseded_attempt(current, attempt) is not None:
            return None
        if RunStatus.parse(current.get("status", "")) not in changeable:
            return None
        if by_agent:
            return {"failure": failure}
        return {"status": RunStatus.FAILED.value, "failure": failure}

    if update_metadata_if(run, merge) is None:
        return "none"
    if by_agent:
        click.echo(f"NOTE: {failure['reason']}", err=True)
        return "agent"
    click.echo(f"FAILED: {failure['reason']}", err=True)
    return "infrastructure"


# cgroup v1 counts a cgroup's page cache in its usage; v2's memory.peak too (README "Cost").
PEAK_SOURCE = "the job's cgroup per node (memory.max_usage_in_bytes or memory.peak), read by its scripts"


@run_cmd.command("cost")
@click.argument("run", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--job", required=True, help="The Slurm job whose allocation the run held (a hetjob's id).")
@click.option(
    "--components",
    default="agent",
    show_default=True,
    help="The job's components in Slurm's order, '+' for what shares one (grading,agent+llm).",
)
@click.option("--peak-of", default=None, help="Only record this node's peak memory, for component NAME.")
@click.option("--attempt", type=click.IntRange(min=0), default=None)
def cost_cmd(run: Path, job: str, components: str, peak_of: str | None, attempt: int | None) -> None:
    """Record what RUN's job cost as Slurm allocated it (metadata.json `cost`: CPUs, memory, GPUs,
    nodes, elapsed per component; CPU- and GPU-hours; peak memory from the job's cgroup), at the
    job's end. A requeued run adds up its attempts (`cost_attempts`). Slurm cannot be asked: the
    reason goes into `cost_unknown`, exit 0 (the run's result stands without it)."""
    from mlebench_hpc.run import cost as costs
    from mlebench_hpc.run.cgroup_memory import job_peak_mem_mb

    key = str(attempt or 0)
    peak = job_peak_mem_mb()
    if peak_of is not None:
        if peak is not None:
            _record_cost(run, attempt, lambda cur: _with_peak(cur, key, peak_of, peak))
        return
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


def _with_peak(current: dict[str, Any], key: str, name: str, peak: float) -> dict[str, Any]:
    peaks = dict(current.get("cost_peaks") or {})
    mine = dict(peaks.get(key) or {})
    mine[name] = max(peak, float(mine.get(name) or 0))
    peaks[key] = mine
    return {"cost_peaks": peaks}


def _record_cost(run: Path, attempt: int | None, make: Any) -> None:
    def merge(current: dict[str, Any]) -> dict[str, Any] | None:
        if attempt is not None and superseded_attempt(current, attempt) is not None:
            return None
        return make(current)

    update_metadata_if(run, merge)
