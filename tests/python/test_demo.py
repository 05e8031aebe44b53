"""`mlebench-hpc prepare-demo` as a real process: layout, stdout, idempotence, and grading the result."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlebench_hpc.grading import load_competition, medal_flags

pytest.importorskip("sklearn")

DEMO_IDS = ["demo-breast-cancer", "demo-diabetes"]


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("mlebench-hpc")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mlebench_hpc.cli"]


def _prepare(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_cli(), "prepare-demo", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("demo-data")
    proc = _prepare(data)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == DEMO_IDS  # ids one per line, nothing else
    return data


@pytest.mark.parametrize("cid", DEMO_IDS)
def test_upstream_layout(demo_dir: Path, cid: str) -> None:
    public, private = demo_dir / cid / "prepared" / "public", demo_dir / cid / "prepared" / "private"
    for name in ("train.csv", "test.csv", "sample_submission.csv", "description.md"):
        assert (public / name).is_file(), name
    train, test = pd.read_csv(public / "train.csv"), pd.read_csv(public / "test.csv")
    answers, sample = pd.read_csv(private / "test.csv"), pd.read_csv(public / "sample_submission.csv")
    assert "target" in train.columns and "target" not in test.columns
    assert list(answers.columns) == ["id", "target"] and list(sample.columns) == ["id", "target"]
    assert answers["id"].tolist() == test["id"].tolist() == sample["id"].tolist()
    assert set(train["id"]).isdisjoint(answers["id"])
    assert not any(p.name.startswith(".") for p in (demo_dir / cid).rglob("*"))  # no temp files left


@pytest.mark.parametrize(("cid", "lower"), [("demo-breast-cancer", False), ("demo-diabetes", True)])
def test_leaderboard_of_baselines(demo_dir: Path, cid: str, lower: bool) -> None:
    board = pd.read_csv(demo_dir / cid / "leaderboard.csv")
    assert len(board) >= 20
    assert (board["kind"] == "baseline").all() and board["teamName"].str.startswith("baseline: ").all()
    scores = board["score"].tolist()
    assert scores == sorted(scores, reverse=not lower)  # best first
    comp = load_competition(cid, demo_dir)
    assert comp.is_lower_better is lower
    th = comp.thresholds()
    assert th is not None and th.n_teams == len(board) and "leaderboard" in th.source
    assert "baseline" in (demo_dir / cid / "prepared" / "public" / "description.md").read_text()


@pytest.mark.parametrize("cid", DEMO_IDS)
def test_sample_submission_is_valid_and_scores_no_medal(demo_dir: Path, cid: str) -> None:
    comp = load_competition(cid, demo_dir)
    sample = demo_dir / cid / "prepared" / "public" / "sample_submission.csv"
    assert comp.validate(sample) == (True, "Submission is valid.")
    flags = medal_flags(comp.score(sample), comp.thresholds(), comp.is_lower_better)
    assert not flags["any_medal"]


def test_perfect_submission_gets_gold(demo_dir: Path) -> None:
    comp = load_competition("demo-diabetes", demo_dir)
    answers = demo_dir / "demo-diabetes" / "prepared" / "private" / "test.csv"
    assert comp.score(answers) == 0.0
    assert medal_flags(0.0, comp.thresholds(), True)["gold_medal"]


def test_rerun_is_idempotent_and_deterministic(demo_dir: Path, tmp_path: Path) -> None:
    files = sorted(p for p in demo_dir.rglob("*") if p.is_file())
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    proc = _prepare(demo_dir)
    assert proc.returncode == 0 and proc.stdout.splitlines() == DEMO_IDS
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before  # nothing rewritten
    # A fresh directory gets byte-identical files (fixed seed).
    other = tmp_path / "again"
    assert _prepare(other).returncode == 0
    for p in files:
        assert (other / p.relative_to(demo_dir)).read_bytes() == before[p][1]


def test_damaged_file_is_repaired(demo_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(demo_dir, copy)
    answers = copy / "demo-diabetes" / "prepared" / "private" / "test.csv"
    good = answers.read_bytes()
    answers.write_text("id,target\n")
    assert _prepare(copy).returncode == 0
    assert answers.read_bytes() == good


def test_missing_sklearn_is_one_line_error(tmp_path: Path) -> None:
    # A real interpreter where `import sklearn` fails: a shadowing package that raises ImportError.
    shadow = tmp_path / "shadow" / "sklearn"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no scikit-learn here')\n")
    env = {**os.environ, "PYTHONPATH": f"{shadow.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-m", "mlebench_hpc.cli", "prepare-demo", "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0 and proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "scikit-learn" in lines[0], proc.stderr
