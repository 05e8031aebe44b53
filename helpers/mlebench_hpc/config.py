"""The one configuration file users copy and edit (bash KEY=value syntax, shared with the
sbatch scripts), found as the README says. Python reads it without running bash so that
`grade` works on machines without the cluster tools."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import click

KNOWN_KEYS: tuple[str, ...] = (
    "DATA_DIR",
    "IMAGE_DIR",
    "GRADING_SIF",
    "AGENT_SIF",
    "OUTPUT_BASE",
    "RUN_GROUP",
    "TIME_LIMIT_SECS",
    "STEP_LIMIT",
    "TIME_MARGIN_SECS",
    "MLEBENCH_DIR",
    "AGENT_CMD",
    "AGENT_ENV_FILE",
    "SCRATCH_DIR",
    "APPTAINER_EXTRA_FLAGS",
    "GRADING_IDLE_TIMEOUT",
    "UPLOAD_LIMIT_MB",
    "SLURM_PARTITION",
    "SLURM_GPU_PARTITION",
    "SLURM_ACCOUNT",
    "SLURM_QOS",
    "LLM_BASE_URL",
    "LLM_MODEL",
    "LLM_API_KEY_FILE",
    "LLM_SIF",
    "LLM_MODEL_DIR",
    "LLM_CMD",
    "LLM_READY_TIMEOUT",
)
UPSTREAM_DEFAULT_DATA_DIR = Path("~/.cache/mle-bench/data").expanduser()

_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


class ConfigError(Exception):
    """A configuration problem, worded as one line that says what to do."""


def find_config_path(explicit: str | None = None) -> Path | None:
    """$MLEBENCH_HPC_CONFIG, else ./mlebench-hpc.env, else ~/.config/mlebench-hpc/config.env."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("MLEBENCH_HPC_CONFIG")
    if env:
        return Path(env)
    for candidate in (Path("mlebench-hpc.env"), Path("~/.config/mlebench-hpc/config.env").expanduser()):
        if candidate.is_file():
            return candidate
    return None


def _unquote(raw: str) -> tuple[str, bool]:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1], False
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return raw[1:-1], True
    return raw.split(" #", 1)[0].strip(), True


def _expand(value: str, scope: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return scope.get(name, os.environ.get(name, ""))

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", repl, value)


def load_config(path: Path) -> dict[str, str]:
    """Parse KEY=value lines; raise ConfigError on unknown keys or lines bash would not take."""
    if not path.is_file():
        raise ConfigError(f"config file {path} not found: copy scripts_hpc/config.example.env there")
    values: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _LINE.match(stripped)
        if not m:
            raise ConfigError(f"{path}:{lineno}: not a KEY=value line: {stripped[:60]!r}")
        key, raw = m.group(1), m.group(2)
        if key not in KNOWN_KEYS:
            raise ConfigError(
                f"{path}:{lineno}: unknown key {key}; known keys are listed in scripts_hpc/config.example.env"
            )
        value, expand = _unquote(raw)
        values[key] = _expand(value, values) if expand else value
    return values


def config_value(key: str, config_path: str | None = None) -> str | None:
    """One key from the config in force, or None when there is no config or the key is empty."""
    path = find_config_path(config_path)
    if path is None:
        return None
    return load_config(path).get(key) or None


@click.command("check-config")
@click.option("--config", "config_path", help="Config file (default: the one in force).")
@click.option("--competition", "competitions", multiple=True, help="Competition that must be prepared.")
@click.option("--need", multiple=True, help="Key whose file or directory must exist (e.g. GRADING_SIF).")
@click.option("--print-path", is_flag=True, help="Print the config path in force and exit.")
def check_config_cmd(
    config_path: str | None, competitions: tuple[str, ...], need: tuple[str, ...], print_path: bool
) -> None:
    """Validate the config: unknown keys, missing images, data dir, unprepared competitions."""
    path = find_config_path(config_path)
    if path is None:
        raise click.ClickException(
            "no config: set MLEBENCH_HPC_CONFIG or copy scripts_hpc/config.example.env to ./mlebench-hpc.env"
        )
    if print_path:
        click.echo(str(path.resolve()))
        return
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    problems: list[str] = []
    for key in need:
        value = cfg.get(key, "")
        if not value:
            problems.append(f"{key} is empty in {path}: set it")
        elif not Path(value).exists():
            hint = "run `make sif`" if key.endswith("_SIF") else "create it or fix the path"
            problems.append(f"{key}={value} does not exist: {hint}")
    data_dir = Path(cfg.get("DATA_DIR") or UPSTREAM_DEFAULT_DATA_DIR)
    if competitions and not data_dir.is_dir():
        problems.append(
            f"DATA_DIR={data_dir} does not exist: set DATA_DIR in {path} to your prepared MLE-bench data"
        )
        competitions = ()
    for comp in competitions:
        prepared = data_dir / comp / "prepared"
        if not (prepared / "public").is_dir() or not (prepared / "private").is_dir():
            problems.append(
                f"competition {comp} is not prepared in {data_dir}: run `mlebench prepare -c {comp}` "
                f"(or `mlebench-hpc prepare-demo --data-dir {data_dir}` for demo competitions)"
            )
    for p in problems:
        click.echo(f"config error: {p}", err=True)
    if problems:
        sys.exit(2)
