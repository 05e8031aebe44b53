"""`run start` reads the run's record through the store's loader before it makes anything of the
attempt: a record of a newer schema, or one holding garbage, stops it with that record's one line,
and the env file, the run's subdirectories, the overlays and the agent's copy are never made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlebench_hpc.run.phases import read_metadata
from mlebench_hpc.run.record import SCHEMA_VERSION, RecordError

BIN = Path(sys.executable).parent


def test_read_metadata_reads_typed_and_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert read_metadata(run) == {}  # no run yet
    run.mkdir()
    (run / "metadata.json").write_text(json.dumps({"agent_secs_used": 120, "seed": "3"}))
    assert read_metadata(run) == {"agent_secs_used": 120, "seed": 3}
    for bad, match in (
        ({"schema_version": SCHEMA_VERSION + 1}, "newer than this checkout"),
        ({"agent_secs_used": "lots"}, "agent_secs_used='lots'"),
    ):
        (run / "metadata.json").write_text(json.dumps(bad))
        with pytest.raises(RecordError, match=match):
            read_metadata(run)
    (run / "metadata.json").write_text("{broken")
    with pytest.raises(RecordError, match="not valid JSON"):
        read_metadata(run)


@pytest.mark.parametrize(
    "record, said",
    [
        ({"schema_version": SCHEMA_VERSION + 1, "status": "running"}, "newer than this checkout's"),
        ({"status": "running", "slurm_restart_count": "one"}, "slurm_restart_count='one' is not"),
    ],
)
def test_start_refuses_a_record_it_cannot_read_before_making_anything(
    server: tuple[str, Path], start_env: dict[str, str], tmp_path: Path, record: dict, said: str
) -> None:
    url, _ = server
    env = {**os.environ, **start_env}
    run = tmp_path / "runs" / "grp" / "demo-diabetes_99"
    run.mkdir(parents=True)
    body = json.dumps(record).encode()
    (run / "metadata.json").write_bytes(body)
    env_file = tmp_path / "state" / "agent.env"
    args = ["start", "demo-diabetes", url, "--job", "99", "--runtime", "none", "--env-file", str(env_file)]
    proc = subprocess.run(
        [str(BIN / "mlebench-hpc"), "run", *args], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 2 and proc.stdout == ""
    error = [line for line in proc.stderr.splitlines() if not line.startswith("run start: ")]
    assert len(error) == 1 and said in error[0] and str(run / "metadata.json") in error[0], proc.stderr
    assert sorted(p.name for p in run.iterdir()) == ["metadata.json"]  # no overlay/, agent root, subdirs
    assert (run / "metadata.json").read_bytes() == body
    assert not env_file.exists() and not env_file.parent.exists()
