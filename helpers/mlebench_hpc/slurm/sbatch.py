"""The `#SBATCH` defaults of every entry script, in one table.

sbatch reads a script's own `#SBATCH` lines, so each entry script under scripts_hpc/ must carry its
block; this table is where they are decided. `mlebench-hpc sbatch-headers --write` writes the blocks
into the scripts; without --write it fails when one differs, as tests/python/test_sbatch_headers.py
does. Only the keys in VALID_KEYS may appear, and the time limits keep their order: a job that runs
an agent leaves room for the agent's default budget and margin, a server outlives its agents.
A submission may still override a default for its own reasons: submit_sweep.sh names the array after
its group, writes its logs into the group and signals the margin of the config.

The site's options (SLURM_PARTITION, SLURM_GPU_PARTITION, SLURM_ACCOUNT, SLURM_QOS of the config)
are not defaults but rules: jobs our tools submit get them as sbatch arguments and every job checks
at its start that it runs under them (`mh_slurm_site_args`, `mh_check_slurm_site` in
scripts_hpc/lib/slurm.sh), since a job a user submits by hand never reads the config before it runs."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import click

# The sbatch options a default may set: resources, naming and signals. The site's own options
# (partition, account, QOS) are never defaults: they come from the config.
VALID_KEYS = frozenset(
    {"job-name", "output", "open-mode", "time", "cpus-per-task", "mem", "gres", "requeue", "signal"}
)

# A job that runs an agent: the default budget (24 h) and margin (5 min) plus time to set up and
# to collect the submission.
AGENT_TIME = "1-01:00:00"
# A server (grading, LLM) submitted on its own is started before its agents and must outlive them.
SERVER_TIME = "1-02:00:00"

Options = tuple[tuple[str, str | None], ...]  # (key, value); None: a flag without a value


@dataclass(frozen=True)
class EntryScript:
    name: str
    components: tuple[Options, ...]  # one per component of a heterogeneous job
    runs_agent: bool
    runs_server: bool


ENTRY_SCRIPTS: tuple[EntryScript, ...] = (
    EntryScript(
        "slurm_grading_server.sh",
        (
            (
                ("job-name", "mlebench-grade"),
                ("output", "%x-%j.out"),
                ("time", SERVER_TIME),
                ("cpus-per-task", "2"),
                ("mem", "8G"),
            ),
        ),
        runs_agent=False,
        runs_server=True,
    ),
    EntryScript(
        "slurm_agent.sh",
        (
            (
                ("job-name", "mlebench-agent"),
                ("output", "%x-%j.out"),
                ("time", AGENT_TIME),
                ("cpus-per-task", "4"),
                ("mem", "32G"),
                ("gres", "gpu:1"),
            ),
        ),
        runs_agent=True,
        runs_server=False,
    ),
    EntryScript(
        "slurm_hetjob.sh",
        (
            # component 0: the grading server, on CPUs
            (
                ("job-name", "mlebench-het"),
                ("output", "%x-%j.out"),
                ("time", AGENT_TIME),
                ("cpus-per-task", "1"),
                ("mem", "4G"),
            ),
            # component 1: the agent (and LLM_BASE_URL=job's LLM server), on a GPU
            (("time", AGENT_TIME), ("cpus-per-task", "2"), ("mem", "8G"), ("gres", "gpu:1")),
        ),
        runs_agent=True,
        runs_server=False,
    ),
    EntryScript(
        "slurm_llm_server.sh",
        (
            (
                ("job-name", "mlebench-llm"),
                ("output", "%x-%j.out"),
                ("time", SERVER_TIME),
                ("cpus-per-task", "8"),
                ("mem", "64G"),
                ("gres", "gpu:1"),
            ),
        ),
        runs_agent=False,
        runs_server=True,
    ),
    EntryScript(
        "slurm_sweep_task.sh",
        (
            (
                ("job-name", "mlebench-sweep"),
                ("output", "mlebench-sweep-%A_%a.out"),
                ("open-mode", "append"),
                ("time", AGENT_TIME),
                ("cpus-per-task", "4"),
                ("mem", "32G"),
                ("gres", "gpu:1"),
                ("requeue", None),
                # submit_sweep.sh passes the config's margin; this is for a task submitted by hand
                ("signal", "B:USR1@600"),
            ),
        ),
        runs_agent=True,
        runs_server=False,
    ),
)


def header(script: EntryScript) -> list[str]:
    """The script's `#SBATCH` block, a line each."""
    lines: list[str] = []
    for i, component in enumerate(script.components):
        if i:
            lines.append("#SBATCH hetjob")
        for key, value in component:
            if key not in VALID_KEYS:
                raise ValueError(f"{script.name}: --{key} is not an sbatch default this table may set")
            lines.append(f"#SBATCH --{key}" + ("" if value is None else f"={value}"))
    return lines


def slurm_seconds(value: str) -> int:
    """Seconds of a Slurm time limit: [days-]hours:minutes:seconds or minutes."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d+):(\d+)", value)
    if m:
        days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
        return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if value.isdigit():
        return int(value) * 60
    raise ValueError(f"not a Slurm time limit this table uses: {value!r}")


def current_header(text: str) -> list[str]:
    """The `#SBATCH` lines a script holds, in order."""
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


def rewrite(text: str, block: list[str]) -> str:
    """TEXT with its contiguous `#SBATCH` block replaced by BLOCK."""
    lines = text.splitlines(keepends=True)
    at = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    if not at or at != list(range(at[0], at[-1] + 1)):
        raise click.ClickException("the script has no single contiguous #SBATCH block to rewrite")
    return "".join(lines[: at[0]] + [line + "\n" for line in block] + lines[at[-1] + 1 :])


def scripts_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "scripts_hpc"


@click.command("sbatch-headers")
@click.option("--write", is_flag=True, help="Rewrite each entry script's #SBATCH block from the table.")
@click.option(
    "--scripts",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The scripts_hpc/ directory (default: this checkout's).",
)
def sbatch_headers_cmd(write: bool, scripts: Path | None) -> None:
    """Check (or --write) the #SBATCH defaults of every entry script against the one table."""
    where = scripts or scripts_dir()
    stale = []
    for script in ENTRY_SCRIPTS:
        path = where / script.name
        text = path.read_text()
        block = header(script)
        if current_header(text) == block:
            continue
        if write:
            path.write_text(rewrite(text, block))
            click.echo(f"rewrote the #SBATCH block of {path}")
        else:
            stale.append(script.name)
    if stale:
        click.echo(
            f"mlebench-hpc: error: #SBATCH blocks differ from helpers/mlebench_hpc/slurm/sbatch.py in "
            f"{', '.join(stale)}: run 'mlebench-hpc sbatch-headers --write'",
            err=True,
        )
        sys.exit(1)
