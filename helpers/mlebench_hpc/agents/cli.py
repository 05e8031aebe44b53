"""`mlebench-hpc agent list|show|env-file`: the variants of AGENTS_DIR, as the jobs read them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mlebench_hpc.agents.registry import _NAME, env_lines, list_ids, resolve, write_env_file
from mlebench_hpc.errors import HelperError


def _agents_dir(value: str | None) -> Path:
    if value:
        return Path(value)
    from mlebench_hpc.config import config_value

    configured = config_value("AGENTS_DIR")
    if not configured:
        raise HelperError("AGENTS_DIR is empty: set it in the config (or MLEBENCH_DIR)")
    return Path(configured)


@click.group("agent")
def agent_cmd() -> None:
    """Agents in upstream MLE-bench's format (AGENTS_DIR/<name>/config.yaml)."""


@agent_cmd.command("list")
@click.option("--agents-dir", default=None, help="Default: AGENTS_DIR of the config in force.")
def list_cmd(agents_dir: str | None) -> None:
    """Print every variant id found, one per line."""
    for agent_id in list_ids(_agents_dir(agents_dir)):
        click.echo(agent_id)


@agent_cmd.command("show")
@click.argument("agent_id")
@click.option("--agents-dir", default=None, help="Default: AGENTS_DIR of the config in force.")
def show_cmd(agent_id: str, agents_dir: str | None) -> None:
    """Print the variant as JSON (names of secrets, never values) and its command line."""
    agent = resolve(agent_id, _agents_dir(agents_dir))
    click.echo(json.dumps({**agent.record(), "argv": agent.argv()}, indent=2))


@agent_cmd.command("env-file")
@click.argument("agent_id")
@click.option("--agents-dir", default=None, help="Default: AGENTS_DIR of the config in force.")
@click.option("--env-file", "env_file", default=None, help="The user's secrets (AGENT_ENV_FILE).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "extra", multiple=True, help="NAME=value to add (the run's own: token, LLM).")
def env_file_cmd(
    agent_id: str, agents_dir: str | None, env_file: str | None, out: Path, extra: tuple[str, ...]
) -> None:
    """Write the run's 0600 env file: the variant's env vars and secrets, then --set lines."""
    agent = resolve(agent_id, _agents_dir(agents_dir))
    pairs = {}
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not _NAME.fullmatch(key):
            raise HelperError(f"--set {item.split('=')[0]}: give NAME=value")
        pairs[key] = value
    write_env_file(out, env_lines(agent, Path(env_file) if env_file else None, pairs))


if __name__ == "__main__":  # pragma: no cover
    agent_cmd(sys.argv[1:])
