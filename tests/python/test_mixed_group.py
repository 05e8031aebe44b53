"""`status` and `grade` print, byte for byte, what commit 01c7f09 (the last one before RunRecord)
printed: the goldens in golden/mixed_group/ are its output on the group mixed_group.py makes, with
paths and today's date normalized, and with no Slurm on PATH (01c7f09 could not settle a stale run
either, so both read the records as they are). The deliberate differences, each tested below on a
copy of the group: a run whose LLM server died is a failed attempt (test_llm_death_counts_failed);
grade does not score a final attempt whose grading server died, which 01c7f09 did while its status
and resume already called it failed (test_grading_server_death_not_graded); a status word no job
writes, which 01c7f09's `run-metadata --set status=...` let a hand write, is refused
(test_unknown_status_refused)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from mixed_group import make_group  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "mixed_group"
CLI = str(Path(sys.executable).parent / "mlebench-hpc")


def normalized(text: str, group: Path, data: Path) -> str:
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    return text.replace(str(group), "<GROUP>").replace(str(data), "<DATA>").replace(today, "<TODAY>")


def outputs(group: Path, data: Path, env: dict[str, str]) -> dict[str, str]:
    def run(*args: str) -> str:
        p = subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=300)
        return normalized(p.stdout + p.stderr + f"rc={p.returncode}\n", group, data)

    out = {
        "status.txt": run("status", str(group), "--no-slurm"),
        "grade.txt": run("grade", "--no-progress", str(group), "--data-dir", str(data)),
    }
    for name in ("summary.csv", "summary.md"):
        out[name] = normalized((group / name).read_text(), group, data)
    return out


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """No config in force, a private HOME and no Slurm (a PATH without scontrol, squeue, sacct,
    whatever this machine has): only the arguments and the records decide."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLEBENCH_HPC_CONFIG", "MLEBENCH_DIR")}
    env["HOME"] = str(tmp_path / "home")
    no_slurm = tmp_path / "bin"
    no_slurm.mkdir()
    env["PATH"] = str(no_slurm)
    return env


@pytest.fixture
def group(demo_data: Path, tmp_path: Path) -> Path:
    g = tmp_path / "mixed"
    make_group(g, demo_data)
    return g


def test_status_and_grade_print_what_they_printed_before(
    group: Path, demo_data: Path, clean_env: dict[str, str]
) -> None:
    got = outputs(group, demo_data, clean_env)
    for name, text in got.items():
        assert text == (GOLDEN / name).read_text(), name


def test_llm_death_counts_failed(group: Path, demo_data: Path, clean_env: dict[str, str]) -> None:
    """A run whose LLM server died, with a perfect submission: status says failed (with why), a
    resume plans the pair again, and grade counts it as a failed attempt (not graded)."""
    meta = json.loads((group / "demo-breast-cancer_100_0" / "metadata.json").read_text())
    meta["status"] = "failed"
    meta["exit_code"] = 1
    meta["failure"] = {
        "cause": "llm_server_died",
        "server_exit_code": 124,
        "reason": "the LLM server died (exit 124) before the agent ended: the agent lost its model",
    }
    (group / "demo-breast-cancer_100_0" / "metadata.json").write_text(json.dumps(meta))
    got = outputs(group, demo_data, clean_env)
    line = next(x for x in got["status.txt"].splitlines() if " 100_0 " in x)
    assert line.endswith(
        "failed (exit 1, submission present): the LLM server died (exit 124) before the agent ended: "
        "the agent lost its model"
    ), line
    assert "agent A: 4 pairs: 3 finished, 1 failed" in got["status.txt"]
    row = next(x for x in got["grade.txt"].splitlines() if " demo-breast-cancer_100_0 " in x)
    assert row.split()[4:7] == ["no", "-", "-"], row  # not valid, no score, no medal
    assert (
        "demo-breast-cancer demo-breast-cancer_100_0: failed attempt, not graded: the LLM server died"
        in got["grade.txt"]
    )
    assert "agent A: runs 4, with submission 4, valid 2, medals 2" in got["grade.txt"]
    # the resume plans exactly that pair again
    todo = group.parent / "todo.tsv"
    plan = subprocess.run(
        [
            CLI,
            "sweep-plan",
            "--group-dir",
            str(group),
            "--competitions",
            str(list_file(group)),
            "--seeds",
            "2",
            "--agent-id",
            "A",
            "--no-slurm",
            "--data-dir",
            str(demo_data),
            "--tasks-out",
            str(todo),
        ],
        capture_output=True,
        text=True,
        env=clean_env,
        timeout=120,
    )
    assert plan.returncode == 0, plan.stderr
    assert todo.read_text() == "0\tdemo-breast-cancer\t0\tA\n"


def list_file(group: Path) -> Path:
    f = group.parent / "comps.txt"
    f.write_text("demo-breast-cancer\ndemo-diabetes\n")
    return f


def test_grading_server_death_not_graded(group: Path, demo_data: Path, clean_env: dict[str, str]) -> None:
    """Without its resume, the attempt whose grading server died (a perfect submission) is the pair's
    final one: status says failed as 01c7f09 did, and grade counts it as a failed attempt (01c7f09
    scored it: yes, 0, gold, and valid 3, medals 3 for agent A)."""
    shutil.rmtree(group / "demo-diabetes_300_2")
    got = outputs(group, demo_data, clean_env)
    died = (
        "the grading server died (exit 137, killed by SIGKILL) with no request in flight before the "
        "agent ended: the agent could not validate"
    )
    line = next(x for x in got["status.txt"].splitlines() if " 100_2 " in x)
    assert line.endswith(
        f"failed (exit 1, submission present): {died}; then 300_2: unknown: no run directory and Slurm "
        "was not asked"
    ), line
    row = next(x for x in got["grade.txt"].splitlines() if " demo-diabetes_100_2 " in x)
    assert row.split()[4:7] == ["no", "-", "-"], row
    assert (
        f"demo-diabetes demo-diabetes_100_2: failed attempt, not graded: {died} (a resume runs it again)"
        in got["grade.txt"]
    )
    assert "agent A: runs 4, with submission 4, valid 2, medals 2" in got["grade.txt"]


def test_unknown_status_refused(group: Path, demo_data: Path, clean_env: dict[str, str]) -> None:
    """A status no job writes (`run-metadata RUN --set status=preempted` by hand, which 01c7f09 took
    and read as no status): status stops with one line naming the file and the field; grade skips
    that run with a warning and grades the others as before."""
    meta = group / "demo-diabetes_801" / "metadata.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "status": "preempted"}))
    got = outputs(group, demo_data, clean_env)
    statuses = "starting, running, requeued, finished, failed, timeout, cancelled, integrity_failed, lost"
    assert got["status.txt"] == (
        f"Error: <GROUP>/demo-diabetes_801/metadata.json: status='preempted' is not a run status "
        f"({statuses})\nrc=2\n"
    )
    grade = got["grade.txt"]
    assert (
        f"warning: skipped <GROUP>/demo-diabetes_801: unreadable metadata.json (status='preempted' is "
        f"not a run status ({statuses})); not graded\n"
    ) in grade
    assert grade.endswith("rc=0\n")
    assert "agent E: runs 4, with submission 2, valid 2, medals 1 (gold 1," in grade
    before = (GOLDEN / "grade.txt").read_text().split("\n\n")[0].splitlines()
    assert grade.split("\n\n")[0].splitlines() == [x for x in before if "_801 " not in x]


# The goldens' generator: this file and mixed_group.py, run by hand on 01c7f09 with MH_WRITE_MIXED_GOLDENS=1:
#   git worktree add --detach /work/tmp/old 01c7f09
#   cp tests/python/mixed_group.py tests/python/test_mixed_group.py /work/tmp/old/tests/python/
#   cd /work/tmp/old && MH_WRITE_MIXED_GOLDENS=1 PYTHONPATH=$PWD/helpers /work/main/.venv/bin/python \
#       -m pytest -q -p no:cacheprovider tests/python/test_mixed_group.py -k write_goldens
#   cp tests/python/golden/mixed_group/* /work/main/tests/python/golden/mixed_group/
if os.environ.get("MH_WRITE_MIXED_GOLDENS"):  # pragma: no cover

    def test_write_goldens(group: Path, demo_data: Path, clean_env: dict[str, str]) -> None:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in outputs(group, demo_data, clean_env).items():
            (GOLDEN / name).write_text(text)
