"""The one config file: where it is found, how it is parsed, what check-config refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from mlebench_hpc.config import ConfigError, check_config_cmd, find_config_path, load_config


def test_found_via_env_then_cwd_then_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".config/mlebench-hpc").mkdir(parents=True)
    (home / ".config/mlebench-hpc/config.env").write_text("DATA_DIR=/h\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("MLEBENCH_HPC_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_config_path() == home / ".config/mlebench-hpc/config.env"
    (tmp_path / "mlebench-hpc.env").write_text("DATA_DIR=/c\n")
    assert find_config_path() == Path("mlebench-hpc.env")
    monkeypatch.setenv("MLEBENCH_HPC_CONFIG", str(tmp_path / "x.env"))
    assert find_config_path() == tmp_path / "x.env"


def test_parses_bash_style_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/u")
    cfg = tmp_path / "c.env"
    cfg.write_text(
        '# comment\n\nDATA_DIR="$HOME/data"\nOUTPUT_BASE=${DATA_DIR}/runs\n'
        "AGENT_CMD='echo $HOME'\nexport STEP_LIMIT=7 # trailing comment\n"
    )
    values = load_config(cfg)
    assert values["DATA_DIR"] == "/home/u/data"
    assert values["OUTPUT_BASE"] == "/home/u/data/runs"
    assert values["AGENT_CMD"] == "echo $HOME"  # single quotes: no expansion, as in bash
    assert values["STEP_LIMIT"] == "7"


@pytest.mark.parametrize(
    ("text", "message"),
    [("NOT_A_KEY=1\n", "unknown key NOT_A_KEY"), ("this is not a line\n", "not a KEY=value line")],
)
def test_bad_lines_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "c.env"
    cfg.write_text("DATA_DIR=/d\n" + text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(cfg)
    assert ":2:" in str(err.value)


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "scripts_hpc/config.example.env"
    assert "DATA_DIR" in load_config(example)


def test_check_config_reports_each_problem_on_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "ready/prepared/public").mkdir(parents=True)
    (data / "ready/prepared/private").mkdir(parents=True)
    cfg = tmp_path / "c.env"
    cfg.write_text(f'DATA_DIR="{data}"\nGRADING_SIF="{tmp_path}/missing.sif"\n')
    runner = CliRunner()
    ok = runner.invoke(check_config_cmd, ["--config", str(cfg), "--competition", "ready"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(
        check_config_cmd,
        ["--config", str(cfg), "--competition", "ready", "--competition", "nope", "--need", "GRADING_SIF"],
    )
    assert bad.exit_code == 2
    lines = [line for line in bad.output.splitlines() if line]
    assert len(lines) == 2
    assert any("GRADING_SIF" in line and "make sif" in line for line in lines)
    assert any("nope is not prepared" in line for line in lines)


def test_check_config_missing_data_dir(tmp_path: Path) -> None:
    cfg = tmp_path / "c.env"
    cfg.write_text(f'DATA_DIR="{tmp_path}/none"\n')
    res = CliRunner().invoke(check_config_cmd, ["--config", str(cfg), "--competition", "a"])
    assert res.exit_code == 2
    assert "does not exist" in res.output and len(res.output.strip().splitlines()) == 1
