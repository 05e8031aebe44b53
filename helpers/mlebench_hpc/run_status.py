"""Run statuses: the one list of the words a run's metadata.json `status` can hold.

Written by the agent job (scripts_hpc/slurm_agent.sh through `mlebench-hpc run`: running,
finished, failed, timeout, cancelled, integrity_failed), the sweep task (slurm_sweep_task.sh:
starting, requeued, failed) and, for a run whose job ended without saying so, by whoever reads
it (mlebench_hpc.stale_runs: cancelled, timeout, failed, lost)."""

from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    STARTING = "starting"  # the sweep task made the run dir; the agent has not started
    RUNNING = "running"  # the agent job recorded its start
    REQUEUED = "requeued"  # stopped for a requeue into the same run dir (time limit, preemption)
    FINISHED = "finished"  # the agent exited 0
    FAILED = "failed"  # the agent exited non-zero, the pair failed before it started, or the job died
    TIMEOUT = "timeout"  # the agent's time limit (or Slurm's) stopped it
    CANCELLED = "cancelled"  # scancel (or Slurm's KILL, recorded by a reader)
    INTEGRITY_FAILED = "integrity_failed"  # the isolation check failed: the agent never ran
    LOST = "lost"  # the record said running, and Slurm no longer knows the job: how it ended is unknown

    @classmethod
    def parse(cls, value: object) -> RunStatus | None:
        try:
            return cls(str(value))
        except ValueError:
            return None


# The record says the run has not ended: only Slurm can tell whether it is still alive.
NOT_ENDED = frozenset({RunStatus.STARTING, RunStatus.RUNNING, RunStatus.REQUEUED})
# The agent exited by itself (not stopped by us).
EXITED = frozenset({RunStatus.FINISHED, RunStatus.FAILED, RunStatus.TIMEOUT})
# Counted as a failed attempt of the pair (two, and a sweep stops running it).
FAILED = frozenset({RunStatus.FAILED, RunStatus.TIMEOUT})

# metadata.json `failure.cause` written by the host when the infrastructure failed the agent
# (slurm_hetjob.sh): the attempt is a failure even with a submission, and a resume runs the pair again.
INFRASTRUCTURE_CAUSES = frozenset({"grading_server_died"})
# The grading server died while validating the agent's own uploads (its host-only record of the
# requests in flight says so): the agent's doing, not the infrastructure's. The run keeps the status
# the agent's run gave and counts as a normal attempt; a resume does not run it again.
AGENT_KILLED_SERVER = "grading_server_killed_by_agent_requests"

# How a Slurm job state that ended a run whose record still said running is recorded.
_SLURM_END: dict[str, RunStatus] = {
    "CANCELLED": RunStatus.CANCELLED,
    "PREEMPTED": RunStatus.CANCELLED,
    "REVOKED": RunStatus.CANCELLED,
    "TIMEOUT": RunStatus.TIMEOUT,
    "DEADLINE": RunStatus.TIMEOUT,
}


def status_after_slurm_end(state: str) -> RunStatus:
    """CANCELLED/PREEMPTED -> cancelled, TIMEOUT/DEADLINE -> timeout; anything else (NODE_FAIL,
    OUT_OF_MEMORY, FAILED, BOOT_FAIL, and COMPLETED without the run saying so) -> failed."""
    return _SLURM_END.get(state, RunStatus.FAILED)
