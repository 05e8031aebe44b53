"""Only runs the host made are graded: planted trees (an agent's code/, logs/, scratch, a hidden
dir, a directory named or laid out unlike a run) are skipped with one warning line naming them,
and a run is graded against the configured data, never the data_dir its metadata.json names.
Each plant has its control: copied where a run would be, graded against the agent's own "answers",
it scores perfectly and takes gold."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlebench_hpc.config import scratch_problem
from mlebench_hpc.results.find_runs import DirResolver, find_run_dirs, run_dir_problem, specs_from_dir
from mlebench_hpc.results.grade_one import grade_run

COMP = "demo-diabetes"


def run_dir(
    parent: Path, job: str, meta: dict[str, Any] | None = None, sub: pd.DataFrame | None = None
) -> Path:
    """A run directory as the job makes it, or as an agent imitates one."""
    run = parent / f"{COMP}_{job}"
    for d in ("submission", "logs", "code", "overlay"):
        (run / d).mkdir(parents=True, exist_ok=True)
    record = {"competition_id": COMP, "agent_job_id": job, "seed": "0", **(meta or {})}
    (run / "metadata.json").write_text(json.dumps(record))
    if sub is not None:
        sub.to_csv(run / "submission" / "submission.csv", index=False)
    return run


@pytest.fixture()
def world(demo_data: Path, tmp_path: Path) -> dict[str, Any]:
    """OUTPUT_BASE with one honest run, and what its agent can make: its predictions, its own
    'answers' (those predictions) with a leaderboard of its own, and plants of both."""
    base = tmp_path / "runs"
    honest = run_dir(base / "g", "100", {"data_dir": str(demo_data)})
    public = demo_data / COMP / "prepared" / "public"
    preds = pd.read_csv(public / "sample_submission.csv").assign(target=123.0)
    preds.to_csv(honest / "submission" / "submission.csv", index=False)
    return {"base": base, "honest": honest, "preds": preds, "public": public}


def fake_data(where: Path, public: Path, preds: pd.DataFrame) -> Path:
    """DATA_DIR as an agent can write it: the public files it sees, its predictions as the answers."""
    data = where / "fake-data"
    shutil.copytree(public, data / COMP / "prepared" / "public")
    (data / COMP / "prepared" / "private").mkdir(parents=True)
    preds.to_csv(data / COMP / "prepared" / "private" / "test.csv", index=False)
    pd.DataFrame({"teamName": ["a", "b", "c"], "score": [50.0, 60.0, 70.0]}).to_csv(
        data / COMP / "leaderboard.csv", index=False
    )
    return data


def plant(where: Path, job: str, world: dict[str, Any]) -> tuple[Path, Path]:
    """A planted run claiming the honest run's pair, naming the agent's own data."""
    data = fake_data(where, world["public"], world["preds"])
    run = run_dir(where, job, {"data_dir": str(data), "status": "finished"}, world["preds"])
    return run, data


def control_gold(run: Path, data: Path, tmp_path: Path) -> None:
    """Control: the plant, where a run would be and graded against its own data, takes gold."""
    copy = Path(tempfile.mkdtemp(dir=tmp_path, prefix="control-")) / run.name
    shutil.copytree(run, copy)
    (spec,) = specs_from_dir(copy, DirResolver(data_dir=data, config_lookup=lambda _k: None), print)
    report = grade_run(spec).report
    assert report.valid_submission and report.score == 0.0 and report.gold_medal


def resolver(data: Path | None, scratch: Path | None = None) -> DirResolver:
    cfg = {"SCRATCH_DIR": str(scratch) if scratch else None}
    return DirResolver(data_dir=data, config_lookup=cfg.get)


def test_plants_in_a_runs_own_dirs_are_not_graded(
    world: dict[str, Any], demo_data: Path, tmp_path: Path
) -> None:
    honest = world["honest"]
    plants = [plant(honest / d / "deep", "900", world) for d in ("code", "logs", "submission")]
    warnings: list[str] = []
    specs = specs_from_dir(world["base"], resolver(demo_data), warnings.append)
    assert [s.run_dir for s in specs] == [honest] and warnings == []
    for run, data in plants:
        control_gold(run, data, tmp_path)
    # a root given inside a run is refused in one line naming the run
    warnings.clear()
    assert specs_from_dir(plants[0][0], resolver(demo_data), warnings.append) == []
    assert len(warnings) == 1 and str(honest) in warnings[0] and "inside" in warnings[0]


def test_plants_in_scratch_are_not_graded(world: dict[str, Any], demo_data: Path, tmp_path: Path) -> None:
    base, honest = world["base"], world["honest"]
    # SCRATCH_DIR inside OUTPUT_BASE (an old config: the check now refuses it), laid out as the job does
    scratch = base / "scratch"
    tmp = scratch / "g" / honest.name / "tmp"
    (scratch / "g" / honest.name / "var_tmp").mkdir(parents=True)
    planted = [plant(tmp / f"p{i}", f"9{i}", world) for i in range(2)]
    warnings: list[str] = []
    specs = specs_from_dir(base, resolver(demo_data, scratch), warnings.append)
    assert [s.run_dir for s in specs] == [honest]
    assert len(warnings) == 1 and str(scratch) in warnings[0] and "scratch" in warnings[0]
    # the config changed since: the scratch is still known by its layout (tmp/ and var_tmp/)
    warnings.clear()
    specs = specs_from_dir(base, resolver(demo_data), warnings.append)
    assert [s.run_dir for s in specs] == [honest]
    assert len(warnings) == 1 and str(scratch / "g" / honest.name) in warnings[0]
    # and a root in it, or the scratch itself, is refused
    for root in (planted[0][0], scratch / "g" / honest.name):
        warnings.clear()
        assert specs_from_dir(root, resolver(demo_data), warnings.append) == []
        assert len(warnings) == 1 and "scratch" in warnings[0]
    for run, data in planted:
        control_gold(run, data, tmp_path)
    assert scratch_problem({"SCRATCH_DIR": str(scratch), "OUTPUT_BASE": str(base)})


def test_runs_not_named_or_laid_out_as_the_job_makes_them(world: dict[str, Any], demo_data: Path) -> None:
    base = world["base"]
    wrong_name = run_dir(base / "g", "101")
    wrong_name.rename(base / "g" / "x-planted")
    no_job = run_dir(base / "g", "102")
    (no_job / "metadata.json").write_text(json.dumps({"competition_id": COMP}))
    no_sub = run_dir(base / "g", "103")
    shutil.rmtree(no_sub / "submission")
    linked = run_dir(base / "g", "104")
    (linked / "metadata.json").rename(base / "meta.json")
    (linked / "metadata.json").symlink_to(base / "meta.json")
    weird = base / "g" / "x\x1b[2Jy_105"
    for d in ("submission", "logs"):
        (weird / d).mkdir(parents=True)
    (weird / "metadata.json").write_text(json.dumps({"competition_id": "x\x1b[2Jy", "agent_job_id": "105"}))
    hidden = run_dir(base / ".hidden", "106")
    warnings: list[str] = []
    specs = specs_from_dir(base, resolver(demo_data), warnings.append)
    assert [s.run_dir for s in specs] == [world["honest"]]
    assert len(warnings) == 5, warnings
    for name in ("x-planted", no_job.name, no_sub.name, linked.name, "x\\x1b[2Jy_105"):
        assert sum(name in w for w in warnings) == 1, (name, warnings)
    assert all("\x1b" not in w and "\n" not in w for w in warnings)
    assert not any(hidden.name in w for w in warnings)
    # the rule itself, for the shapes the jobs write
    assert run_dir_problem(world["honest"], {"competition_id": COMP, "agent_job_id": "100"}) is None
    sweep = run_dir(base / "s", "7_3")
    assert (
        run_dir_problem(sweep, {"competition_id": COMP, "sweep_array_job_id": "7", "sweep_task_index": "3"})
        is None
    )
    assert run_dir_problem(
        sweep, {"competition_id": COMP, "sweep_array_job_id": "8", "sweep_task_index": "3"}
    )
    local = run_dir(base / "s", "local-20260101-99_3")
    assert (
        run_dir_problem(local, {"competition_id": COMP, "sweep_array_job_id": "", "sweep_task_index": "3"})
        is None
    )


def test_a_runs_recorded_data_dir_is_not_used(world: dict[str, Any], demo_data: Path) -> None:
    honest = world["honest"]
    fake = fake_data(honest.parent.parent.parent, world["public"], world["preds"])
    meta = json.loads((honest / "metadata.json").read_text())
    (honest / "metadata.json").write_text(json.dumps({**meta, "data_dir": str(fake)}))
    (spec,) = specs_from_dir(honest, resolver(demo_data), print)
    assert spec.data_dir == demo_data and spec.recorded_data_dir == str(fake)
    report = grade_run(spec).report
    assert report.valid_submission and report.score != 0.0 and not report.gold_medal
    assert report.recorded_data_dir == str(fake) and report.data_dir == str(demo_data)
    # control: graded against the data it names, the same submission scores 0 error, gold
    (spec,) = specs_from_dir(honest, resolver(fake), print)
    assert grade_run(spec).report.gold_medal


@pytest.mark.parametrize(
    ("scratch", "output", "refused"),
    [
        ("/x/runs", "/x/runs", True),
        ("/x/runs/scratch", "/x/runs", True),
        ("/x", "/x/runs", True),
        ("/x/scratch", "/x/runs", False),
        ("/x/runs-scratch", "/x/runs", False),
        ("", "/x/runs", False),
    ],
)
def test_scratch_dir_must_stay_apart_from_output_base(scratch: str, output: str, refused: bool) -> None:
    problem = scratch_problem({"SCRATCH_DIR": scratch, "OUTPUT_BASE": output})
    assert bool(problem) is refused
    if problem:
        assert "\n" not in problem and "SCRATCH_DIR" in problem and "outside OUTPUT_BASE" in problem


def test_scratch_check_sees_through_links(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    os.symlink(tmp_path / "runs", tmp_path / "alias")
    assert scratch_problem(
        {"SCRATCH_DIR": str(tmp_path / "alias" / "s"), "OUTPUT_BASE": str(tmp_path / "runs")}
    )
    assert find_run_dirs(tmp_path / "nothing-here") == []
