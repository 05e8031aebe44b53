"""The LLM keys of the config (LLM_BASE_URL, LLM_MODEL, LLM_API_KEY_FILE, LLM_MODEL_DIR with
LLM_BASE_URL=job): each problem is one line of `mlebench-hpc config` and exit 2; good values pass."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlebench_hpc.config import config_cmd

LLM_KEYS = ("LLM_BASE_URL", "LLM_MODEL", "LLM_API_KEY_FILE", "LLM_MODEL_DIR", "LLM_CMD")


@pytest.fixture(autouse=True)
def _no_llm_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in LLM_KEYS:
        monkeypatch.delenv(key, raising=False)


def check(tmp_path: Path, *lines: str) -> tuple[int, list[str]]:
    cfg = tmp_path / "c.env"
    cfg.write_text(f'OUTPUT_BASE="{tmp_path}/runs"\n' + "".join(f"{line}\n" for line in lines))
    res = CliRunner().invoke(config_cmd, ["--config", str(cfg)])
    return res.exit_code, [line for line in res.output.splitlines() if line]


def key_file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "llm.key"
    path.write_text("secret-key\n")
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize(
    "lines",
    [
        (),  # no endpoint: the agent's own API
        ("LLM_BASE_URL=http://node1:8000/v1", "LLM_MODEL=qwen-coder"),
        ("LLM_BASE_URL=https://llm.example.org/v1/", "LLM_MODEL=m"),
        ("LLM_BASE_URL=auto:1234", "LLM_MODEL=m"),
        ("LLM_BASE_URL=auto:1234+1", "LLM_MODEL=m"),
        ("LLM_BASE_URL=job", "LLM_MODEL=m", "LLM_CMD='llama-server --port \"$LLM_PORT\"'"),
    ],
)
def test_good_llm_settings_pass(tmp_path: Path, lines: tuple[str, ...]) -> None:
    code, out = check(tmp_path, *lines)
    assert code == 0, out


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        (
            ("LLM_BASE_URL=node1:8000/v1", "LLM_MODEL=m"),
            "LLM_BASE_URL=node1:8000/v1 is not http://host:port/v1",
        ),
        (("LLM_BASE_URL=http://node1:8000", "LLM_MODEL=m"), "does not end in /v1"),
        (("LLM_BASE_URL=auto:abc", "LLM_MODEL=m"), "LLM_BASE_URL=auto:abc: not a Slurm job id"),
        (("LLM_BASE_URL=http://node1:8000/v1",), "LLM_MODEL is empty"),
        (("LLM_BASE_URL=job", "LLM_MODEL=m", "LLM_CMD=''"), "LLM_BASE_URL=job runs LLM_CMD, which is empty"),
        (("LLM_BASE_URL=job", "LLM_MODEL=m"), "LLM_MODEL_DIR is empty"),  # the default LLM_CMD loads it
        (
            ("LLM_BASE_URL=job", "LLM_MODEL=m", "LLM_MODEL_DIR=/nonexistent/weights"),
            "LLM_MODEL_DIR=/nonexistent/weights is not a directory",
        ),
        (("LLM_API_KEY_FILE=/nonexistent/key",), "LLM_API_KEY_FILE=/nonexistent/key is not a readable file"),
    ],
)
def test_each_problem_is_one_line(tmp_path: Path, lines: tuple[str, ...], says: str) -> None:
    code, out = check(tmp_path, *lines)
    assert code == 2
    assert len(out) == 1 and out[0].startswith("config error: ") and says in out[0], out


def test_key_file_must_be_private(tmp_path: Path) -> None:
    key = key_file(tmp_path, 0o644)
    code, out = check(tmp_path, f"LLM_API_KEY_FILE={key}")
    assert code == 2 and len(out) == 1 and f"chmod 600 {key}" in out[0], out
    os.chmod(key, 0o600)
    assert check(tmp_path, f"LLM_API_KEY_FILE={key}") == (0, [])


def test_model_dir_is_checked_only_when_this_job_starts_the_server(tmp_path: Path) -> None:
    """The weights matter to the job that runs LLM_CMD (the server job checks them itself)."""
    lines = ("LLM_BASE_URL=http://node1:8000/v1", "LLM_MODEL=m", "LLM_MODEL_DIR=/nonexistent/weights")
    assert check(tmp_path, *lines)[0] == 0
    weights = tmp_path / "weights"
    weights.mkdir()
    assert check(tmp_path, "LLM_BASE_URL=job", "LLM_MODEL=m", f"LLM_MODEL_DIR={weights}")[0] == 0


def test_several_problems_one_line_each(tmp_path: Path) -> None:
    code, out = check(tmp_path, "LLM_BASE_URL=ftp://x/v1", "LLM_API_KEY_FILE=/nonexistent/key")
    assert code == 2
    assert len(out) == 3, out  # the URL, the missing model, the key file
