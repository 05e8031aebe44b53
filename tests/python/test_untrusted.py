"""The host reads what an agent wrote without trusting it (mlebench_hpc.untrusted), and grading
goes through it: links, special files, huge and absurdly wide files are refused with one line,
quickly, and a refused run costs only itself. Each forgery has a control that shows the same file
WOULD score if read the naive way."""

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest
from mlebench_hpc.grading import load_competition
from mlebench_hpc.results.find_runs import RunSpec, specs_from_dir
from mlebench_hpc.results.grade_one import grade_run
from mlebench_hpc.results.pool import grade_runs
from mlebench_hpc.untrusted import (
    COLLECTED_REL,
    UntrustedFileError,
    collect_record,
    collect_submission,
    open_untrusted,
)

COMP = "demo-diabetes"


def _run(root: Path, name: str = f"{COMP}_1") -> Path:
    run = root / name
    for d in ("submission", "logs", "code"):
        (run / d).mkdir(parents=True)
    (run / "metadata.json").write_text(
        json.dumps({"competition_id": COMP, "agent_job_id": name.split("_")[-1]})
    )
    return run


def _answers(data: Path) -> Path:
    return data / COMP / "prepared" / "private" / "test.csv"


def _spec(run: Path, data: Path) -> RunSpec:
    (spec,) = specs_from_dir(run, _resolver(data), lambda m: None)
    return spec


def _resolver(data: Path):  # noqa: ANN202 - the report's own class
    from mlebench_hpc.results.find_runs import DirResolver

    return DirResolver(data_dir=data, config_lookup=lambda _key: None)


# ---------------------------------------------------------------- the reader itself


def test_a_regular_file_is_copied_with_its_hash(tmp_path: Path) -> None:
    run = _run(tmp_path)
    body = b"id,target\n1,2.5\n2,3.5\n"
    (run / "submission" / "submission.csv").write_bytes(body)
    got = collect_submission(run)
    assert got.path == run / COLLECTED_REL
    assert got.path.read_bytes() == body
    assert got.sha256 == hashlib.sha256(body).hexdigest() and got.size == len(body)


@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_a_link_to_the_answers_is_refused(demo_data: Path, tmp_path: Path, kind: str) -> None:
    run = _run(tmp_path)
    target = _answers(demo_data)
    link = run / "submission" / "submission.csv"
    link.symlink_to(target if kind == "absolute" else os.path.relpath(target, link.parent))
    with pytest.raises(UntrustedFileError, match="symbolic link"):
        collect_submission(run)
    assert not (run / COLLECTED_REL).exists()


def test_a_linked_submission_directory_is_refused(tmp_path: Path) -> None:
    run = _run(tmp_path)
    (run / "submission").rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "submission.csv").write_text("id,target\n1,2\n")
    (run / "submission").symlink_to(elsewhere)
    with pytest.raises(UntrustedFileError, match="submission is a symbolic link"):
        collect_submission(run)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    run = _run(tmp_path)
    os.mkfifo(run / "submission" / "submission.csv")
    t0 = time.monotonic()
    with pytest.raises(UntrustedFileError, match="FIFO"):
        collect_submission(run)
    assert time.monotonic() - t0 < 5


def test_a_link_to_dev_zero_is_refused(tmp_path: Path) -> None:
    run = _run(tmp_path)
    (run / "submission" / "submission.csv").symlink_to("/dev/zero")
    with pytest.raises(UntrustedFileError, match="symbolic link"):
        collect_submission(run)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    run = _run(tmp_path)
    (run / "submission" / "submission.csv").mkdir()
    with pytest.raises(UntrustedFileError, match="a directory"):
        collect_submission(run)


def test_a_sparse_2gib_file_is_refused_by_its_size(tmp_path: Path) -> None:
    run = _run(tmp_path)
    with open(run / "submission" / "submission.csv", "wb") as f:
        f.write(b"id,target\n")
        f.truncate(2 * 1024**3)  # 4 KiB on disk
    t0 = time.monotonic()
    with pytest.raises(UntrustedFileError, match="over the limit"):
        collect_submission(run)
    assert time.monotonic() - t0 < 2


def test_a_million_columns_are_refused_from_the_header(tmp_path: Path) -> None:
    run = _run(tmp_path)
    header = ",".join(f"c{i}" for i in range(1_000_000))
    (run / "submission" / "submission.csv").write_text(header + "\n" + ",".join(["1"] * 1_000_000) + "\n")
    with pytest.raises(UntrustedFileError, match="header line longer|columns, over the limit"):
        collect_submission(run)
    wide = ",".join(f"c{i}" for i in range(20_000))
    (run / "submission" / "submission.csv").write_text(wide + "\n")
    with pytest.raises(UntrustedFileError, match="20000 columns, over the limit of 10000"):
        collect_submission(run)


def test_the_collected_directory_is_never_a_link(tmp_path: Path) -> None:
    run = _run(tmp_path)
    (run / "submission" / "submission.csv").write_text("id,target\n1,2\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "collected").symlink_to(elsewhere)
    with pytest.raises(UntrustedFileError, match="not a directory"):
        collect_submission(run)
    assert list(elsewhere.iterdir()) == []


def test_collect_record_says_why_and_drops_an_earlier_copy(demo_data: Path, tmp_path: Path) -> None:
    run = _run(tmp_path)
    sub = run / "submission" / "submission.csv"
    sub.write_text("id,target\n1,2\n")
    first = collect_record(run)
    assert first["submission_exists"] is True and (run / COLLECTED_REL).is_file()
    sub.unlink()
    sub.symlink_to(_answers(demo_data))  # a requeued attempt replaced it with a forgery
    second = collect_record(run)
    assert second["submission_exists"] is False
    assert second["submission"]["status"] == "refused"  # type: ignore[index]
    assert not (run / COLLECTED_REL).exists()
    sub.unlink()
    assert collect_record(run)["submission"]["status"] == "missing"  # type: ignore[index]


def test_open_untrusted_refuses_paths_that_climb(tmp_path: Path) -> None:
    run = _run(tmp_path)
    for rel in ("../x", "/etc/passwd", "submission/../metadata.json"):
        with pytest.raises(UntrustedFileError, match="not a plain relative path"), open_untrusted(run, rel):
            pass


# ---------------------------------------------------------------- grading goes through it


@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_a_forged_submission_is_not_scored(demo_data: Path, tmp_path: Path, kind: str) -> None:
    run = _run(tmp_path)
    target = _answers(demo_data)
    link = run / "submission" / "submission.csv"
    link.symlink_to(target if kind == "absolute" else os.path.relpath(target, link.parent))
    report = grade_run(_spec(run, demo_data)).report.to_dict()
    assert report["score"] is None and not report["valid_submission"] and not report["any_medal"]
    assert "symbolic link" in report["error"]
    # Control: read the naive way (following the link), the same file is the answers: a gold medal.
    naive = load_competition(COMP, demo_data)
    assert naive.score(link) == naive.score(target)
    best = pd.read_csv(demo_data / COMP / "leaderboard.csv")["score"].iloc[0]
    assert naive.score(link) <= best  # lower is better: at least as good as the leaderboard's best


def test_grading_uses_the_collected_copy(demo_data: Path, tmp_path: Path) -> None:
    run = _run(tmp_path)
    sample = demo_data / COMP / "prepared" / "public" / "sample_submission.csv"
    sub = run / "submission" / "submission.csv"
    sub.write_bytes(sample.read_bytes())
    from mlebench_hpc.run import store

    store.write(run, collect_record(run))
    sub.unlink()
    sub.symlink_to(_answers(demo_data))  # changed after the run ended: ignored
    report = grade_run(_spec(run, demo_data)).report.to_dict()
    assert report["valid_submission"] and report["submission_path"] == str(run / COLLECTED_REL)
    assert report["submission_sha256"] == hashlib.sha256(sample.read_bytes()).hexdigest()
    assert report["score"] == load_competition(COMP, demo_data).score(sample)


def test_a_refusal_recorded_at_collection_stands(demo_data: Path, tmp_path: Path) -> None:
    run = _run(tmp_path)
    (run / "submission" / "submission.csv").symlink_to(_answers(demo_data))
    from mlebench_hpc.run import store

    store.write(run, collect_record(run))
    report = grade_run(_spec(run, demo_data)).report.to_dict()
    assert report["submission_exists"] and not report["valid_submission"]
    assert report["error"].startswith("submission refused:") and "symbolic link" in report["error"]


def test_planted_run_dirs_inside_a_run_are_not_graded(demo_data: Path, tmp_path: Path) -> None:
    group = tmp_path / "group"
    run = _run(group, f"{COMP}_7")
    (run / "metadata.json").unlink()  # metadata lost (a crash): the agent's dirs are still not searched
    fake = run / "code" / "fake"
    (fake / "submission").mkdir(parents=True)
    (fake / "metadata.json").write_text(json.dumps({"competition_id": COMP, "data_dir": "/elsewhere"}))
    assert specs_from_dir(group, _resolver(demo_data), lambda m: None) == []


@contextlib.contextmanager
def _quiet_crashes():  # noqa: ANN202
    """pytest's faulthandler, inherited by forked workers, would dump a traceback for each death."""
    was = faulthandler.is_enabled()
    faulthandler.disable()
    try:
        yield
    finally:
        if was:
            faulthandler.enable()


def _kill_for(comp: str):  # noqa: ANN202
    from mlebench_hpc.results import grade_one

    real = grade_one._load

    def load(spec: RunSpec):  # noqa: ANN202
        if spec.seed == 666:
            os.kill(os.getpid(), 9)  # the worker dies as if the kernel had killed it
        return real(spec)

    return load


def test_a_worker_that_dies_costs_only_its_run(
    demo_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlebench_hpc.results import grade_one

    sample = demo_data / COMP / "prepared" / "public" / "sample_submission.csv"
    specs = [RunSpec(COMP, sample, demo_data, seed=s) for s in (1, 2, 666, 3, 4)]
    monkeypatch.setattr(grade_one, "_load", _kill_for(COMP))  # inherited by the forked workers
    with _quiet_crashes():
        results = grade_runs(specs, jobs=2, progress=False)
    by_seed = {r.report.seed: r for r in results}
    assert [r.report.seed for r in results] == [1, 2, 666, 3, 4]
    assert not by_seed[666].graded and "worker process died" in by_seed[666].report.error
    assert by_seed[666].report.error.startswith("grading failed: out of memory or a crash")
    assert all(by_seed[s].report.valid_submission for s in (1, 2, 3, 4))


def test_a_run_over_the_memory_budget_fails_alone(demo_data: Path, tmp_path: Path) -> None:
    sample = demo_data / COMP / "prepared" / "public" / "sample_submission.csv"
    big = tmp_path / "big.csv"
    # 5 million rows (50 MB): the ids alone, parsed, need several times the 64 MiB budget
    n = 5_000_000
    with big.open("w") as f:
        f.write("id,target\n")
        f.writelines(f"{i},1.0\n" for i in range(n))
    specs = [RunSpec(COMP, sample, demo_data, seed=1), RunSpec(COMP, big, demo_data, seed=2)]
    with _quiet_crashes():
        results = grade_runs(specs, jobs=1, progress=False, memory_mb=64)
    assert results[0].report.valid_submission
    assert results[1].report.error.startswith("grading failed: out of memory"), results[1].report.error
