"""Reading a run record is strict: every field a reader decides on holds its type, or a form an
earlier version of this project really wrote (a seed as "3", submission_exists as "true"); anything
else is refused with RecordError, one line naming the file, the field and the value. Each bad form
has its control: the legacy form of the same field loads to the typed value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlebench_hpc.results.find_runs import DirResolver, specs_from_dir
from mlebench_hpc.run.record import SCHEMA_VERSION, FailureCause, RecordError, RunRecord, RunStatus, read_run

CLI = str(Path(sys.executable).parent / "mlebench-hpc")
DIED = {"cause": "grading_server_died", "reason": "the grading server died"}

# (field, a value no version wrote, a form some version wrote, the typed value it reads as)
BAD_AND_GOOD: list[tuple[str, Any, Any, Any]] = [
    ("seed", "abc", "3", 3),
    ("seed", -1, 0, 0),
    ("seed", "-1", "", None),  # `--set seed="${MH_SEED:-}"` outside a sweep
    ("seed", 2.0, None, None),
    ("seed", True, 2, 2),
    ("seed", " 3", "12", 12),
    ("submission_exists", "yes", "true", True),
    ("submission_exists", 1, "FALSE", False),
    ("submission_exists", None, "True", True),
    ("submission_exists", "", False, False),
    ("status", 5, "finished", RunStatus.FINISHED),
    ("status", "done", "integrity_failed", RunStatus.INTEGRITY_FAILED),
    ("status", "FINISHED", "lost", RunStatus.LOST),
    ("status", "", "requeued", RunStatus.REQUEUED),
    ("status", None, "starting", RunStatus.STARTING),
    ("exit_code", "abc", "0", 0),  # `--set exit_code="$rc"`
    ("exit_code", 1.5, "124", 124),
    ("exit_code", False, None, None),
    ("exit_code", "", 143, 143),
    ("sweep_task_index", "x", "3", 3),  # `--set sweep_task_index="$index"`
    ("sweep_task_index", -1, 0, 0),
    ("failure", "the server died", DIED, FailureCause.GRADING_SERVER_DIED),
    ("failure", {"cause": "gremlins", "reason": "x"}, None, None),
    (
        "failure",
        {"cause": "llm_server_died"},
        {"cause": "llm_server_died", "reason": "r"},
        FailureCause.LLM_SERVER_DIED,
    ),
    ("requeue_count", "1", 1, 1),
    ("requeue_count", -1, 0, 0),
    ("slurm_restart_count", "2", 2, 2),
    ("competition_id", 5, "demo-diabetes", "demo-diabetes"),
    ("agent_id", None, "A", "A"),
    ("agent_job_id", 7, "7", "7"),
    ("sweep_array_job_id", 7, "", ""),
]


def typed_value(rec: RunRecord, key: str) -> Any:
    return {
        "seed": rec.seed,
        "submission_exists": rec.submission_exists,
        "status": rec.status,
        "exit_code": rec.exit_code,
        "sweep_task_index": rec.sweep_task_index,
        "failure": rec.failure.cause if rec.failure is not None else None,
        "requeue_count": rec.requeue_count,
        "slurm_restart_count": rec.restart_count,
        "competition_id": rec.competition,
        "agent_id": rec.agent_id,
        "agent_job_id": rec.agent_job_id,
        "sweep_array_job_id": rec.array_job_id,
    }[key]


@pytest.mark.parametrize("key, bad, good, typed", BAD_AND_GOOD)
def test_a_bad_field_is_refused_and_its_legacy_form_reads_typed(
    tmp_path: Path, key: str, bad: Any, good: Any, typed: Any
) -> None:
    with pytest.raises(RecordError) as info:
        RunRecord.from_json(tmp_path, {"status": "running", key: bad})
    message = info.value.message
    assert f"{key}={bad!r}" in message and str(tmp_path / "metadata.json") in message, message
    assert info.value.reason.startswith(f"{key}=") and "\n" not in message
    rec = RunRecord.from_json(tmp_path, {"status": "running", key: good})
    assert typed_value(rec, key) == typed
    assert type(typed_value(rec, key)) is type(typed)


@pytest.mark.parametrize(
    "key, bad, good",
    [("time_limit_secs", "ten", "600"), ("agent_secs_used", -5, 0), ("slurm_end", "x", None)],
)
def test_the_other_typed_fields(tmp_path: Path, key: str, bad: Any, good: Any) -> None:
    """time_limit_secs was text in the first versions (`--set time_limit_secs=...`)."""
    with pytest.raises(RecordError, match=f"{key}="):
        RunRecord.from_json(tmp_path, {key: bad})
    assert RunRecord.from_json(tmp_path, {key: good}).meta[key] == (600 if good == "600" else good)


def test_missing_fields_read_as_their_defaults(tmp_path: Path) -> None:
    """Records older than a field, or written by hand: no status (nobody judges it), no seed."""
    rec = RunRecord.from_json(tmp_path, {})
    assert (rec.status, rec.status_text, rec.seed, rec.exit_code, rec.submission_exists) == (
        None,
        "",
        None,
        None,
        False,
    )
    assert (rec.failure, rec.requeue_count, rec.restart_count, rec.competition, rec.agent_id) == (
        None,
        0,
        0,
        "",
        "",
    )
    assert not rec.from_sweep and not rec.not_ended and rec.slurm_job_id == ""


@pytest.mark.parametrize("version", ["1", 0, -1, True, 1.0])
def test_a_schema_version_that_is_not_one_is_refused(tmp_path: Path, version: Any) -> None:
    with pytest.raises(RecordError, match="schema_version="):
        RunRecord.from_json(tmp_path, {"schema_version": version})
    assert RunRecord.from_json(tmp_path, {"schema_version": SCHEMA_VERSION}).status is None


def test_a_long_value_is_cut_in_the_one_line(tmp_path: Path) -> None:
    with pytest.raises(RecordError) as info:
        RunRecord.from_json(tmp_path, {"seed": "x" * 5000 + "\n\x1b[2J"})
    message = info.value.message
    assert "seed='xxx" in message and "..." in message and len(message) < 200 + len(str(tmp_path))
    assert "\n" not in message and "\x1b" not in message


def test_the_typed_record_keeps_typed_values_in_meta(tmp_path: Path) -> None:
    legacy = {
        "seed": "3",
        "submission_exists": "true",
        "exit_code": "0",
        "sweep_task_index": "2",
        "note": "x",
    }
    rec = RunRecord.from_json(tmp_path, legacy)
    assert dict(rec.meta) == {
        "seed": 3,
        "submission_exists": True,
        "exit_code": 0,
        "sweep_task_index": 2,
        "note": "x",
    }


def group_with(tmp_path: Path, bad: dict[str, Any]) -> Path:
    """A group of two sweep runs, one of whose records holds BAD."""
    group = tmp_path / "g"
    tasks = []
    for i, extra in enumerate(({}, bad)):
        run = group / f"demo-diabetes_10_{i}"
        for d in ("submission", "logs", "code"):
            (run / d).mkdir(parents=True)
        meta = {
            "competition_id": "demo-diabetes",
            "seed": str(i),
            "agent_id": "A",
            "sweep_array_job_id": "10",
            "sweep_task_index": str(i),
            "agent_job_id": f"10_{i}",
            "status": "finished",
            "exit_code": "0",
            "submission_exists": "false",
            **extra,
        }
        (run / "metadata.json").write_text(json.dumps(meta))
        tasks.append(
            {
                "competition": "demo-diabetes",
                "seed": i,
                "agent_id": "A",
                "array_job_id": "10",
                "array_index": i,
            }
        )
    subs = [{"n": 1, "array_job_id": "10", "agent_id": "A", "submitted": "2026-01-01T00:00:00Z"}]
    (group / "sweep.json").write_text(json.dumps({"group": "g", "submissions": subs, "tasks": tasks}))
    return group


def test_read_run_raises_for_a_bad_record(tmp_path: Path) -> None:
    group = group_with(tmp_path, {"submission_exists": "yes"})
    assert read_run(group / "demo-diabetes_10_0") is not None
    with pytest.raises(RecordError, match="submission_exists='yes'"):
        read_run(group / "demo-diabetes_10_1")


def test_grade_warns_about_a_bad_record_and_grades_the_others(tmp_path: Path) -> None:
    group = group_with(tmp_path, {"seed": "abc"})
    warnings: list[str] = []
    specs = specs_from_dir(group, DirResolver(data_dir=tmp_path), warnings.append)
    assert [s.run_dir.name for s in specs if s.run_dir] == ["demo-diabetes_10_0"]
    assert len(warnings) == 1, warnings
    assert "demo-diabetes_10_1: unreadable metadata.json (seed='abc' is not an integer" in warnings[0]
    assert warnings[0].endswith("; not graded")


def test_a_newer_record_in_grade_is_named_and_skipped(tmp_path: Path) -> None:
    group = group_with(tmp_path, {"schema_version": SCHEMA_VERSION + 1})
    warnings: list[str] = []
    specs = specs_from_dir(group, DirResolver(data_dir=tmp_path), warnings.append)
    assert len(specs) == 1 and len(warnings) == 1
    assert "demo-diabetes_10_1" in warnings[0] and "update mlebench-hpc" in warnings[0]


def test_status_refuses_a_group_with_a_bad_record_in_one_line(tmp_path: Path) -> None:
    """`status` reads every run of the group before it prints: a record it cannot read stops it with
    that record's one line (no traceback, nothing misread); the same group without it prints."""
    env = {k: v for k, v in os.environ.items() if k != "MLEBENCH_HPC_CONFIG"}
    env["HOME"] = str(tmp_path / "home")
    group = group_with(tmp_path, {"status": 5})
    proc = subprocess.run([CLI, "status", str(group), "--no-slurm"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "demo-diabetes_10_1/metadata.json: status=5 is not a run status" in lines[0]
    good = group_with(tmp_path / "ok", {"status": "failed"})
    proc = subprocess.run([CLI, "status", str(good), "--no-slurm"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "2 pairs: 1 failed, 1 unknown" in proc.stdout
