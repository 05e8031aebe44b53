"""The one configuration file users copy and edit, and the one place that reads it.

The file holds plain `KEY=value` lines (scripts_hpc/config.example.env). Python parses it for
every caller: the sbatch scripts get their values from `mlebench-hpc config --shell` (safely quoted
assignments that bash evaluates), `grade`, `doctor` and the rest call `resolve()`. So `~`, `$HOME`
and `${VAR}` mean the same everywhere, and a command substitution is refused instead of being run
by one reader and kept as text by another. Every default is in SETTINGS, nowhere else.

Value syntax: 'single quotes' are literal; "double quotes" and bare words expand `$NAME` and
`${NAME}` (a key set earlier in the file, else the environment, else that key's default) and a
leading `~`; `$(...)`, backticks and other `${...}` forms are errors. A key's value is the file's,
else the environment's (a variable of the same name), else its default; for IMAGE_DIR and
BASE_IMAGE (build-time choices: `BASE_IMAGE=... make sif`) the environment's wins over the file's.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import click


@dataclass(frozen=True)
class Setting:
    key: str
    default: str  # written like a value in the file: may name $HOME and earlier keys
    doc: str
    # Exported to child processes by the bash library. Not for SLURM_*: srun reads SLURM_PARTITION
    # and friends from its environment, and the steps of a hetjob must not inherit ours.
    export: bool = True
    # The environment's value beats the file's (a site's base image for one build: BASE_IMAGE=... make sif)
    env_wins: bool = False
    # The default is literal text, not expanded (a command template filled in by the job)
    literal: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("DATA_DIR", "$HOME/.cache/mle-bench/data", "prepared MLE-bench data: DATA_DIR/<comp>/prepared/"),
    Setting(
        "IMAGE_DIR", "$HOME/.cache/mlebench-hpc/images", "where `make sif` puts the images", env_wins=True
    ),
    Setting("GRADING_SIF", "${IMAGE_DIR}/mlebench-grading.sif", "the grading image jobs run"),
    Setting(
        "AGENT_SIF", "", "the agent image jobs run; empty: IMAGE_DIR/agent-<name>.sif of AGENT_ID's agent"
    ),
    Setting(
        "BASE_IMAGE",
        "",
        "base of `make sif`: a registry image or a base SIF/rootfs; empty: as root a local rootfs, "
        "else debian:bookworm-slim",
        env_wins=True,
    ),
    Setting("OUTPUT_BASE", "$HOME/mlebench-runs", "run directories: OUTPUT_BASE/<group>/<comp>_<jobid>/"),
    Setting("RUN_GROUP", "default", "group name when none is given"),
    Setting("TIME_LIMIT_SECS", "86400", "the agent's budget (upstream's name)"),
    Setting("STEP_LIMIT", "500", "the agent's step limit (upstream's name)"),
    Setting("TIME_MARGIN_SECS", "300", "the agent ends this long before Slurm's time limit"),
    Setting("MLEBENCH_DIR", "", "a user's upstream mle-bench checkout (optional)"),
    Setting(
        "AGENTS_DIR",
        "",
        "agents in upstream MLE-bench's format (<name>/config.yaml); empty: $MLEBENCH_DIR/agents when "
        "MLEBENCH_DIR is set, else this project's agents/",
    ),
    Setting(
        "AGENT_ID",
        "dummy",
        "the agent variant jobs run: an id of a config.yaml under AGENTS_DIR (the environment's wins: "
        "AGENT_ID=aide/dev sbatch ...; sweeps set it per task)",
        env_wins=True,
    ),
    Setting("AGENT_ENV_FILE", "", "the agent's secrets (${{ secrets.NAME }}): NAME=value lines, mode 0600"),
    Setting("SCRATCH_DIR", "", "host dir for the agent's scratch (per run below it); empty: RUN/.scratch"),
    Setting("APPTAINER_EXTRA_FLAGS", "", "extra flags for every apptainer exec"),
    Setting("GRADING_IDLE_TIMEOUT", "0", "the grading server stops after this many idle seconds (0: never)"),
    Setting("UPLOAD_LIMIT_MB", "1024", "largest upload the grading server takes"),
    Setting(
        "GRADING_VALIDATE_WORKERS",
        "2",
        "processes of the grading server that parse submissions, each with a memory budget "
        "(0: in the server, unbounded)",
    ),
    Setting(
        "GRADING_VALIDATE_BUDGET_MB",
        "auto",
        "memory one validation may use, MiB; auto: from the answers' size, within the job's memory",
    ),
    Setting(
        "SLURM_PARTITION", "", "partition of the grading server's jobs (every job checks it)", export=False
    ),
    Setting(
        "SLURM_GPU_PARTITION",
        "",
        "partition of jobs that run an agent or an LLM server; empty: SLURM_PARTITION",
        export=False,
    ),
    Setting(
        "SLURM_ACCOUNT",
        "",
        "account of every job (submit_sweep passes it, every job checks it)",
        export=False,
    ),
    Setting("SLURM_QOS", "", "QOS of every job (submit_sweep passes it, every job checks it)", export=False),
    Setting(
        "LLM_BASE_URL",
        "",
        "an OpenAI-compatible endpoint for the agent: http://host:port/v1, auto:<jobid> of an LLM server "
        "job, or job (slurm_hetjob.sh starts the server beside the agent)",
    ),
    Setting("LLM_MODEL", "", "the model's name as the endpoint lists it at /v1/models"),
    Setting(
        "LLM_API_KEY_FILE",
        "",
        "a file (mode 0600) holding a key on its first non-blank line: your server's, or the LLM job's own",
    ),
    Setting("LLM_SIF", "${IMAGE_DIR}/llm-vllm.sif", "the LLM server job's image (`make sif LLM=vllm`)"),
    Setting("LLM_MODEL_DIR", "", "the weights, a local directory (nothing is downloaded at run time)"),
    Setting(
        "LLM_CMD",
        'vllm serve "$LLM_MODEL_DIR" --served-model-name "$LLM_MODEL" --host "$LLM_HOST" --port "$LLM_PORT"'
        ' --tensor-parallel-size "$LLM_NUM_GPUS"',
        "the LLM server's command, run with bash -c; the job fills in the variables",
        literal=True,
    ),
    Setting("LLM_READY_TIMEOUT", "900", "seconds the LLM server may take until /v1/models lists the model"),
)
SETTING: dict[str, Setting] = {s.key: s for s in SETTINGS}
KNOWN_KEYS: tuple[str, ...] = tuple(SETTING)
CONFIG_HELP = "copy scripts_hpc/config.example.env there"

_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


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


def _split_value(raw: str, where: str) -> list[tuple[str, bool]]:
    """A value as (text, expand) pieces: quotes removed, comments dropped, bash's quoting rules."""
    pieces: list[tuple[str, bool]] = []
    raw = raw.strip()
    i, n, word = 0, len(raw), ""
    while i < n:
        c = raw[i]
        if c == "'":
            end = raw.find("'", i + 1)
            if end < 0:
                raise ConfigError(f"{where}: unterminated ' quote")
            if word:
                pieces.append((word, True))
                word = ""
            pieces.append((raw[i + 1 : end], False))
            i = end + 1
        elif c == '"':
            j, text = i + 1, ""
            while j < n and raw[j] != '"':
                if raw[j] == "\\" and j + 1 < n and raw[j + 1] in '"\\$`':
                    text += "\\" + raw[j + 1] if raw[j + 1] in "$`" else raw[j + 1]
                    j += 2
                    continue
                text += raw[j]
                j += 1
            if j >= n:
                raise ConfigError(f'{where}: unterminated " quote')
            if word:
                pieces.append((word, True))
                word = ""
            pieces.append((text, True))
            i = j + 1
        elif c.isspace():
            rest = raw[i:].strip()
            if rest and not rest.startswith("#"):
                raise ConfigError(f'{where}: a value with spaces must be quoted: KEY="a b"')
            break
        elif c == "#" and not word and not pieces:
            break  # KEY=#... is an empty value followed by a comment in bash too
        else:
            word += c
            i += 1
    if word:
        pieces.append((word, True))
    return pieces


def _expand(text: str, scope: dict[str, str], where: str, first: bool) -> str:
    if "$(" in text or "`" in text.replace("\\`", ""):
        raise ConfigError(
            f"{where}: command substitution ($(...) or backticks) is not allowed; write the value"
        )
    if first and (text == "~" or text.startswith("~/")):
        text = str(Path.home()) + text[1:]
    for m in re.finditer(r"\$\{([^}]*)\}", text):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", m.group(1)):
            raise ConfigError(f"{where}: ${{{m.group(1)}}} is not supported; only $NAME and ${{NAME}}")

    def repl(m: re.Match[str]) -> str:
        return _lookup(m.group(1) or m.group(2), scope)

    out = _REF.sub(repl, text.replace("\\$", "\0"))
    return out.replace("\0", "$").replace("\\`", "`")


def _lookup(name: str, scope: dict[str, str]) -> str:
    if name in scope:
        return scope[name]
    if name in os.environ:
        return os.environ[name]
    if name in SETTING:  # a key the file does not set: its default
        return _default(name, scope)
    return ""


def _default(key: str, scope: dict[str, str]) -> str:
    s = SETTING[key]
    return s.default if s.literal else _expand(s.default, scope, f"default of {key}", first=True)


def _value(raw: str, scope: dict[str, str], where: str) -> str:
    pieces = _split_value(raw, where)
    return "".join(_expand(t, scope, where, first=k == 0) if ex else t for k, (t, ex) in enumerate(pieces))


def load_config(path: Path) -> dict[str, str]:
    """The keys the file sets, expanded; raises ConfigError on unknown keys or bad syntax."""
    if not path.is_file():
        raise ConfigError(f"config file {path} not found: {CONFIG_HELP}")
    values: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{path}:{lineno}"
        m = _LINE.match(stripped)
        if not m:
            raise ConfigError(f"{where}: not a KEY=value line: {stripped[:60]!r}")
        key = m.group(1)
        if key not in SETTING:
            raise ConfigError(
                f"{where}: unknown key {key}; known keys are listed in scripts_hpc/config.example.env"
            )
        values[key] = _value(m.group(2), values, f"{where} ({key})")
    return values


def resolve(path: Path | None) -> dict[str, str]:
    """Every key: the file's value, else the environment's, else the default (defaults may name
    other keys, resolved the same way)."""
    file_values = load_config(path) if path is not None else {}
    out: dict[str, str] = {}
    for s in SETTINGS:
        if s.env_wins and os.environ.get(s.key):
            out[s.key] = os.environ[s.key]
        elif s.key in file_values:
            out[s.key] = file_values[s.key]
        elif s.key in os.environ and s.export:
            # not the SLURM_* keys: those names are srun's own input variables in a user's shell
            out[s.key] = os.environ[s.key]
        elif s.literal:
            out[s.key] = s.default
        else:
            out[s.key] = _expand(s.default, out, f"default of {s.key}", first=True)
    if not out["AGENTS_DIR"]:
        from mlebench_hpc.agents.registry import default_agents_dir

        out["AGENTS_DIR"] = str(default_agents_dir(out["MLEBENCH_DIR"], checkout()))
    return out


def checkout() -> Path:
    """This project's checkout: $MH_ROOT (set by the bash library), else where this file lies."""
    root = os.environ.get("MH_ROOT")
    return Path(root) if root else Path(__file__).resolve().parents[2]


def agent_sif(values: dict[str, str]) -> str:
    """AGENT_SIF, or when it is empty the image `make sif` builds for AGENT_ID's agent
    (IMAGE_DIR/agent-<name>.sif). Raises HelperError (one line) for an id that is not found."""
    if values.get("AGENT_SIF"):
        return values["AGENT_SIF"]
    from mlebench_hpc.agents.registry import resolve as resolve_agent

    agent = resolve_agent(values["AGENT_ID"], Path(values["AGENTS_DIR"]))
    return str(Path(values["IMAGE_DIR"]) / f"agent-{agent.name}.sif")


def config_value(key: str, config_path: str | None = None) -> str | None:
    """One key of the config in force (file, environment, default), or None when it is empty."""
    return resolve(find_config_path(config_path)).get(key) or None


def state_base(values: dict[str, str]) -> Path:
    """Where jobs keep their state (URL and token files, env files): OUTPUT_BASE/.state."""
    return Path(values["OUTPUT_BASE"]) / ".state"


def shell_assignments(values: dict[str, str], path: Path | None) -> str:
    """Lines bash can eval: every key (exported unless it is one srun would read), MH_CONFIG and
    MH_STATE_BASE. Values are quoted with shlex.quote: nothing in them is ever run."""
    lines = [f"{'export ' if SETTING[k].export else ''}{k}={shlex.quote(v)}" for k, v in values.items()]
    lines.append(f"export MH_CONFIG={shlex.quote(str(path.resolve()) if path else '')}")
    lines.append(f"export MH_STATE_BASE={shlex.quote(str(state_base(values)))}")
    return "\n".join(lines) + "\n"


UPSTREAM_DEFAULT_DATA_DIR = Path(_expand(SETTING["DATA_DIR"].default, {}, "default", first=True))


def llm_problems(values: dict[str, str], path: Path) -> list[str]:
    """The LLM endpoint's keys, one line per problem (the endpoint itself is checked by llm-ready)."""
    from mlebench_hpc.net import normalize_url
    from mlebench_hpc.slurm.query import valid_job_id

    problems: list[str] = []
    base, model = values.get("LLM_BASE_URL", ""), values.get("LLM_MODEL", "")
    shape = "http://host:port/v1, auto:<jobid> of an LLM server job, or job"
    if base.startswith("auto:"):
        if not valid_job_id(base[len("auto:") :]):
            problems.append(f"LLM_BASE_URL={base}: not a Slurm job id after auto: ({shape})")
    elif base and base != "job":
        try:
            if not normalize_url(base).endswith("/v1"):
                problems.append(
                    f"LLM_BASE_URL={base} does not end in /v1: give the OpenAI-compatible base URL"
                )
        except ValueError:
            problems.append(f"LLM_BASE_URL={base} is not {shape}: fix it in {path}")
    if base and not model:
        problems.append(
            f"LLM_BASE_URL is set but LLM_MODEL is empty in {path}: "
            "set it to the model the endpoint lists at /v1/models"
        )
    key_file = values.get("LLM_API_KEY_FILE", "")
    if key_file:
        key = Path(key_file)
        if not key.is_file() or not os.access(key, os.R_OK):
            problems.append(f"LLM_API_KEY_FILE={key_file} is not a readable file: fix the path")
        elif key.stat().st_mode & 0o077:
            problems.append(f"LLM_API_KEY_FILE={key_file} is readable by others: chmod 600 {key_file}")
    if base == "job":  # this job starts the server: what it needs must be there
        cmd, weights = values.get("LLM_CMD", ""), values.get("LLM_MODEL_DIR", "")
        if not cmd.strip():
            problems.append(
                f"LLM_BASE_URL=job runs LLM_CMD, which is empty in {path}: set the server command"
            )
        if weights and not Path(weights).is_dir():
            problems.append(
                f"LLM_MODEL_DIR={weights} is not a directory: "
                "put the weights there (nothing is downloaded at run time)"
            )
        elif not weights and "LLM_MODEL_DIR" in cmd:
            problems.append(
                f"LLM_BASE_URL=job runs LLM_CMD, which loads $LLM_MODEL_DIR, but LLM_MODEL_DIR is empty "
                f"in {path}: set it to the weights' directory"
            )
    return problems


def agent_problems(values: dict[str, str]) -> list[str]:
    """AGENT_ID resolves under AGENTS_DIR, is not privileged, and AGENT_ENV_FILE holds every secret it
    names (checked before anything is submitted or started). Fills AGENT_SIF when it was empty."""
    from mlebench_hpc.agents.registry import env_lines
    from mlebench_hpc.agents.registry import resolve as resolve_agent
    from mlebench_hpc.errors import HelperError

    try:
        agent = resolve_agent(values["AGENT_ID"], Path(values["AGENTS_DIR"]))
        values["AGENT_SIF"] = agent_sif(values)
        env_file = values.get("AGENT_ENV_FILE")
        env_lines(agent, Path(env_file) if env_file else None, {})
    except HelperError as exc:
        return [str(exc)]
    return []


def scratch_problem(values: dict[str, str]) -> str | None:
    """SCRATCH_DIR must not be, hold or lie inside OUTPUT_BASE: agents write anything there, and what
    they write must never sit among the run directories `grade` reads (a planted run would count)."""
    scratch, output = values.get("SCRATCH_DIR", ""), values.get("OUTPUT_BASE", "")
    if not scratch or not output:
        return None
    s, o = Path(os.path.realpath(scratch)), Path(os.path.realpath(output))
    if s == o:
        where = "is OUTPUT_BASE"
    elif s.is_relative_to(o):
        where = f"is inside OUTPUT_BASE={output}"
    elif o.is_relative_to(s):
        where = f"holds OUTPUT_BASE={output}"
    else:
        return None
    return (
        f"SCRATCH_DIR={scratch} {where}: agents write anything into their scratch, and it must not lie "
        "among the run directories; set SCRATCH_DIR outside OUTPUT_BASE (or empty: RUN/.scratch)"
    )


def problems_with(
    values: dict[str, str], path: Path, need: tuple[str, ...], competitions: tuple[str, ...]
) -> list[str]:
    problems: list[str] = []
    if "AGENT_SIF" in need or "AGENT_ID" in need:
        problems += agent_problems(values)
    scratch = scratch_problem(values)
    if scratch:
        problems.append(scratch)
    for key in need:
        if key == "AGENT_ID":
            continue
        value = values.get(key, "")
        if not value:
            problems.append(f"{key} is empty in {path}: set it")
        elif not Path(value).exists():
            hint = "run `make sif`" if key.endswith("_SIF") else "create it or fix the path"
            problems.append(f"{key}={value} does not exist: {hint}")
    problems += llm_problems(values, path)
    data_dir = Path(values["DATA_DIR"])
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
    return problems


@click.command("config")
@click.option("--config", "config_path", help="Config file (default: the one in force).")
@click.option("--competition", "competitions", multiple=True, help="Competition that must be prepared.")
@click.option("--need", multiple=True, help="Key whose file or directory must exist (e.g. GRADING_SIF).")
@click.option("--shell", "as_shell", is_flag=True, help="Print every key as bash assignments (for eval).")
@click.option("--defaults-ok", is_flag=True, help="Without a config file, use the defaults (make sif).")
def config_cmd(
    config_path: str | None,
    competitions: tuple[str, ...],
    need: tuple[str, ...],
    as_shell: bool,
    defaults_ok: bool,
) -> None:
    """Validate the config (unknown keys, bad syntax, missing images, unprepared competitions: one
    line each, exit 2); with --shell, print it as assignments the bash library evaluates."""
    path = find_config_path(config_path)
    if path is None and not defaults_ok:
        click.echo(
            "config error: no config: set MLEBENCH_HPC_CONFIG or copy scripts_hpc/config.example.env "
            "to ~/.config/mlebench-hpc/config.env",
            err=True,
        )
        sys.exit(2)
    try:
        values = resolve(path)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(2)
    problems = problems_with(values, path or Path("(defaults)"), need, competitions)
    for p in problems:
        click.echo(f"config error: {p}", err=True)
    if problems:
        sys.exit(2)
    if as_shell:
        click.echo(shell_assignments(values, path), nl=False)
