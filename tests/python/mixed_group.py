"""A sweep group with one run of every kind the jobs write (five agents, requeues, superseded
attempts, dead grading servers, an agent that killed its own server, integrity failures, records in
the layouts older versions wrote; runs that have not ended: starting, running, requeued, restarted
after a requeue; runs whose Slurm job ended without the run saying so, as a reader recorded it: lost,
out of memory, cancelled, timeout; a pair that failed before its agent started, with its log's
error line; a task that never made a run directory; a run made outside a sweep; a record without a
status), for the test that `status` and `grade` print the same bytes as before the run record was
typed (tests/python/test_mixed_group.py). Every record is one the writers of that version (the jobs,
`run-metadata`, the stale-run reader) could write. Plain JSON and CSV only: the group must be made
the same way by any version of the package.

    python tests/python/mixed_group.py GROUP_DIR DATA_DIR     (DATA_DIR: prepare-demo's)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

COMPS = ("demo-breast-cancer", "demo-diabetes")


def answers(data: Path, comp: str) -> pd.DataFrame:
    return pd.read_csv(data / comp / "prepared" / "private" / "test.csv")[["id", "target"]]


def submissions(data: Path) -> dict[str, pd.DataFrame]:
    db, bc = answers(data, "demo-diabetes"), answers(data, "demo-breast-cancer")
    return {
        "db-good": db.assign(target=db["target"] + 30.0),
        "db-perfect": db,
        "db-bad": db.rename(columns={"target": "prediction"}),
        "bc-good": bc,
        "bc-half": bc.assign(target=[0] * len(bc)),
        "bc-short": bc.iloc[:3],
    }


def write_run(group: Path, name: str, meta: dict[str, Any], sub: pd.DataFrame | None) -> None:
    run = group / name
    for d in ("submission", "logs", "code"):
        (run / d).mkdir(parents=True, exist_ok=True)
    (run / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if sub is not None:
        sub.to_csv(run / "submission" / "submission.csv", index=False)


def make_group(group: Path, data: Path) -> None:
    subs = submissions(data)
    group.mkdir(parents=True)
    arrays = {"A": ["100", "300"], "B": ["200"], "C": ["400", "600"], "D": ["500", "900"], "E": ["700"]}
    resumed = {"300": ("demo-diabetes", 0), "600": ("demo-diabetes", 1), "900": ("demo-diabetes", 1)}
    tasks: list[dict[str, Any]] = []
    submitted: list[dict[str, Any]] = []
    for agent, ids in arrays.items():
        for array in ids:
            n = len(submitted) + 1
            submitted.append(
                {
                    "n": n,
                    "array_job_id": array,
                    "agent_id": agent,
                    "submitted": f"2026-01-0{n}T00:00:00Z",
                    "tasks_file": f"{group}/.sweep/tasks-{n}.tsv",
                    "n_tasks": 4,
                    "command": "sbatch",
                    "asked": {"seeds": 2},
                }
            )
            for i, (comp, seed) in enumerate((c, s) for c in COMPS for s in (0, 1)):
                if array in resumed and (comp, seed) != resumed[array]:
                    continue  # a resume runs only the pair with no attempt that counts
                tasks.append(
                    {
                        "competition": comp,
                        "seed": seed,
                        "agent_id": agent,
                        "array_job_id": array,
                        "array_index": i,
                        "job_id": f"{array}_{i}",
                        "submission": n,
                        "run_dir": str(group / f"{comp}_{array}_{i}"),
                    }
                )
    (group / "sweep.json").write_text(
        json.dumps(
            {
                "group": group.name,
                "group_dir": str(group),
                "asked": {"seeds": 2},
                "submissions": submitted,
                "tasks": tasks,
            },
            indent=2,
        )
    )

    def meta(
        agent: str, comp: str, seed: int, array: str, index: int, status: str, **extra: Any
    ) -> dict[str, Any]:
        base: dict[str, Any] = {
            "competition_id": comp,
            "seed": str(seed),
            "group": group.name,
            "agent_id": agent,
            "sweep_array_job_id": array,
            "sweep_task_index": str(index),
            "data_dir": str(data),
            "status": status,
            "attempt_start": f"2026-01-0{1 + int(array[0])}T00:0{index}:00Z",
            "agent_job_id": f"{array}_{index}",
            "time_limit_secs": 86400,
            "agent_secs_used": 3600 + index,
            "slurm_restart_count": 0,
            "failure": None,
            "slurm_end": None,
        }
        return {**base, **extra}

    died = {
        "cause": "grading_server_died",
        "server_exit_code": 137,
        "server_signal": "SIGKILL",
        "reason": "the grading server died (exit 137, killed by SIGKILL) with no request in flight "
        "before the agent ended: the agent could not validate",
    }
    killed = {
        "cause": "grading_server_killed_by_agent_requests",
        "server_exit_code": 137,
        "reason": "the grading server died (exit 137) while validating the agent's own uploads "
        "(1 in flight): the agent's requests killed it; the attempt counts as the agent left it",
    }
    runs = [
        # agent A: a finished valid run (the record as typed today), an invalid one (old string
        # layout), a timeout with a submission, a failure without one; the diabetes seed 0 whose
        # grading server died (a perfect submission that must not count), then its rerun.
        (
            "A",
            "demo-breast-cancer",
            0,
            "100",
            0,
            "finished",
            "bc-good",
            {"exit_code": 0, "submission_exists": True},
        ),
        (
            "A",
            "demo-breast-cancer",
            1,
            "100",
            1,
            "finished",
            "bc-short",
            {"exit_code": "0", "submission_exists": "true"},
        ),
        (
            "A",
            "demo-diabetes",
            0,
            "100",
            2,
            "failed",
            "db-perfect",
            {"exit_code": 1, "submission_exists": True, "failure": died},
        ),
        (
            "A",
            "demo-diabetes",
            1,
            "100",
            3,
            "timeout",
            "db-good",
            {"exit_code": 124, "submission_exists": True},
        ),
        (
            "A",
            "demo-diabetes",
            0,
            "300",
            2,
            "finished",
            "db-good",
            {"exit_code": 0, "submission_exists": True, "requeue_count": 1},
        ),
        # agent B: cancelled, integrity failed, its own uploads killed its server (counts as left),
        # failed without a submission, and an invalid CSV with wrong columns.
        (
            "B",
            "demo-breast-cancer",
            0,
            "200",
            0,
            "cancelled",
            "bc-half",
            {"exit_code": 143, "submission_exists": True},
        ),
        (
            "B",
            "demo-breast-cancer",
            1,
            "200",
            1,
            "finished",
            "bc-half",
            {"exit_code": 0, "submission_exists": True, "failure": killed},
        ),
        (
            "B",
            "demo-diabetes",
            0,
            "200",
            2,
            "integrity_failed",
            None,
            {"exit_code": 3, "submission_exists": False},
        ),
        (
            "B",
            "demo-diabetes",
            1,
            "200",
            3,
            "failed",
            "db-bad",
            {"exit_code": "2", "submission_exists": "false"},
        ),
    ]
    for agent, comp, seed, array, index, status, sub, extra in runs:
        m = meta(agent, comp, seed, array, index, status, **extra)
        write_run(group, f"{comp}_{array}_{index}", m, subs[sub] if sub else None)
    not_ended_and_settled(group, data, subs)
    # collected copies as the jobs make them when the agent ends (what grade reads)
    for run in sorted(group.glob("*/metadata.json")):
        rec = json.loads(run.read_text())
        sub_file = run.parent / "submission" / "submission.csv"
        if str(rec.get("submission_exists")).lower() == "true" and sub_file.is_file():
            import hashlib

            (run.parent / "collected").mkdir()
            body = sub_file.read_bytes()
            (run.parent / "collected" / "submission.csv").write_bytes(body)
            rec["submission"] = {
                "status": "collected",
                "bytes": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            }
            run.write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n")


def sweep_start(group: Path, agent: str, comp: str, seed: int, array: str, index: int) -> dict[str, Any]:
    """The sweep task's first write (slurm_sweep_task.sh, `run-metadata --set`: text but for the JSON)."""
    return {
        "competition_id": comp,
        "seed": str(seed),
        "group": group.name,
        "agent_id": agent,
        "sweep_array_job_id": array,
        "sweep_task_index": str(index),
        "sweep_task_job_id": str(int(array) + 1 + index),
        "status": "starting",
        "attempt_start": f"2026-01-{1 + int(array[0]):02d}T01:0{index}:00Z",
        "slurm_cluster": "",
        "failure": None,
        "slurm_end": None,
        "slurm_restart_count": 0,
    }


def run_start(data: Path, comp: str, seed: str, job: str, agent: str) -> dict[str, Any]:
    """What `run start` adds when the agent job records its start."""
    return {
        "competition_id": comp,
        "agent_job_id": job,
        "grading_job_id": "",
        "agent_node": "node01",
        "grading_server_url": "http://node01:5000",
        "runtime": "apptainer",
        "data_dir": str(data),
        "config": "",
        "seed": seed,
        "time_limit_secs": 86400,
        "llm_model": "",
        "start": "2026-01-09T00:00:00Z",
        "status": "running",
        "slurm_cluster": "",
        "network_access": "host network: the agent can reach whatever this node reaches",
        "agent_id": agent,
        "agent_name": agent,
    }


def slurm_end(said: str, reader: str, job: str, state: str, reason: str, exit_text: str) -> dict[str, Any]:
    """What a reader (`status`, `grade`) records when Slurm says a job ended that the run did not."""
    return {
        "record_said": said,
        "recorded_by": reader,
        "recorded_at": "2026-01-10T00:00:00Z",
        "job_id": job,
        "state": state,
        "reason": reason,
        "exit": exit_text,
        "end_time": "2026-01-09T12:00:00Z",
        "nodes": "node01",
        "restarts": 0,
    }


def lost(said: str, reader: str, job: str) -> dict[str, Any]:
    """What a reader records when Slurm no longer knows the job of a run that did not end."""
    note = (
        f"Slurm no longer knows job {job} (it forgets ended jobs MinJobAge seconds after they "
        "end): how it ended is unknown"
    )
    return {
        "status": "lost",
        "slurm_end": {
            "record_said": said,
            "recorded_by": reader,
            "recorded_at": "2026-01-10T00:00:00Z",
            "job_id": job,
            "state": "UNKNOWN",
            "note": note,
        },
    }


def not_ended_and_settled(group: Path, data: Path, subs: dict[str, pd.DataFrame]) -> None:
    """Agents C, D and E: runs whose record says they have not ended, runs whose end a reader
    recorded from Slurm, and the runs around them (a task without a run directory, a pair that
    failed before its agent started, a run outside a sweep, a record without a status)."""
    bc, db = COMPS

    def start(agent: str, comp: str, seed: int, array: str, index: int, running: bool) -> dict[str, Any]:
        rec = sweep_start(group, agent, comp, seed, array, index)
        if running:
            rec.update(run_start(data, comp, str(seed), f"{array}_{index}", agent))
        return rec

    died = {
        "cause": "grading_server_died",
        "server_exit_code": 1,
        "server_signal": None,
        "reason": "the grading server died (exit 1) (no record of its requests) before the agent "
        "ended: the agent could not validate",
    }
    runs: list[tuple[str, dict[str, Any], str | None]] = [
        # C: the sweep task started (the agent job has not), the agent runs (a partial submission
        # not collected yet), stopped for a requeue; the diabetes seed 1 was lost, and a resume
        # (array 600) ran it again to its end.
        (f"{bc}_400_0", start("C", bc, 0, "400", 0, False), None),
        (f"{bc}_400_1", start("C", bc, 1, "400", 1, True), "bc-good"),
        (
            f"{db}_400_2",
            {
                **start("C", db, 0, "400", 2, True),
                "status": "requeued",
                "end": "2026-01-09T06:00:00Z",
                "requeue_count": 1,
            },
            "db-good",
        ),
        (f"{db}_400_3", {**start("C", db, 1, "400", 3, True), **lost("running", "status", "400_3")}, None),
        (
            f"{db}_600_3",
            {
                **start("C", db, 1, "600", 3, True),
                "status": "finished",
                "end": "2026-01-09T08:00:00Z",
                "exit_code": 0,
                "agent_secs_used": 7200,
                "submission_exists": True,
            },
            "db-perfect",
        ),
        # D: the out-of-memory killer took the job (a submission written, never collected), lost
        # before the agent started, Slurm's time limit while stopping for a requeue; the grading
        # server died before the agent started, and its resume (array 900) is starting. (That death
        # is superseded here: grade does not score a final attempt the infrastructure failed, which
        # 01c7f09 did; test_mixed_group.py's test_grading_server_death_not_graded checks it.)
        (
            f"{bc}_500_0",
            {
                **start("D", bc, 0, "500", 0, True),
                "status": "failed",
                "end": "2026-01-09T12:00:00Z",
                "slurm_end": slurm_end("running", "grade", "500_0", "OUT_OF_MEMORY", "", "signal 9"),
            },
            "bc-good",
        ),
        (f"{bc}_500_1", {**start("D", bc, 1, "500", 1, False), **lost("starting", "grade", "500_1")}, None),
        (
            f"{db}_500_2",
            {
                **start("D", db, 0, "500", 2, True),
                "requeue_count": 1,
                "status": "timeout",
                "end": "2026-01-09T12:00:00Z",
                "slurm_end": slurm_end("requeued", "status", "500_2", "TIMEOUT", "TimeLimit", "signal 15"),
            },
            None,
        ),
        (f"{db}_500_3", {**start("D", db, 1, "500", 3, False), "status": "failed", "failure": died}, None),
        (f"{db}_900_3", start("D", db, 1, "900", 3, False), None),
        # E: restarted after a requeue (the new attempt is starting), cancelled by Slurm while
        # running, (diabetes seed 0: a task that never made a run directory), failed before the agent
        # started (its log says why); a run made outside a sweep, and one written by hand with
        # `run-metadata` (no status).
        (
            f"{bc}_700_0",
            {
                **start("E", bc, 0, "700", 0, True),
                "status": "starting",
                "end": "2026-01-09T06:00:00Z",
                "requeue_count": 1,
                "slurm_restart_count": 1,
                "attempt_start": "2026-01-09T07:00:00Z",
            },
            None,
        ),
        (
            f"{bc}_700_1",
            {
                **start("E", bc, 1, "700", 1, True),
                "status": "cancelled",
                "end": "2026-01-09T12:00:00Z",
                "slurm_end": slurm_end("running", "status", "700_1", "CANCELLED", "", "signal 9"),
            },
            "bc-half",
        ),
        (
            f"{db}_700_3",
            {
                **start("E", db, 1, "700", 3, False),
                "status": "failed",
                "end": "2026-01-09T00:10:00Z",
                "exit_code": "1",
                "submission_exists": "false",
            },
            None,
        ),
        (
            f"{bc}_800",
            {
                **run_start(data, bc, "", "800", "E"),
                "status": "finished",
                "end": "2026-01-09T08:00:00Z",
                "exit_code": 0,
                "agent_secs_used": 5000,
                "submission_exists": True,
            },
            "bc-good",
        ),
        (f"{db}_801", {"competition_id": db, "agent_job_id": "801", "agent_id": "E"}, "db-good"),
    ]
    for name, rec, sub in runs:
        write_run(group, name, rec, subs[sub] if sub else None)
    logs = group / ".sweep" / "logs"
    logs.mkdir(parents=True)
    (logs / "700_3.out").write_text(
        "[2026-01-09T00:09:00Z] sweep task 3: agent E, demo-diabetes seed 1\n"
        "error: the grading server for demo-diabetes did not become ready within 600s\n"
    )


if __name__ == "__main__":
    make_group(Path(sys.argv[1]), Path(sys.argv[2]))
