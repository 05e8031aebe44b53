"""agents/registry.py and agents/cli.py (`mlebench-hpc agent show/env-file`): variant ids resolved as
upstream's registry resolves them (config.yaml with anchors and merge keys), the command line in
upstream's form and order, secrets only from the 0600 env file."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from mlebench_hpc.agents.registry import Agent, env_lines, list_ids, read_env_file, resolve, write_env_file
from mlebench_hpc.errors import HelperError

REPO = Path(__file__).resolve().parents[2]

# The shape of upstream's agents/aide/config.yaml: vars, anchors, merge keys, secrets.
CONFIG = """\
vars:
  step_count: &step_count 500
  time_limit: &time_limit 86400

defaults: &defaults
  start: probe/start.sh
  dockerfile: probe/Dockerfile
  kwargs_type: omegaconf
  env_vars: &env_vars
    TIME_LIMIT_SECS: *time_limit
    STEP_LIMIT: *step_count

kwargs_common: &kwargs_common
  agent.search.max_debug_depth: 20
  agent.search.debug_prob: 1
  copy_data: False

probe:
  <<: *defaults
  kwargs:
    <<: *kwargs_common
    agent.code.model: gpt-4o-2024-08-06
    agent.steps: *step_count
  env_vars:
    <<: *env_vars
    OPENAI_API_KEY: ${{ secrets.OPENAI_API_KEY }}

probe/dev:
  <<: *defaults
  kwargs:
    <<: *kwargs_common
    agent.steps: 8
    temperature: 0.5
  env_vars:
    <<: *env_vars
    OBFUSCATE: "true"

probe/argparse:
  start: probe/start.sh
  dockerfile: probe/Dockerfile
  kwargs_type: argparse
  kwargs:
    llm-name: gpt-4o
    max-steps: 2000
    shm_size: "100G"

probe/privileged:
  start: probe/start.sh
  dockerfile: probe/Dockerfile
  privileged: true

probe/secret-kwarg:
  start: probe/start.sh
  dockerfile: probe/Dockerfile
  kwargs_type: argparse
  kwargs:
    api-key: ${{ secrets.OPENAI_API_KEY }}
"""


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    d = tmp_path / "agents"
    (d / "probe").mkdir(parents=True)
    (d / "probe/config.yaml").write_text(CONFIG)
    (d / "probe/start.sh").write_text('#!/bin/bash\necho "$@"\n')
    (d / "probe/Dockerfile").write_text("FROM mlebench-env\n")
    return d


def secrets_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    p = tmp_path / "secrets.env"
    p.write_text(text)
    p.chmod(mode)
    return p


def test_ids_are_the_mappings_with_start_and_dockerfile(agents_dir: Path) -> None:
    # as upstream's registry: any top-level key with a start and a dockerfile resolves (the anchor
    # block `defaults` too); `vars` and `kwargs_common` do not
    assert list_ids(agents_dir) == [
        "defaults", "probe", "probe/dev", "probe/argparse", "probe/privileged", "probe/secret-kwarg",
    ]  # fmt: skip


def test_merge_keys_and_anchors_as_upstream(agents_dir: Path) -> None:
    a = resolve("probe", agents_dir)
    assert a.name == "probe" and a.kwargs_type == "omegaconf"
    assert a.start == agents_dir / "probe/start.sh" and a.dockerfile == agents_dir / "probe/Dockerfile"
    assert a.env_vars == {"TIME_LIMIT_SECS": "86400", "STEP_LIMIT": "500"}
    assert a.secrets == {"OPENAI_API_KEY": "OPENAI_API_KEY"}
    # upstream's run.py: bash /home/agent/start.sh, then k=v in the mapping's order (merged keys first)
    assert a.argv() == [
        "bash", "/home/agent/start.sh",
        "agent.search.max_debug_depth=20", "agent.search.debug_prob=1", "copy_data=False",
        "agent.code.model=gpt-4o-2024-08-06", "agent.steps=500",
    ]  # fmt: skip
    dev = resolve("probe/dev", agents_dir)
    assert dev.argv()[-2:] == ["agent.steps=8", "temperature=0.5"]
    assert dev.env_vars["OBFUSCATE"] == "true" and dev.secrets == {}


def test_argparse_kwargs_as_upstream(agents_dir: Path) -> None:
    a = resolve("probe/argparse", agents_dir)
    assert a.argv() == [
        "bash", "/home/agent/start.sh", "--llm-name", "gpt-4o", "--max-steps", "2000", "--shm_size", "100G",
    ]  # fmt: skip


def test_a_wrong_id_lists_the_ids_in_one_line(agents_dir: Path) -> None:
    with pytest.raises(HelperError) as exc:
        resolve("probe/nope", agents_dir)
    msg = str(exc.value)
    assert "\n" not in msg and "probe/dev" in msg and "probe/argparse" in msg
    with pytest.raises(HelperError, match="is not a directory"):
        resolve("probe", agents_dir / "missing")


def test_privileged_and_secret_kwargs_are_refused(agents_dir: Path) -> None:
    with pytest.raises(HelperError, match="privileged: true.*no privileged mode"):
        resolve("probe/privileged", agents_dir)
    with pytest.raises(HelperError, match="kwarg api-key is a secret"):
        resolve("probe/secret-kwarg", agents_dir)


def test_an_id_in_two_files_is_refused(agents_dir: Path) -> None:
    (agents_dir / "other").mkdir()
    (agents_dir / "other/config.yaml").write_text(
        "probe/dev:\n  start: probe/start.sh\n  dockerfile: probe/Dockerfile\n"
    )
    with pytest.raises(HelperError, match="defined in .* and in"):
        resolve("probe/dev", agents_dir)


def test_secrets_come_from_the_env_file_and_a_missing_one_is_named(agents_dir: Path, tmp_path: Path) -> None:
    a = resolve("probe", agents_dir)
    with pytest.raises(HelperError, match="needs the secret\\(s\\) OPENAI_API_KEY"):
        env_lines(a, None, {})
    other = secrets_file(tmp_path, "ANTHROPIC_API_KEY=x\n")
    with pytest.raises(HelperError, match="OPENAI_API_KEY"):
        env_lines(a, other, {})
    key = 'sk-it\'s a "secret" $(rm -rf /)'
    good = secrets_file(tmp_path, f"# keys\nexport OPENAI_API_KEY='{key}'\nUNUSED=1\n")
    assert read_env_file(good)["OPENAI_API_KEY"] == key
    text = env_lines(a, good, {"GRADING_SERVER_TOKEN": "tok"})
    assert "UNUSED" not in text  # only what the variant names
    # what apptainer's --env-file (a shell reader) and bash make of it: the exact values
    show = 'set -a; . /dev/stdin; printf "%s\\0" "$OPENAI_API_KEY" "$TIME_LIMIT_SECS" "$GRADING_SERVER_TOKEN"'
    out = subprocess.run(["bash", "-c", show], input=text, capture_output=True, text=True, check=True).stdout
    assert out.split("\0")[:3] == [key, "86400", "tok"]
    with pytest.raises(HelperError, match="readable by others"):
        env_lines(a, secrets_file(tmp_path, f"OPENAI_API_KEY={key}\n", 0o644), {})


def test_the_run_env_file_is_never_readable_by_others(tmp_path: Path) -> None:
    out = tmp_path / "state" / "agent.env"
    write_env_file(out, "A='1'\n")
    assert (out.stat().st_mode & 0o777) == 0o600 and out.read_text() == "A='1'\n"


def test_the_record_has_names_never_secret_values(agents_dir: Path) -> None:
    rec = resolve("probe", agents_dir).record()
    assert rec["agent_env_var_names"] == ["OPENAI_API_KEY", "STEP_LIMIT", "TIME_LIMIT_SECS"]
    assert rec["agent_secret_names"] == ["OPENAI_API_KEY"]
    assert "secrets." not in str(rec)


def test_the_record_names_the_models_of_the_variant(agents_dir: Path) -> None:
    """What the leaderboard row's model column shows: kwargs and env vars naming a model."""
    assert resolve("probe", agents_dir).record()["agent_models"] == ["gpt-4o-2024-08-06"]
    assert resolve("probe/argparse", agents_dir).models() == ["gpt-4o"]
    assert resolve("probe/dev", agents_dir).models() == []


def test_our_own_agents_are_in_upstreams_format() -> None:
    ids = list_ids(REPO / "agents")
    assert "dummy" in ids
    for agent_id in ids:
        a = resolve(agent_id, REPO / "agents")
        assert isinstance(a, Agent) and a.dockerfile.read_text().lstrip().upper().startswith(
            ("FROM", "#", "ARG")
        )


def test_cli_show_and_env_file(agents_dir: Path, tmp_path: Path) -> None:
    run = [sys.executable, "-m", "mlebench_hpc.cli", "agent"]
    show = subprocess.run([*run, "show", "probe/argparse", "--agents-dir", str(agents_dir)],
                          capture_output=True, text=True)  # fmt: skip
    assert show.returncode == 0 and '"--llm-name"' in show.stdout
    bad = subprocess.run(
        [*run, "show", "nope", "--agents-dir", str(agents_dir)], capture_output=True, text=True
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    good = secrets_file(tmp_path, "OPENAI_API_KEY=k1\n")
    out = tmp_path / "agent.env"
    made = subprocess.run(
        [*run, "env-file", "probe", "--agents-dir", str(agents_dir), "--env-file", str(good),
         "--out", str(out), "--set", "GRADING_SERVER_TOKEN=t"],
        capture_output=True, text=True, env={**os.environ},
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert shlex.split(out.read_text().replace("\n", " ")) == [
        "TIME_LIMIT_SECS=86400", "STEP_LIMIT=500", "OPENAI_API_KEY=k1", "GRADING_SERVER_TOKEN=t",
    ]  # fmt: skip
