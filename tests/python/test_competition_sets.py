"""Competition sets: files here, upstream's split names under MLEBENCH_DIR/experiments/splits/, the
old all.txt, and the sets a group's sweeps asked for. The split files are made here in upstream's
format (one id per line, nothing else)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from mlebench_hpc.competition_sets import (
    SHIPPED_SPLITS,
    asked_set,
    competition_set,
    read_competition_list,
    resolve_competition_set,
)
from mlebench_hpc.demo import prepare_demo
from mlebench_hpc.errors import HelperError
from mlebench_hpc.sweep.plan import sweep_plan_cmd


@pytest.fixture()
def mlebench(tmp_path: Path) -> Path:
    """A stand-in upstream checkout: experiments/splits/ with split75 (no all.txt: renamed), low, dev."""
    root = tmp_path / "mle-bench"
    splits = root / "experiments" / "splits"
    splits.mkdir(parents=True)
    (splits / "split75.txt").write_text("demo-diabetes\ndemo-breast-cancer\n")
    (splits / "low.txt").write_text("demo-breast-cancer\n")
    (splits / "dev.txt").write_text("demo-diabetes\n")
    return root


def test_a_file_here_wins_over_a_split(tmp_path: Path, mlebench: Path) -> None:
    (tmp_path / "low").write_text("mine\n")
    assert resolve_competition_set("low", str(mlebench), tmp_path) == ((tmp_path / "low").resolve(), "")
    mine = tmp_path / "lite.txt"
    mine.write_text("a\n")
    assert resolve_competition_set(str(mine), None, None) == (mine.resolve(), "")


def test_split_names_with_and_without_txt(tmp_path: Path, mlebench: Path) -> None:
    low = (mlebench / "experiments" / "splits" / "low.txt").resolve()
    for name in ("low", "low.txt"):
        assert resolve_competition_set(name, str(mlebench), tmp_path) == (low, "")
    cs = competition_set(low)
    assert (cs.name, cs.split) == ("low", True) and cs.describe() == "upstream's split low"
    assert read_competition_list(low) == (["demo-breast-cancer"], [])
    mine = competition_set(tmp_path / "lite.txt")
    assert (mine.name, mine.split) == ("lite.txt", False)


def test_all_is_split75_once_all_txt_is_gone(tmp_path: Path, mlebench: Path) -> None:
    split75 = (mlebench / "experiments" / "splits" / "split75.txt").resolve()
    for name in ("all", "all.txt"):
        path, note = resolve_competition_set(name, str(mlebench), tmp_path)
        assert path == split75
        assert note.startswith("note: upstream renamed all.txt to split75.txt: using ") and "\n" not in note
    # an older checkout that still has all.txt: that one, without a note
    old = mlebench / "experiments" / "splits" / "all.txt"
    old.write_text("demo-diabetes\n")
    assert resolve_competition_set("all", str(mlebench), tmp_path) == (old.resolve(), "")


def test_unknown_sets_fail_in_one_line_naming_what_exists(tmp_path: Path, mlebench: Path) -> None:
    with pytest.raises(HelperError) as err:
        resolve_competition_set("nosuch", str(mlebench), tmp_path)
    msg = err.value.message
    assert "\n" not in msg and "nosuch" in msg and "dev, low, split75" in msg and "systemcard" in msg
    with pytest.raises(HelperError) as err:
        resolve_competition_set("nosuch", None, tmp_path)
    assert "\n" not in err.value.message and "upstream's (low, medium, high, split75" in err.value.message
    with pytest.raises(HelperError) as err:
        resolve_competition_set("../low", str(mlebench), tmp_path)  # a path, not a name
    assert "split name" in err.value.message


def test_shipped_splits_without_mlebench_dir_and_the_checkouts_own_win(
    tmp_path: Path, mlebench: Path
) -> None:
    for name, n in (("low", 22), ("medium", 38), ("high", 15), ("split75", 75), ("dev", 7)):
        path, note = resolve_competition_set(name, None, tmp_path)
        assert path == SHIPPED_SPLITS / f"{name}.txt" and note == ""
        assert len(read_competition_list(path)[0]) == n
        cs = competition_set(path)
        assert (cs.name, cs.split) == (name, True)
    path, note = resolve_competition_set("all", None, tmp_path)
    assert path == SHIPPED_SPLITS / "split75.txt" and note.startswith("note: upstream renamed all.txt")
    # a checkout's own file of that name wins (a newer upstream); one it lacks comes from ours
    assert (
        resolve_competition_set("low", str(mlebench), tmp_path)[0]
        == (mlebench / "experiments" / "splits" / "low.txt").resolve()
    )
    assert resolve_competition_set("medium", str(mlebench), tmp_path)[0] == SHIPPED_SPLITS / "medium.txt"


def test_asked_sets_are_the_union_of_a_groups_submissions(tmp_path: Path) -> None:
    splits = tmp_path / "mle-bench" / "experiments" / "splits"
    new = {"competitions": ["a", "b"], "competitions_file": str(splits / "low.txt"), "split": "low"}
    new["competition_set"] = "low"
    # an older submission's record: no split key, known by its file's place
    old = {"competitions": ["b", "c"], "competitions_file": str(splits / "medium.txt")}
    cs = asked_set([new, old])
    assert cs is not None and cs.names == ("low", "medium") and cs.split and cs.ids == ("a", "b", "c")
    assert cs.describe() == "upstream's splits low + medium (3 competitions)"
    mine = asked_set([{"competitions": ["a"], "competitions_file": str(tmp_path / "lite.txt")}])
    assert mine is not None and mine.describe() == "competition set lite.txt (1 competitions)"
    assert asked_set([{"seeds": 2}]) is None and asked_set([]) is None


def test_sweep_plan_resolves_split_names_and_takes_upstreams_flag(
    tmp_path: Path, mlebench: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    prepare_demo(data)
    monkeypatch.chdir(tmp_path)
    for flag, name in (("--competitions", "split75"), ("--competition-set", "all")):
        res = CliRunner().invoke(
            sweep_plan_cmd,
            ["--check-only", flag, name, "--mlebench-dir", str(mlebench), "--data-dir", str(data)],
        )
        assert res.exit_code == 0, res.output
        assert res.stdout.strip() == str((mlebench / "experiments" / "splits" / "split75.txt").resolve())
        assert ("renamed all.txt" in res.stderr) == (name == "all")
    res = CliRunner().invoke(
        sweep_plan_cmd,
        ["--check-only", "--competitions", "nope", "--mlebench-dir", str(mlebench), "--data-dir", str(data)],
    )
    assert res.exit_code == 2 and "competition list nope not found" in res.stderr
