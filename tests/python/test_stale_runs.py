"""The stale-run rule on hand-built run directories and Slurm records as squeue prints them.
(The real thing, a task killed on the local cluster, is in tests/bats/test_sweep_faults.bats.)"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from mlebench_hpc.run import store
from mlebench_hpc.run.record import RunRecord, read_run
from mlebench_hpc.slurm.query import parse_squeue_format
from mlebench_hpc.sweep import stale as stale_runs
from mlebench_hpc.sweep.stale import ids_to_ask, record_slurm_ends

# What `squeue -a -r -t all -j ... -O JobArrayID:0|,State:0|,...` printed on the test cluster after
# `scancel` of task 0, `scontrol requeue` of task 1, a hetjob and a task still running.
SQUEUE = """\
JOBID|STATE|EXIT_CODE|END_TIME|RESTART_COUNT|NODELIST|CLUSTER|REASON
116_0|CANCELLED|36608|2026-12-02T03:10:23|0|localhost|mlebench|None
116_1|PENDING|0|NONE|1||mlebench|BeginTime
116_2|RUNNING|0|2027-12-02T03:10:20|0|localhost|mlebench|None
116_3|NODE_FAIL|9|2026-12-02T03:11:00|0|vm|mlebench|NodeDown
120+0|CANCELLED|9|2026-12-02T03:12:00|0|vm|mlebench|None
120+1|CANCELLED|9|2026-12-02T03:12:00|0|localhost|mlebench|None
"""


def sweep_run(group: Path, index: int, status: str, **extra: Any) -> RunRecord:
    run = group / f"c_116_{index}"
    meta = {
        "competition_id": "c",
        "seed": index,
        "status": status,
        "sweep_array_job_id": "116",
        "sweep_task_index": index,
        "slurm_restart_count": 0,
        "slurm_cluster": "mlebench",
        **extra,
    }
    store.write(run, meta)
    got = read_run(run)
    assert got is not None
    return got


def test_parse_squeue_by_column_name() -> None:
    recs = parse_squeue_format(SQUEUE)
    assert set(recs) == {"116_0", "116_1", "116_2", "116_3", "120+0", "120+1"}
    r = recs["116_0"]
    assert (r.state, r.reason, r.exit_text, r.nodes, r.cluster, r.ended) == (
        "CANCELLED",
        "",
        "exit 143",
        "localhost",
        "mlebench",
        True,
    )
    assert recs["116_1"].restarts == 1 and not recs["116_1"].ended and recs["116_1"].end_time == ""
    assert recs["116_3"].exit_text == "signal 9" and recs["116_3"].reason == "NodeDown"
    assert not recs["116_2"].ended
    # columns in another order, as another Slurm version might print them: same records
    lines = SQUEUE.splitlines()
    swapped = ["|".join(reversed(ln.split("|"))) for ln in lines]
    assert parse_squeue_format("\n".join(swapped)) == recs


def test_ended_jobs_are_recorded_with_slurms_words(tmp_path: Path) -> None:
    records = parse_squeue_format(SQUEUE)
    runs = [
        sweep_run(tmp_path, 0, "running"),  # cancelled while it said running
        sweep_run(tmp_path, 1, "running"),  # requeued by Slurm: pending again, not ended
        sweep_run(tmp_path, 2, "running"),  # running
        sweep_run(tmp_path, 3, "starting"),  # its node failed
        sweep_run(tmp_path, 4, "finished", exit_code=0, submission_exists=True),  # ended: its own record
    ]
    assert ids_to_ask(runs) == ["116_0", "116_1", "116_2", "116_3"]
    out = record_slurm_ends(runs, records, ["116"], reader="status")
    by = {r.path.name: r for r in out}
    r0 = by["c_116_0"]
    assert r0.status_text == "cancelled"
    end = r0.meta["slurm_end"]
    assert end["state"] == "CANCELLED" and end["exit"] == "exit 143" and end["record_said"] == "running"
    assert end["recorded_by"] == "status" and end["job_id"] == "116_0"
    assert r0.meta["end"].endswith("Z") and r0.meta["end"] == end["end_time"]
    assert "Slurm CANCELLED (exit 143) while the record said running" in r0.ended_text()
    assert json.loads((r0.path / "metadata.json").read_text())["status"] == "cancelled"  # on disk
    r3 = by["c_116_3"]
    assert r3.status_text == "failed" and r3.meta["slurm_end"]["reason"] == "NodeDown"
    assert r3.failed and not r3.done
    for name, status in (("c_116_1", "running"), ("c_116_2", "running"), ("c_116_4", "finished")):
        assert by[name].status_text == status and "slurm_end" not in by[name].meta


def test_unknown_to_slurm_is_said_not_guessed(tmp_path: Path) -> None:
    old = sweep_run(tmp_path, 7, "running")  # task 7 of 116 is gone from Slurm (MinJobAge)
    other = sweep_run(tmp_path, 8, "running", sweep_array_job_id="999")  # its array was not asked
    out = record_slurm_ends([old, other], parse_squeue_format(SQUEUE), ["116"], reader="grade")
    lost, untouched = out
    assert lost.status_text == "lost"
    assert lost.meta["slurm_end"]["state"] == "UNKNOWN"
    assert "no longer knows job 116_7" in lost.meta["slurm_end"]["note"]
    assert "how it ended is unknown" in lost.ended_text()
    assert "end" not in lost.meta  # no end time made up
    assert untouched.status_text == "running"
    # without an answer from Slurm nothing is concluded
    again = sweep_run(tmp_path, 9, "running")
    assert record_slurm_ends([again], None, ["116"], reader="grade")[0].status_text == "running"


def test_another_clusters_run_is_not_judged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stale_runs, "cluster_name", lambda: "mlebench")
    theirs = sweep_run(tmp_path, 7, "running", slurm_cluster="elsewhere")
    collide = sweep_run(tmp_path, 0, "running", slurm_cluster="elsewhere")  # same id, other cluster
    out = record_slurm_ends([theirs, collide], parse_squeue_format(SQUEUE), ["116"], reader="status")
    assert [r.status_text for r in out] == ["running", "running"]


def test_a_record_that_moved_on_is_not_overwritten(tmp_path: Path) -> None:
    records = parse_squeue_format(SQUEUE)
    seen = sweep_run(tmp_path, 0, "running")  # what the reader read
    # ... then the job's own trap records its end before the reader writes
    store.write(seen.path, {"status": "cancelled", "exit_code": 143})
    out = record_slurm_ends([seen], records, ["116"], reader="status")[0]
    assert out.status_text == "cancelled" and "slurm_end" not in out.meta
    # ... or a later attempt (requeue) took the run directory over
    seen = sweep_run(tmp_path, 3, "running")
    store.write(seen.path, {"status": "running", "slurm_restart_count": 1})
    out = record_slurm_ends([seen], records, ["116"], reader="status")[0]
    assert out.status_text == "running" and "slurm_end" not in out.meta


def _reader(args: tuple[str, str]) -> tuple[str, str]:
    run_dir, name = args
    run = read_run(Path(run_dir))
    assert run is not None
    snapshot = RunRecord.from_json(
        run.path, {**run.meta, "status": "running"}
    )  # every reader judged "running"
    out = record_slurm_ends([snapshot], parse_squeue_format(SQUEUE), ["116"], reader=name)[0]
    end = out.meta["slurm_end"]
    return end["recorded_by"], end["recorded_at"]


def test_concurrent_readers_record_once(tmp_path: Path) -> None:
    run = sweep_run(tmp_path, 0, "running")
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(8) as pool:
        seen = pool.map(_reader, [(str(run.path), f"reader-{i}") for i in range(16)])
    assert len(set(seen)) == 1, seen  # one reader wrote; every other one found its record
    on_disk = json.loads((run.path / "metadata.json").read_text())["slurm_end"]
    assert (on_disk["recorded_by"], on_disk["recorded_at"]) == seen[0]


def test_hetjob_and_plain_runs(tmp_path: Path) -> None:
    store.write(tmp_path / "het", {"competition_id": "c", "status": "running", "agent_job_id": "120"})
    store.write(tmp_path / "local", {"competition_id": "c", "status": "running", "agent_job_id": "local-1"})
    store.write(tmp_path / "byhand", {"competition_id": "c", "agent_job_id": "121"})  # no status
    runs = [r for r in (read_run(tmp_path / n) for n in ("het", "local", "byhand")) if r is not None]
    assert ids_to_ask(runs) == ["120"]
    het, local, byhand = record_slurm_ends(runs, parse_squeue_format(SQUEUE), ["120"], reader="grade")
    assert het.status_text == "cancelled" and het.meta["slurm_end"]["exit"] == "signal 9"
    assert local.status_text == "running" and "status" not in byhand.meta
