"""No stale "running": a run whose job ended without saying so gets its end recorded by whoever
reads it next (`status`, `grade`, a resume by submit_sweep.sh).

A job killed outright (`scancel --signal=KILL`, a node that died, the out-of-memory killer, Slurm's
time limit after the grace time) never runs the code that records its end, so its metadata.json
keeps saying "running". The reader asks Slurm (one batched squeue, mlebench_hpc.slurm.query) and,
when Slurm says the job ended, records it once: `status` as rule `status_after_slurm_end` says, and
`slurm_end` with Slurm's own words (state, reason, exit, end time) and who recorded it. The write
happens under the run directory's lock and only if the record is still the one the reader judged
(same status, same attempt), so two readers, or a reader and a job that is ending, never fight.

When Slurm no longer knows the job (it forgets ended jobs MinJobAge seconds after they end), the
run is recorded as "lost" with exactly that said: how it ended is unknown, nothing is guessed.
Without an answer from Slurm (not installed, controller down) nothing is recorded."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from mlebench_hpc.run import store
from mlebench_hpc.run.record import NOT_ENDED, RunRecord, RunStatus, read_run, status_after_slurm_end
from mlebench_hpc.slurm.query import JobRecord, cluster_name, job_records


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(slurm_time: str) -> str:
    """Slurm's local EndTime (2026-01-02T03:04:05) as UTC, like every time we record."""
    try:
        return datetime.fromisoformat(slurm_time).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return ""


def ids_to_ask(runs: Iterable[RunRecord]) -> list[str]:
    """The Slurm ids to ask about for the runs whose record says they have not ended."""
    return sorted({r.slurm_job_id for r in runs if r.not_ended and r.slurm_job_id})


def record_for(run: RunRecord, records: dict[str, JobRecord]) -> JobRecord | None:
    job = run.slurm_job_id
    return records.get(job) or records.get(f"{job}+0")  # a hetjob: its component 0 runs the script


def was_asked(run: RunRecord, asked: set[str]) -> bool:
    job = run.slurm_job_id
    return job in asked or (run.from_sweep and run.array_job_id in asked)


def end_updates(run: RunRecord, rec: JobRecord | None, reader: str, job: str) -> dict[str, Any]:
    """What to record for a run whose job ended (REC) or that Slurm no longer knows (None)."""
    said = run.status_text or RunStatus.STARTING.value
    base = {"record_said": said, "recorded_by": reader, "recorded_at": now_iso(), "job_id": job}
    if rec is None:
        note = (
            f"Slurm no longer knows job {job} (it forgets ended jobs MinJobAge seconds after they "
            "end): how it ended is unknown"
        )
        return {
            "status": RunStatus.LOST.value,
            "slurm_end": {**base, "state": "UNKNOWN", "note": note},
        }
    end = _utc(rec.end_time) or now_iso()
    record: dict[str, Any] = {
        **base,
        "state": rec.state,
        "reason": rec.reason,
        "exit": rec.exit_text,
        "end_time": end,
        "nodes": rec.nodes,
        "restarts": rec.restarts,
    }
    return {"status": status_after_slurm_end(rec.state).value, "end": end, "slurm_end": record}


def _still_as_judged(current: dict[str, Any], run: RunRecord) -> bool:
    """The record has not moved on since the reader judged it: same status, same attempt."""
    status = RunStatus.parse(current.get("status", ""))
    return (
        (status in NOT_ENDED or status is None)
        and str(current.get("status", "")) == run.status_text
        and str(current.get("slurm_restart_count", 0)) == str(run.meta.get("slurm_restart_count", 0))
    )


def record_slurm_ends(
    runs: list[RunRecord], records: dict[str, JobRecord] | None, asked: Iterable[str], reader: str
) -> list[RunRecord]:
    """RUNS with the end of every stale one recorded (and re-read); the others unchanged.

    records: job_records() of the ids in ASKED (None: Slurm could not be asked, nothing is done).
    A run counts as unknown to Slurm only when its id (or its array's) was among those asked."""
    if records is None:
        return runs
    asked_ids = set(asked)
    here: str | None = None
    out: list[RunRecord] = []
    for run in runs:
        job = run.slurm_job_id
        if not run.not_ended or not job or not was_asked(run, asked_ids):
            out.append(run)
            continue
        rec = record_for(run, records)
        if rec is not None and not rec.ended:
            out.append(run)  # still queued, running, being requeued or ending
            continue
        # A run made on another cluster is not this controller's to judge (job ids repeat).
        theirs = str(run.meta.get("slurm_cluster") or "")
        if theirs:
            if rec is not None and rec.cluster:
                here = rec.cluster
            elif here is None:
                here = cluster_name() or ""
            if here and theirs != here:
                out.append(run)
                continue
        updates = end_updates(run, rec, reader, job)
        written = store.update(
            run.path, lambda cur, r=run, u=updates: u if _still_as_judged(cur, r) else None
        )
        out.append(
            RunRecord.from_json(run.path, written) if written is not None else (read_run(run.path) or run)
        )
    return out


def settle(
    runs: list[RunRecord], reader: str, extra_ids: Iterable[str] = ()
) -> tuple[list[RunRecord], dict[str, JobRecord] | None]:
    """Ask Slurm once about the stale runs and EXTRA_IDS (e.g. a sweep's array jobs, for the
    caller's own use) and record the ends. Returns (runs, Slurm's records or None)."""
    asked = sorted(set(ids_to_ask(runs)) | set(extra_ids))
    if not asked:
        return runs, {}
    records = job_records(asked)
    return record_slurm_ends(runs, records, asked, reader), records
