"""`mlebench-hpc run died`: a server the agent was promised died before the agent ended.

The grading server: died while validating the agent's own uploads (its host-only record of the
requests in flight, which only the host and the server can write, says so), the agent's doing: the
run keeps its status and counts as a normal attempt. Otherwise the agent was denied the validation
it was promised. The LLM server (LLM_BASE_URL=job, or the auto: job it used): the agent lost its
model. Both are infrastructure failures (mlebench_hpc.run.record.INFRASTRUCTURE_CAUSES): the attempt
failed whatever the agent wrote, `status` says so, grade does not score it and a resume runs the
pair again. Only a run whose record exists, belongs to this attempt and has not been settled
otherwise (cancelled, requeued, lost) is changed."""

from __future__ import annotations

import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import click

from mlebench_hpc.run import store
from mlebench_hpc.run.layout import resolve_run, shell
from mlebench_hpc.run.record import EXITED, METADATA, FailureCause, RunStatus
from mlebench_hpc.server.inflight import INFLIGHT_FILE, read_inflight

# What a server's death may still change: a run that had not ended, or whose agent exited by itself.
CHANGEABLE = frozenset({RunStatus.STARTING, RunStatus.RUNNING, *EXITED})
# The LLM server's too, and a run the job stopped itself because that server ended (its agent step
# records `cancelled` on the TERM the job's watcher sends; a user's scancel never gets this far).
LLM_CHANGEABLE = CHANGEABLE | {RunStatus.CANCELLED}


def _changeable(current: dict[str, Any], which: frozenset[RunStatus] = CHANGEABLE) -> bool:
    return RunStatus.parse(current.get("status", "")) in which


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


def record_grading_death(run: Path, exit_code: int, state_dir: Path | None, attempt: int | None) -> str:
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

    def merge(current: dict[str, Any]) -> dict[str, Any] | None:
        if not _changeable(current):
            return None
        if by_agent:
            return {"failure": failure}
        return {"status": RunStatus.FAILED.value, "failure": failure}

    if store.update(run, merge, attempt) is None:
        return "none"
    if by_agent:
        click.echo(f"NOTE: {failure['reason']}", err=True)
        return "agent"
    click.echo(f"FAILED: {failure['reason']}", err=True)
    return "infrastructure"


def record_llm_death(run: Path, exit_code: int | None, reason: str, attempt: int | None) -> bool:
    """The LLM server died (EXIT_CODE, None: unknown) before the agent ended: the attempt failed.
    False when the record was not changed (absent, another attempt's, settled otherwise)."""
    if not (run / METADATA).is_file():
        return False
    how = _exit_words(exit_code)[0] if exit_code is not None else "exit code unknown"
    failure = {
        "cause": FailureCause.LLM_SERVER_DIED.value,
        "reason": reason or f"the LLM server died ({how}) before the agent ended: the agent lost its model",
        "server_exit_code": exit_code,
    }
    failed = {"status": RunStatus.FAILED.value, "failure": failure}
    written = store.update(run, lambda cur: failed if _changeable(cur, LLM_CHANGEABLE) else None, attempt)
    if written is not None:
        click.echo(f"FAILED: {failure['reason']}", err=True)
    return written is not None


@click.command("died")
@click.argument("run", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--which", type=click.Choice(["grading", "llm"]), required=True, help="The server that died.")
@click.option(
    "--exit-code", type=int, default=None, help="The server's exit code (as its step or process ended)."
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The grading server's host-only state dir: its inflight.json tells what it was doing.",
)
@click.option("--reason", default="", help="The LLM server's end in words (default: from its exit code).")
@click.option("--competition", default=None, help="Instead of RUN: this job's run of COMPETITION.")
@click.option("--job-id", default=None, help="With --competition: the job (default: $MH_JOB_ID).")
@click.option("--attempt", type=click.IntRange(min=0), default=None, help="Slurm's restart count.")
def died_cmd(
    run: Path | None,
    which: str,
    exit_code: int | None,
    state_dir: Path | None,
    reason: str,
    competition: str | None,
    job_id: str | None,
    attempt: int | None,
) -> None:
    """A server died before the agent ended: record it in RUN's record. Prints
    MH_SERVER_DEATH=agent|infrastructure|none (agent: the agent's own uploads killed its grading
    server; none: nothing was changed)."""
    path = resolve_run(run, competition, job_id)
    verdict = "none"
    if which == "llm":
        if record_llm_death(path, exit_code, reason, attempt):
            verdict = "infrastructure"
    elif (path / METADATA).is_file():
        verdict = record_grading_death(path, exit_code if exit_code is not None else 1, state_dir, attempt)
    sys.stdout.write(shell({"MH_SERVER_DEATH": verdict}))
