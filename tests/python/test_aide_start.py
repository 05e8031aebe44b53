"""agents/aide/start.sh's handling of the LLM settings, run on the host with AGENT_HOME and a
stand-in `aide` on PATH that records its arguments and environment (a unit test of argument
handling; the real AIDE image runs against the stand-in LLM in the Slurm tests)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
START = REPO / "agents" / "aide" / "start.sh"

FAKE_AIDE = """#!/usr/bin/env python3
import json, os, sys
keep = ("OPENAI_BASE_URL", "OPENAI_API_KEY")
with open(os.environ["FAKE_AIDE_RECORD"], "w") as f:
    json.dump({"argv": sys.argv[1:], "env": {k: os.environ.get(k) for k in keep}}, f)
"""


def agent_home(tmp: Path) -> Path:
    home = tmp / "home"
    for d in ("data", "agent", "logs", "submission", "code"):
        (home / d).mkdir(parents=True)
    (home / "data" / "description.md").write_text("# demo\n")
    (home / "instructions.txt").write_text("Instructions for /home/submission/submission.csv\n")
    (home / "agent" / "additional_notes.txt").write_text("${HARDWARE} ${TIME_LIMIT} ${STEP_LIMIT}\n")
    return home


def run_start(tmp: Path, env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "aide"
    fake.write_text(FAKE_AIDE)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    record = tmp / "aide.json"
    base = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "AGENT_HOME": str(agent_home(tmp)),
        "AIDE_WORKDIR": str(tmp / "work"),
        "FAKE_AIDE_RECORD": str(record),
        "TIME_LIMIT_SECS": "600",
        "STEP_LIMIT": "2",
        "AIDE_REPORT_SECS": "5",
    }
    res = subprocess.run(
        ["bash", str(START), *args], env=base | env, capture_output=True, text=True, timeout=120
    )
    return res, json.loads(record.read_text()) if record.is_file() else {}


def test_one_local_model_for_code_feedback_and_report_without_a_key(tmp_path: Path) -> None:
    res, rec = run_start(
        tmp_path,
        {"LLM_BASE_URL": "http://node1:8000/v1", "LLM_MODEL": "qwen-coder", "OPENAI_API_KEY": "sk-public"},
    )
    assert res.returncode == 0, res.stderr
    argv = rec["argv"]
    for key in ("agent.code.model", "agent.feedback.model", "report.model"):
        assert f"{key}=qwen-coder" in argv
    assert argv[-1] == "generate_report=False"  # the report is start.sh's own bounded step
    assert rec["env"]["OPENAI_BASE_URL"] == "http://node1:8000/v1"
    assert rec["env"]["OPENAI_API_KEY"] == "no-key-needed"  # the public key is not sent to the endpoint


def test_the_endpoint_key_is_used_when_given(tmp_path: Path) -> None:
    res, rec = run_start(
        tmp_path,
        {"LLM_BASE_URL": "http://node1:8000/v1", "LLM_MODEL": "qwen-coder", "LLM_API_KEY": "k-local"},
    )
    assert res.returncode == 0, res.stderr
    assert rec["env"]["OPENAI_API_KEY"] == "k-local"
    assert "k-local" not in res.stderr + res.stdout


def test_user_arguments_come_after_ours_but_cannot_turn_the_report_back_on(tmp_path: Path) -> None:
    env = {"LLM_BASE_URL": "http://node1:8000/v1", "LLM_MODEL": "qwen-coder"}
    res, rec = run_start(tmp_path, env, "agent.code.model=bigger-model", "generate_report=True")
    assert res.returncode == 0, res.stderr
    argv = rec["argv"]
    assert argv.index("agent.code.model=bigger-model") > argv.index("agent.code.model=qwen-coder")
    assert argv[-1] == "generate_report=False"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"LLM_BASE_URL": "http://node1:8000/v1"}, "LLM_MODEL is not"),
        ({"OPENAI_BASE_URL": "http://node1:8000/v1"}, "LLM_MODEL is not"),
        (
            {"LLM_BASE_URL": "http://node1:8000/v1", "LLM_MODEL": "gpt-oss-20b"},
            "would send it to the public API",
        ),
        (
            {"LLM_BASE_URL": "http://node1:8000/v1", "LLM_MODEL": "claude-local"},
            "would send it to the public API",
        ),
        ({}, "no LLM configured"),
        ({"LLM_BASE_URL": "http://n:1/v1", "LLM_MODEL": "m", "AIDE_REPORT_SECS": "soon"}, "AIDE_REPORT_SECS"),
    ],
)
def test_refusals_are_one_line_and_aide_never_starts(tmp_path: Path, env: dict[str, str], says: str) -> None:
    res, rec = run_start(tmp_path, env)
    assert res.returncode == 2
    errors = [line for line in res.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and says in errors[0], res.stderr
    assert rec == {}  # aide was not run


def test_a_hosted_model_with_its_own_key_still_works(tmp_path: Path) -> None:
    res, rec = run_start(tmp_path, {"OPENAI_API_KEY": "sk-public"}, "agent.code.model=gpt-4o")
    assert res.returncode == 0, res.stderr
    assert rec["env"]["OPENAI_BASE_URL"] is None
    assert not any(a.startswith("agent.feedback.model=") for a in rec["argv"])
