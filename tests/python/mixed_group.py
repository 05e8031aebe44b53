"""A sweep group with one run of every kind the jobs write (two agents, requeues, superseded
attempts, dead grading servers, an agent that killed its own server, integrity failures, records in
the layouts older versions wrote), for the test that `status` and `grade` print the same bytes as
before the run record was typed (tests/python/test_mixed_group.py). Plain JSON and CSV only: the
group must be made the same way by any version of the package.

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
    arrays = {"A": ["100", "300"], "B": ["200"]}
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
                if array == "300" and (comp, seed) != ("demo-diabetes", 0):
                    continue  # the resume ran only the pair whose grading server died
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


if __name__ == "__main__":
    make_group(Path(sys.argv[1]), Path(sys.argv[2]))
