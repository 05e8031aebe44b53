"""Shared pytest fixtures and markers.

Markers (registered in pyproject.toml, and here too if missing):
  @pytest.mark.slurm      needs a Slurm controller that answers (as root: `make cluster-up`)
  @pytest.mark.apptainer  needs a working `apptainer`
A marked test is skipped with the reason when that is unavailable, or fails when
MLEBENCH_REQUIRE_SLURM=1 / MLEBENCH_REQUIRE_APPTAINER=1 (tests/run_all.sh sets them after
bringing the cluster up as root: CI must run those tests, not skip them).
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

_MARKERS = {
    "slurm": "needs the local Slurm test cluster",
    "apptainer": "needs a real apptainer",
}


def _probe(cmd: list[str], timeout: float) -> str | None:
    """Run cmd; None when it succeeds, else one line saying why not."""
    if shutil.which(cmd[0]) is None:
        return f"{cmd[0]} not on PATH"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"'{' '.join(cmd)}' timed out after {timeout:.0f}s"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"'{' '.join(cmd)}' failed: {last}"
    return None


@functools.cache
def slurm_unavailable() -> str | None:
    """Why Slurm cannot be used here, or None when a controller answers."""
    why = _probe(["sinfo", "-h", "-o", "%P"], timeout=15)
    return None if why is None else f"no Slurm: {why} (as root: make cluster-up)"


@functools.cache
def apptainer_unavailable() -> str | None:
    """Why Apptainer cannot be used here, or None when it works."""
    why = _probe(["apptainer", "version"], timeout=30)
    return None if why is None else f"no Apptainer: {why} (as root: make cluster-up)"


_REQUIREMENTS: dict[str, tuple[Callable[[], str | None], str]] = {
    "slurm": (slurm_unavailable, "MLEBENCH_REQUIRE_SLURM"),
    "apptainer": (apptainer_unavailable, "MLEBENCH_REQUIRE_APPTAINER"),
}


def _require(name: str) -> None:
    """Skip (or fail, when required by the environment) if `name` is unavailable."""
    probe, env_var = _REQUIREMENTS[name]
    why = probe()
    if why is None:
        return
    if os.environ.get(env_var) == "1":
        pytest.fail(f"{why}, but {env_var}=1 requires it", pytrace=False)
    pytest.skip(why)


def pytest_configure(config: pytest.Config) -> None:
    known = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    for name, text in _MARKERS.items():
        if name not in known:
            config.addinivalue_line("markers", f"{name}: {text}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for name in _REQUIREMENTS:
        if item.get_closest_marker(name) is not None:
            _require(name)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root directory."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def python_exe() -> str:
    """The interpreter running the tests (the venv's), for subprocesses."""
    return sys.executable


@pytest.fixture
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (prefer --port 0 where the program supports it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def slurm() -> None:
    """Use in a test that needs Slurm but is not marked: skips or fails like the marker."""
    _require("slurm")


@pytest.fixture
def apptainer() -> str:
    """Path of a working apptainer (skips or fails like the marker)."""
    _require("apptainer")
    path = shutil.which("apptainer")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo competitions, prepared once per test session by the real CLI."""
    data = tmp_path_factory.getbasetemp() / "demo-data"
    out = subprocess.run(
        [str(Path(sys.executable).parent / "mlebench-hpc"), "prepare-demo", "--data-dir", str(data)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert {"demo-breast-cancer", "demo-diabetes"} <= set(out)
    return data


@pytest.fixture
def server(demo_data: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The real grading server with a token and a state dir, as slurm_grading_server.sh makes them."""
    state = tmp_path / "runs" / ".state" / "demo-diabetes_7"
    state.mkdir(parents=True)
    (state / "token").write_text("tok-7\n")
    (state / "token").chmod(0o600)
    cmd = [
        str(Path(sys.executable).parent / "mlebench-hpc"),
        "serve",
        "--competition-id",
        "demo-diabetes",
        "--data-dir",
        str(demo_data),
    ]
    cmd += ["--url-file", str(state / "url"), "--token-file", str(state / "token")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (state / "url").is_file() and time.monotonic() < deadline:
            assert proc.poll() is None, "grading server exited"
            time.sleep(0.1)
        yield (state / "url").read_text().strip(), state
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def start_env(server: tuple[str, Path], tmp_path: Path, repo_root: Path, demo_data: Path) -> dict[str, str]:
    """The config's values as a job's environment gives them to `run start`, against `server`."""
    _, state = server
    return {
        "MH_STATE_BASE": str(state.parent),
        "OUTPUT_BASE": str(tmp_path / "runs"),
        "RUN_GROUP": "grp",
        "MH_GROUP": "",
        "DATA_DIR": str(demo_data),
        "TIME_LIMIT_SECS": "600",
        "MH_ROOT": str(repo_root),
        "SLURM_JOB_ID": "",
        "MH_GRADING_TOKEN_FILE": "",
        "AGENT_ID": "dummy",
        "AGENTS_DIR": str(repo_root / "agents"),
        "AGENT_ENV_FILE": "",
        "TIME_MARGIN_SECS": "300",
    }
