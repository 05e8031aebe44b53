"""The run record and its one writer: real files, real concurrent processes, the attempt fence, the
typed fields, the schema pinned by a round trip, the sha256 cache."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlebench_hpc.errors import HelperError
from mlebench_hpc.run import store
from mlebench_hpc.run.record import (
    FIELDS,
    SCHEMA_VERSION,
    FailureCause,
    RecordError,
    RunRecord,
    RunStatus,
    read_run,
)

GOLDEN = Path(__file__).parent / "golden" / "run_record_v1.json"


def meta(run: Path) -> dict:
    return json.loads((run / "metadata.json").read_text())


def test_the_schema_round_trips_a_real_record(tmp_path: Path) -> None:
    """A record as a local hetjob wrote it (golden/run_record_v1.json) reads into the typed fields
    and is written back unchanged: a change of layout must bump SCHEMA_VERSION and this golden."""
    golden = json.loads(GOLDEN.read_text())
    assert SCHEMA_VERSION == 1 and golden["schema_version"] == SCHEMA_VERSION
    run = tmp_path / "demo-breast-cancer_local-20261202222838-20653"
    rec = RunRecord.from_json(run, golden)
    assert (rec.competition, rec.seed, rec.agent_id, rec.status, rec.exit_code) == (
        "demo-breast-cancer",
        None,
        "dummy",
        RunStatus.FINISHED,
        0,
    )
    assert rec.submission_exists is True and rec.failure is None and rec.done and not rec.failed
    assert store.write(run, golden)
    assert meta(run) == golden
    assert read_run(run) == RunRecord.from_json(run, golden)
    # every typed field but the sweep's and the failure's is in a local run's record
    sweep_only = {
        "failure",
        "requeue_count",
        "sweep_task_index",
        "slurm_restart_count",
        "sweep_array_job_id",
        "slurm_end",
    }
    assert set(FIELDS) - sweep_only <= set(golden)


def test_older_layouts_read_as_the_same_typed_values(tmp_path: Path) -> None:
    """Records written before the record was typed hold strings: they read the same."""
    old = {"seed": "3", "submission_exists": "true", "exit_code": "0", "status": "finished"}
    new = {"seed": 3, "submission_exists": True, "exit_code": 0, "status": "finished"}
    a, b = RunRecord.from_json(tmp_path, old), RunRecord.from_json(tmp_path, new)
    assert (a.seed, a.submission_exists, a.exit_code, a.done) == (
        b.seed,
        b.submission_exists,
        b.exit_code,
        b.done,
    )
    assert RunRecord.from_json(tmp_path, {"submission_exists": "false"}).submission_exists is False


@pytest.mark.parametrize(
    "cause, infrastructure",
    [
        ("grading_server_died", True),
        ("llm_server_died", True),
        ("grading_server_killed_by_agent_requests", False),
    ],
)
def test_failure_causes(tmp_path: Path, cause: str, infrastructure: bool) -> None:
    """Both servers' deaths fail the attempt whatever the agent left; the agent's own uploads
    killing its server do not."""
    m = {
        "status": "finished",
        "submission_exists": True,
        "exit_code": 0,
        "failure": {"cause": cause, "reason": "r"},
    }
    rec = RunRecord.from_json(tmp_path, m)
    assert rec.failure is not None and rec.failure.cause == FailureCause(cause)
    assert rec.done is not infrastructure and bool(rec.infrastructure_failure) is infrastructure


@pytest.mark.parametrize(
    "updates",
    [
        {"seed": "3"},
        {"submission_exists": "false"},
        {"status": "done"},
        {"exit_code": "1"},
        {"requeue_count": True},
        {"failure": {"cause": "gremlins", "reason": "x"}},
        {"failure": "the server died"},
    ],
)
def test_a_writer_that_drifts_from_the_types_is_refused(tmp_path: Path, updates: dict) -> None:
    key = next(iter(updates))
    with pytest.raises(RecordError, match=f"metadata.json: not written: {key}="):
        store.write(tmp_path / "run", updates)
    assert not (tmp_path / "run" / "metadata.json").exists()


def test_a_newer_schema_is_refused_not_rewritten(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metadata.json").write_text(
        json.dumps({"schema_version": SCHEMA_VERSION + 1, "status": "running"})
    )
    with pytest.raises(RecordError, match="newer than this checkout"):
        read_run(run)
    with pytest.raises(HelperError, match="update mlebench-hpc"):
        store.write(run, {"status": "failed"})
    assert meta(run)["status"] == "running"


def test_broken_json_is_one_line_and_left_alone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metadata.json").write_text("{broken")
    with pytest.raises(HelperError, match="not valid JSON"):
        store.write(run, {"status": "failed"})
    assert (run / "metadata.json").read_text() == "{broken"


WRITER = (
    "import sys; from pathlib import Path; from mlebench_hpc.run import store; "
    "store.write(Path(sys.argv[1]), {sys.argv[2]: sys.argv[3]})"
)


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(run), f"k{i}", f"v{i}"]) for i in range(16)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert meta(run) == {**{f"k{i}": f"v{i}" for i in range(16)}, "schema_version": SCHEMA_VERSION}
    assert sorted(p.name for p in run.iterdir()) == ["metadata.json"]  # no temporary or lock files


def test_attempt_fence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An attempt Slurm gave up on (restart 0) may still be running when the requeued one (restart 1)
    owns the run: its writes, and its copy of the submission, are dropped, with a note."""
    run = tmp_path / "comp_5_0"
    (run / "submission").mkdir(parents=True)
    assert store.write(run, {"status": "running"}, attempt=0)
    assert store.write(run, {"slurm_restart_count": 1, "status": "starting"}, attempt=1)
    (run / "submission" / "submission.csv").write_text("id,x\n1,old attempt\n")
    assert not store.write(run, {"status": "finished"}, attempt=0, collect=True)
    assert "belongs to a later attempt (restart 1)" in capsys.readouterr().err
    data = meta(run)
    assert data["status"] == "starting" and "submission" not in data
    assert not (run / "collected").exists()
    # the owner (and any later attempt) writes; without an attempt nothing is fenced
    assert store.write(run, {"status": "running"}, attempt=1) and meta(run)["status"] == "running"
    assert store.write(run, {"note": "x"}) and meta(run)["note"] == "x"


def test_sha256_and_cache(tmp_path: Path) -> None:
    sif = tmp_path / "image.sif"
    sif.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    real = hashlib.sha256(sif.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    assert store.sha256_file(sif, cache) == real
    entries = list(cache.glob("*.json"))
    assert len(entries) == 1
    # the cache is what answers while (path, size, mtime) are unchanged ...
    cached = json.loads(entries[0].read_text())
    entries[0].write_text(json.dumps({**cached, "sha256": "0" * 64}))
    assert store.sha256_file(sif, cache) == "0" * 64
    # ... and a changed file is hashed again
    with sif.open("ab") as f:
        f.write(b"more")
    assert store.sha256_file(sif, cache) == hashlib.sha256(sif.read_bytes()).hexdigest()


def test_unwritable_cache_still_hashes(tmp_path: Path) -> None:
    sif = tmp_path / "g.sif"
    sif.write_bytes(b"abc")
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")
    assert store.sha256_file(sif, blocker) == hashlib.sha256(b"abc").hexdigest()


def test_an_update_on_a_legacy_record_writes_every_field_typed(tmp_path: Path) -> None:
    """A record an earlier version wrote (strings for seed, flags, exit code, index): any write,
    even of an unrelated key, stamps the schema version and leaves typed values only."""
    run = tmp_path / "run"
    run.mkdir()
    legacy = {
        "seed": "3",
        "submission_exists": "true",
        "exit_code": "0",
        "sweep_task_index": "2",
        "time_limit_secs": "600",
        "status": "finished",
        "note": "kept",
    }
    (run / "metadata.json").write_text(json.dumps(legacy))
    written = store.update(run, lambda current: {"cost": {"cpu_hours": 1.0}})
    on_disk = meta(run)
    assert on_disk == written
    assert on_disk == {
        "seed": 3,
        "submission_exists": True,
        "exit_code": 0,
        "sweep_task_index": 2,
        "time_limit_secs": 600,
        "status": "finished",
        "note": "kept",
        "cost": {"cpu_hours": 1.0},
        "schema_version": SCHEMA_VERSION,
    }
    # and what the writer was given to decide on was typed too
    seen: list[dict] = []
    store.update(run, lambda current: seen.append(dict(current)) or None)
    assert seen[0]["seed"] == 3 and seen[0]["submission_exists"] is True


@pytest.mark.parametrize(
    "garbage",
    [
        {"seed": "abc"},
        {"status": 5},
        {"submission_exists": "yes"},
        {"failure": "died"},
        {"slurm_restart_count": "1"},
        {"schema_version": "1"},
    ],
)
def test_an_update_on_a_garbage_record_is_refused_and_the_file_left_alone(
    tmp_path: Path, garbage: dict
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    body = json.dumps({"status": "running", "competition_id": "c", **garbage}).encode()
    (run / "metadata.json").write_bytes(body)
    before = (run / "metadata.json").stat()
    key = next(iter(garbage))
    with pytest.raises(RecordError, match=f"metadata.json: {key}="):
        store.write(run, {"status": "failed"})
    with pytest.raises(RecordError, match=f"{key}="):
        store.update(run, lambda current: {"note": "x"})
    assert (run / "metadata.json").read_bytes() == body
    assert (run / "metadata.json").stat().st_mtime_ns == before.st_mtime_ns
    assert sorted(p.name for p in run.iterdir()) == ["metadata.json"]  # no temporary file left


def test_a_write_whose_merged_record_would_be_newer_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(RecordError, match="newer than this checkout"):
        store.write(run, {"schema_version": SCHEMA_VERSION + 1})
    assert not (run / "metadata.json").exists()
