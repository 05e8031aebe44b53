"""Agents in upstream MLE-bench's format, the interface every published agent ships in.

AGENTS_DIR holds one directory per agent; each `<name>/config.yaml` maps variant ids (`aide`,
`aide/dev`, ...) to `start`, `dockerfile` (paths relative to AGENTS_DIR), `kwargs_type`
(`omegaconf`: `k=v` arguments, `argparse`: `--k v`), `kwargs`, `env_vars` and `privileged`, with
YAML anchors and merge keys as upstream writes them (upstream's agents/registry.py). A variant id
is resolved as upstream's registry does: the config.yaml under AGENTS_DIR that holds it (files in
sorted order; an id held by two files is refused rather than picked by chance). Values written
`${{ secrets.NAME }}` are secrets: they come only from the user's 0600 AGENT_ENV_FILE and reach the
container only through its env file; one in `kwargs` (a command line everybody's `ps` shows) is
refused. `privileged: true` (docker-in-docker) has no Apptainer equivalent and is refused.

`mlebench-hpc agent resolve ID` prints what the job needs as shell assignments (never a secret);
`mlebench-hpc agent list` lists the ids found; `mlebench-hpc agent env-file` writes the variant's
env vars and secrets into the run's 0600 env file.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlebench_hpc.errors import HelperError

# upstream's agents/utils.py pattern, matched at the start of the value as re.match does there
SECRET = re.compile(r"\$\{\{\s*secrets\.(\w+)\s*\}\}")
KWARGS_TYPES = ("omegaconf", "argparse")
# upstream's agents/.shared_env: the four build arguments and the container's layout
SHARED_ENV: dict[str, str] = {
    "SUBMISSION_DIR": "/home/submission",
    "LOGS_DIR": "/home/logs",
    "CODE_DIR": "/home/code",
    "AGENT_DIR": "/home/agent",
}
START_IN_IMAGE = "/home/agent/start.sh"  # upstream's run.py: bash ${AGENT_DIR}/start.sh <kwargs>
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Agent:
    """One variant of an agent, as upstream's registry.Agent, with secrets kept apart."""

    id: str
    name: str  # the agent's directory name (upstream: config.yaml's parent)
    agents_dir: Path
    config_file: Path
    start: Path
    dockerfile: Path
    kwargs: dict[str, Any]
    kwargs_type: str | None
    env_vars: dict[str, str]  # plain values, as strings
    secrets: dict[str, str] = field(default_factory=dict)  # env var -> secret name
    privileged: bool = False

    def argv(self) -> list[str]:
        """`bash /home/agent/start.sh` and the kwargs in upstream's form and order (run.py)."""
        cmd = ["bash", START_IN_IMAGE]
        if self.kwargs_type == "argparse":
            for key, value in self.kwargs.items():
                cmd += [f"--{key}", _text(value)]
        elif self.kwargs_type == "omegaconf":
            cmd += [f"{key}={_text(value)}" for key, value in self.kwargs.items()]
        return cmd

    def record(self) -> dict[str, Any]:
        """What metadata.json keeps of the variant: never a secret's value."""
        return {
            "agent_id": self.id,
            "agent_name": self.name,
            "agent_config": str(self.config_file),
            "agent_kwargs_type": self.kwargs_type,
            "agent_kwargs": {k: _text(v) for k, v in self.kwargs.items()},
            "agent_env_var_names": sorted([*self.env_vars, *self.secrets]),
            "agent_secret_names": sorted(set(self.secrets.values())),
            "agent_models": self.models(),
        }

    def models(self) -> list[str]:
        """The model(s) the variant names, for the leaderboard row: its kwargs and plain env vars
        whose key names a model (names_model)."""
        named = [*self.kwargs.items(), *self.env_vars.items()]
        return list(dict.fromkeys(_text(v) for k, v in named if names_model(k) and _text(v)))


_MODEL_KEY = re.compile(r"model|llm[-_.]?name", re.IGNORECASE)


def names_model(key: object) -> bool:
    """Whether a kwarg or env var KEY names a model (`agent.code.model`, `MODEL`, `LLM_MODEL`,
    `llm-name`), not where one lies (`LLM_MODEL_DIR`, `*_path`, `*_file`)."""
    k = str(key).lower()
    return bool(_MODEL_KEY.search(k)) and not k.endswith(("_dir", "_path", "_file", "-dir", "-path", "-file"))


def _text(value: Any) -> str:
    """A value as upstream puts it on the command line (Python's str: True, 0.5, 20)."""
    return str(value)


def default_agents_dir(mlebench_dir: str, checkout: Path) -> Path:
    """$MLEBENCH_DIR/agents when MLEBENCH_DIR is set, else this project's agents/."""
    return Path(mlebench_dir) / "agents" if mlebench_dir else checkout / "agents"


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise HelperError(f"cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise HelperError(f"{path}{where} is not valid YAML: fix it") from None
    return data if isinstance(data, dict) else {}


def _is_variant(value: Any) -> bool:
    return isinstance(value, dict) and "start" in value and "dockerfile" in value


def config_files(agents_dir: Path) -> list[Path]:
    if not agents_dir.is_dir():
        raise HelperError(f"AGENTS_DIR={agents_dir} is not a directory: set AGENTS_DIR (or MLEBENCH_DIR)")
    return sorted(agents_dir.glob("**/config.yaml"))


def list_ids(agents_dir: Path) -> list[str]:
    ids: list[str] = []
    for path in config_files(agents_dir):
        ids += [str(k) for k, v in _load_yaml(path).items() if _is_variant(v)]
    return ids


def _secret_name(value: Any) -> str | None:
    m = SECRET.match(value) if isinstance(value, str) else None
    return m.group(1) if m else None


def resolve(agent_id: str, agents_dir: Path) -> Agent:
    """The variant AGENT_ID under AGENTS_DIR; HelperError (one line) otherwise."""
    holders = [p for p in config_files(agents_dir) if _is_variant(_load_yaml(p).get(agent_id))]
    if not holders:
        ids = list_ids(agents_dir)
        shown = ", ".join(ids) if ids else "none"
        raise HelperError(
            f"agent id {agent_id!r} is not in any config.yaml under {agents_dir}; ids found: {shown}"
        )
    if len(holders) > 1:
        raise HelperError(
            f"agent id {agent_id!r} is defined in {holders[0]} and in {holders[1]}: rename one of them"
        )
    path = holders[0]
    data = _load_yaml(path)[agent_id]
    where = f"agent {agent_id} ({path})"
    kwargs = data.get("kwargs") or {}
    env_vars = data.get("env_vars") or {}
    kwargs_type = data.get("kwargs_type")
    privileged = data.get("privileged", False)
    if not isinstance(kwargs, dict) or not isinstance(env_vars, dict):
        raise HelperError(f"{where}: kwargs and env_vars must be mappings")
    if kwargs_type is None and kwargs:
        raise HelperError(f"{where}: has kwargs but no kwargs_type (omegaconf or argparse)")
    if kwargs_type is not None and kwargs_type not in KWARGS_TYPES:
        raise HelperError(f"{where}: kwargs_type {kwargs_type!r} is neither omegaconf nor argparse")
    if not isinstance(privileged, bool):
        raise HelperError(f"{where}: privileged must be true or false")
    if privileged:
        raise HelperError(
            f"{where}: privileged: true (docker-in-docker) cannot run under Apptainer, which has no "
            "privileged mode: use a variant without it"
        )
    for key, value in kwargs.items():
        if _secret_name(value) is not None:
            raise HelperError(
                f"{where}: kwarg {key} is a secret, which would sit on the agent's command line for "
                "every user's ps to see: pass it through env_vars instead"
            )
    plain: dict[str, str] = {}
    secrets: dict[str, str] = {}
    for key, value in env_vars.items():
        if not isinstance(key, str) or not _NAME.fullmatch(key):
            raise HelperError(f"{where}: env var name {key!r} is not a shell variable name")
        name = _secret_name(value)
        if name is not None:
            secrets[key] = name
        elif isinstance(value, (dict, list)) or value is None:
            raise HelperError(f"{where}: env var {key} must be a plain value")
        else:
            plain[key] = _text(value)
    start = agents_dir / str(data["start"])
    dockerfile = agents_dir / str(data["dockerfile"])
    for what, p in (("start script", start), ("dockerfile", dockerfile)):
        if not p.is_file():
            raise HelperError(f"{where}: its {what} {p} does not exist")
    return Agent(
        id=agent_id,
        name=path.parent.name,
        agents_dir=agents_dir,
        config_file=path,
        start=start,
        dockerfile=dockerfile,
        kwargs=dict(kwargs),
        kwargs_type=kwargs_type,
        env_vars=plain,
        secrets=secrets,
        privileged=privileged,
    )


# ------------------------------------------------------------------ secrets and the env file
def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of the user's AGENT_ENV_FILE (mode 0600; `export ` and quotes allowed)."""
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HelperError(f"AGENT_ENV_FILE={path} cannot be read ({exc}): fix the path") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise HelperError(f"AGENT_ENV_FILE={path} is readable by others: chmod 600 {path}")
    values: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        stripped = stripped.removeprefix("export ").lstrip()
        key, sep, value = stripped.partition("=")
        if not sep or not _NAME.fullmatch(key):
            raise HelperError(f"{path}:{lineno}: not a KEY=value line")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def env_lines(agent: Agent, env_file: Path | None, extra: dict[str, str]) -> str:
    """The variant's lines of the run's env file: its plain env vars, each secret from the user's
    env file (a missing one is an error naming it), then EXTRA. Quoted for apptainer's --env-file,
    which reads the file as shell."""
    found = read_env_file(env_file) if env_file is not None else {}
    missing = sorted({name for name in agent.secrets.values() if name not in found})
    if missing:
        where = f"AGENT_ENV_FILE={env_file}" if env_file else "AGENT_ENV_FILE (not set)"
        raise HelperError(
            f"agent {agent.id} needs the secret(s) {', '.join(missing)}, which {where} does not hold: "
            "add NAME=value lines to that 0600 file"
        )
    values = {**agent.env_vars, **{k: found[n] for k, n in agent.secrets.items()}, **extra}
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def write_env_file(out: Path, text: str) -> None:
    """OUT with mode 0600 from the start (never readable by others, even for a moment)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, out)
