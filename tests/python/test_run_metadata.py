"""run-metadata: real files, real concurrent processes, the sha256 cache."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

RUNNER = "from mlebench_hpc.run.store import run_metadata_cmd as c; c(prog_name='mlebench-hpc run-metadata')"


def meta(*args: str, cache: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run(
        [sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, timeout=120, env=env, **kw
    )


def test_create_and_merge(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "comp_12"
    res = meta(
        str(run),
        "--set",
        "competition_id=spaceship-titanic",
        "--set",
        "url=http://n1:4000/x=y",
        "--set-json",
        "exit_code=0",
        "--set-json",
        'nodes=["n1","n2"]',
        cache=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    res = meta(str(run), "--set", "end=2026-01-01T00:00:00Z", "--set-json", "exit_code=3", cache=tmp_path)
    assert res.returncode == 0, res.stderr
    data = json.loads((run / "metadata.json").read_text())
    assert data == {
        "competition_id": "spaceship-titanic",
        "url": "http://n1:4000/x=y",
        "exit_code": 3,
        "nodes": ["n1", "n2"],
        "end": "2026-01-01T00:00:00Z",
    }
    assert sorted(p.name for p in run.iterdir()) == ["metadata.json"]  # no temporary or lock files


def test_sha256_and_cache(tmp_path: Path) -> None:
    sif = tmp_path / "image.sif"
    sif.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    real = hashlib.sha256(sif.read_bytes()).hexdigest()
    run = tmp_path / "run"
    assert meta(str(run), "--sha256", f"agent_sif_sha256={sif}", cache=tmp_path).returncode == 0
    assert json.loads((run / "metadata.json").read_text())["agent_sif_sha256"] == real
    entries = list((tmp_path / "mlebench-hpc" / "sha256").glob("*.json"))
    assert len(entries) == 1
    # the cache is what answers while (path, size, mtime) are unchanged ...
    cached = json.loads(entries[0].read_text())
    entries[0].write_text(json.dumps({**cached, "sha256": "0" * 64}))
    assert meta(str(run), "--sha256", f"agent_sif_sha256={sif}", cache=tmp_path).returncode == 0
    assert json.loads((run / "metadata.json").read_text())["agent_sif_sha256"] == "0" * 64
    # ... and a changed file is hashed again
    with sif.open("ab") as f:
        f.write(b"more")
    real2 = hashlib.sha256(sif.read_bytes()).hexdigest()
    assert meta(str(run), "--sha256", f"agent_sif_sha256={sif}", cache=tmp_path).returncode == 0
    assert json.loads((run / "metadata.json").read_text())["agent_sif_sha256"] == real2


def test_unwritable_cache_still_hashes(tmp_path: Path) -> None:
    sif = tmp_path / "g.sif"
    sif.write_bytes(b"abc")
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")
    res = meta(str(tmp_path / "run"), "--sha256", f"h={sif}", cache=blocker)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "run/metadata.json").read_text())["h"] == hashlib.sha256(b"abc").hexdigest()


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", RUNNER, str(run), "--set", f"k{i}=v{i}"], env=env)
        for i in range(16)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    data = json.loads((run / "metadata.json").read_text())
    assert data == {f"k{i}": f"v{i}" for i in range(16)}


def test_errors_are_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for args in (
        ["--set", "novalue"],
        ["--set", "=x"],
        ["--set-json", "n=not json"],
        ["--sha256", f"h={tmp_path}/missing.sif"],
    ):
        res = meta(str(run), *args, cache=tmp_path)
        assert res.returncode == 2, args
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    run.mkdir(exist_ok=True)
    (run / "metadata.json").write_text("{broken")
    res = meta(str(run), "--set", "a=b", cache=tmp_path)
    assert res.returncode == 2 and "not valid JSON" in res.stderr
    assert (run / "metadata.json").read_text() == "{broken"  # left as it was


def test_attempt_fence(tmp_path: Path) -> None:
    """An attempt Slurm gave up on (restart 0) may still be running when the requeued one (restart 1)
    owns the run: its writes, and its copy of the submission, are dropped, with a note."""
    run = tmp_path / "comp_5_0"
    (run / "submission").mkdir(parents=True)
    assert meta(str(run), "--attempt", "0", "--set", "status=running", cache=tmp_path).returncode == 0
    new = meta(
        str(run),
        "--attempt",
        "1",
        "--set-json",
        "slurm_restart_count=1",
        "--set",
        "status=starting",
        cache=tmp_path,
    )
    assert new.returncode == 0, new.stderr
    (run / "submission" / "submission.csv").write_text("id,x\n1,old attempt\n")
    old = meta(str(run), "--attempt", "0", "--set", "status=finished", "--collect-submission", cache=tmp_path)
    assert old.returncode == 0, old.stderr
    assert "belongs to a later attempt (restart 1)" in old.stderr
    data = json.loads((run / "metadata.json").read_text())
    assert data["status"] == "starting" and "submission" not in data
    assert not (run / "collected").exists()
    # the owner (and any later attempt) writes; without --attempt nothing is fenced
    assert meta(str(run), "--attempt", "1", "--set", "status=running", cache=tmp_path).returncode == 0
    assert json.loads((run / "metadata.json").read_text())["status"] == "running"
    assert meta(str(run), "--set", "note=x", cache=tmp_path).returncode == 0
    assert json.loads((run / "metadata.json").read_text())["note"] == "x"
