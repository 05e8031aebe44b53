"""The one config file: where it is found, how it is parsed, what `mlebench-hpc config` refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from mlebench_hpc.config import ConfigError, config_cmd, find_config_path, load_config


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
        "LLM_CMD='echo $HOME'\nexport STEP_LIMIT=7 # trailing comment\n"
    )
    values = load_config(cfg)
    assert values["DATA_DIR"] == "/home/u/data"
    assert values["OUTPUT_BASE"] == "/home/u/data/runs"
    assert values["LLM_CMD"] == "echo $HOME"  # single quotes: no expansion, as in bash
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


def test_example_config_shows_every_key_with_its_one_default(tmp_path: Path) -> None:
    """The example documents the defaults of config.py (the only place that sets them): every key,
    each with exactly that default, and with the lines uncommented it is a valid config."""
    from mlebench_hpc.config import SETTINGS

    example = Path(__file__).resolve().parents[2] / "scripts_hpc/config.example.env"
    assert load_config(example) == {}  # nothing set: the defaults apply
    shown = {}
    for line in example.read_text().splitlines():
        if line.startswith("# ") and "=" in line and line[2:].split("=", 1)[0].isupper():
            key, value = line[2:].split("=", 1)
            shown[key] = value
    assert {s.key: f"'{s.default}'" if s.literal else f'"{s.default}"' for s in SETTINGS} == shown
    uncommented = tmp_path / "c.env"
    uncommented.write_text("".join(f"{k}={v}\n" for k, v in shown.items()))
    assert set(load_config(uncommented)) == set(shown)


def test_config_reports_each_problem_on_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "ready/prepared/public").mkdir(parents=True)
    (data / "ready/prepared/private").mkdir(parents=True)
    cfg = tmp_path / "c.env"
    cfg.write_text(f'DATA_DIR="{data}"\nGRADING_SIF="{tmp_path}/missing.sif"\n')
    runner = CliRunner()
    ok = runner.invoke(config_cmd, ["--config", str(cfg), "--competition", "ready"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(
        config_cmd,
        ["--config", str(cfg), "--competition", "ready", "--competition", "nope", "--need", "GRADING_SIF"],
    )
    assert bad.exit_code == 2
    lines = [line for line in bad.output.splitlines() if line]
    assert len(lines) == 2
    assert any("GRADING_SIF" in line and "make sif" in line for line in lines)
    assert any("nope is not prepared" in line for line in lines)


def test_config_missing_data_dir(tmp_path: Path) -> None:
    cfg = tmp_path / "c.env"
    cfg.write_text(f'DATA_DIR="{tmp_path}/none"\n')
    res = CliRunner().invoke(config_cmd, ["--config", str(cfg), "--competition", "a"])
    assert res.exit_code == 2
    assert "does not exist" in res.output and len(res.output.strip().splitlines()) == 1


def _shell_value(cfg: Path, key: str, env: dict[str, str]) -> str:
    """KEY as the bash library sees it: `eval "$(mlebench-hpc config --shell)"`."""
    import subprocess
    import sys

    cli = Path(sys.executable).parent / "mlebench-hpc"
    script = f'out=$("{cli}" config --shell --config "$1") || exit 2; eval "$out"; printf %s "${key}"'
    res = subprocess.run(["bash", "-c", script, "_", str(cfg)], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ("DATA_DIR=~/data", "{home}/data"),
        ('DATA_DIR="~/data"', "{home}/data"),
        ("DATA_DIR=$HOME/data", "{home}/data"),
        ('DATA_DIR="${HOME}/my data"', "{home}/my data"),
        ("DATA_DIR='$HOME/~literal'", "$HOME/~literal"),
        ('DATA_DIR="$SCRATCH_ROOT/d"', "/scratch/u/d"),  # an environment variable, as on a cluster
    ],
)
def test_every_reader_sees_the_same_value(tmp_path: Path, line: str, want: str) -> None:
    """`config`, the sbatch scripts (bash eval) and grade (resolve) agree, `~` included."""
    import os

    home = tmp_path / "home"
    home.mkdir()
    cfg = tmp_path / "c.env"
    cfg.write_text(line + "\n")
    env = {**os.environ, "HOME": str(home), "SCRATCH_ROOT": "/scratch/u"}
    expected = want.format(home=home)
    assert _shell_value(cfg, "DATA_DIR", env) == expected
    import mlebench_hpc.config as config

    old = dict(os.environ)
    try:
        os.environ.update(env)
        assert config.resolve(cfg)["DATA_DIR"] == expected
    finally:
        os.environ.clear()
        os.environ.update(old)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('DATA_DIR="$(whoami)/d"', "command substitution"),
        ("DATA_DIR=`whoami`", "command substitution"),
        ('DATA_DIR="${X:-/d}"', "not supported"),
        ('DATA_DIR="/d', "unterminated"),
        ("DATA_DIR=/a b", "must be quoted"),
    ],
)
def test_what_bash_would_run_is_refused_with_one_line(tmp_path: Path, line: str, message: str) -> None:
    cfg = tmp_path / "c.env"
    cfg.write_text(line + "\n")
    res = CliRunner().invoke(config_cmd, ["--config", str(cfg), "--shell"])
    assert res.exit_code == 2 and message in res.output
    assert len(res.output.strip().splitlines()) == 1 and "c.env:1" in res.output


def test_defaults_fill_every_key_and_name_earlier_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlebench_hpc.config import KNOWN_KEYS, resolve

    monkeypatch.setenv("HOME", str(tmp_path))
    for key in KNOWN_KEYS:
        monkeypatch.delenv(key, raising=False)
    cfg = tmp_path / "c.env"
    cfg.write_text(f'IMAGE_DIR="{tmp_path}/img"\n')
    values = resolve(cfg)
    assert set(values) == set(KNOWN_KEYS)
    assert values["GRADING_SIF"] == f"{tmp_path}/img/mlebench-grading.sif"  # default naming IMAGE_DIR
    assert values["OUTPUT_BASE"] == f"{tmp_path}/mlebench-runs" and values["TIME_MARGIN_SECS"] == "300"
    monkeypatch.setenv("RUN_GROUP", "from-env")  # a key the file does not set: the environment's value
    assert resolve(cfg)["RUN_GROUP"] == "from-env"


def test_slurm_keys_are_not_exported(tmp_path: Path) -> None:
    """srun reads SLURM_PARTITION & co from its environment: a hetjob's steps must not inherit ours."""
    cfg = tmp_path / "c.env"
    cfg.write_text('SLURM_PARTITION="gpu"\nDATA_DIR=/d\n')
    res = CliRunner().invoke(config_cmd, ["--config", str(cfg), "--shell"])
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert "SLURM_PARTITION=gpu" in lines and "export DATA_DIR=/d" in lines
    assert any(line.startswith("export MH_STATE_BASE=") for line in lines)


def test_slurm_keys_never_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM_ACCOUNT in a user's shell is srun's input variable, not the config's: a job would check
    itself against an account nobody asked for."""
    from mlebench_hpc.config import resolve

    cfg = tmp_path / "c.env"
    cfg.write_text("DATA_DIR=/d\n")
    monkeypatch.setenv("SLURM_ACCOUNT", "from-srun")
    monkeypatch.setenv("RUN_GROUP", "from-env")  # control: an ordinary key does fall back
    values = resolve(cfg)
    assert values["SLURM_ACCOUNT"] == "" and values["RUN_GROUP"] == "from-env"
    cfg.write_text('DATA_DIR=/d\nSLURM_ACCOUNT="proj"\n')
    assert resolve(cfg)["SLURM_ACCOUNT"] == "proj"
