"""`mlebench-hpc status --watch`: the sweep's counts per state, elapsed time and GPU-hours, redrawn
every INTERVAL seconds until no pair is pending or running; then the final counts. A progress bar
on a terminal, one plain line per draw otherwise (a log, a CI job)."""

from __future__ import annotations

import shutil
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import click

from mlebench_hpc.errors import HelperError
from mlebench_hpc.printable import printable
from mlebench_hpc.run.cost import fmt_duration
from mlebench_hpc.sweep.attribution import label
from mlebench_hpc.sweep.cost import cost_so_far
from mlebench_hpc.sweep.plan import PAIR_PENDING, PAIR_RUNNING, load_sweep
from mlebench_hpc.sweep.status import SweepStatus, sweep_status

BAR_WIDTH = 30
# Slurm's controller may miss a beat; this many draws in a row without it and the watch gives up.
SLURM_MISSES = 3


def _started(group_dir: Path) -> datetime | None:
    """The sweep's first submission, for its elapsed time."""
    try:
        subs = load_sweep(group_dir).get("submissions") or []
        return datetime.fromisoformat(str(subs[0]["submitted"]).replace("Z", "+00:00")) if subs else None
    except (HelperError, KeyError, ValueError, TypeError):
        return None


def active(st: SweepStatus) -> int:
    counts = Counter(p.state for p in st.pairs)
    return counts[PAIR_PENDING] + counts[PAIR_RUNNING]


def progress_bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    filled = width * done // total if total else width
    return "[" + "#" * filled + "-" * (width - filled) + f"] {done}/{total}"


def watch_sweep(group_dir: Path, interval: float, use_slurm: bool = True, tty: bool | None = None) -> int:
    """Draw until the sweep ends; 0 then, 2 when the sweep (or Slurm, repeatedly) cannot be read."""
    tty = sys.stdout.isatty() if tty is None else tty
    t0 = _started(group_dir) or datetime.now(timezone.utc)
    misses = 0
    while True:
        try:
            st = sweep_status(group_dir, use_slurm=use_slurm)
        except HelperError as exc:
            click.echo(("\n" if tty else "") + f"error: {exc}", err=True)
            return 2
        misses = misses + 1 if use_slurm and not st.slurm_answered else 0
        if misses >= SLURM_MISSES:
            click.echo(f"error: Slurm did not answer {misses} times in a row: try status later", err=True)
            return 2
        cost = cost_so_far(st)
        elapsed = fmt_duration((datetime.now(timezone.utc) - t0).total_seconds())
        left = active(st)
        line = f"{st.counts_line()}; elapsed {elapsed}, GPU-hours {cost.gpu_hours:.3f}"
        if tty:
            bar = progress_bar(len(st.pairs) - left, len(st.pairs))
            width = shutil.get_terminal_size().columns - 1  # a wrapped line would not redraw in place
            click.echo(f"\r\x1b[K{bar} {line}"[: width + 4], nl=False, color=True)  # the erase code kept
        else:
            stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
            click.echo(f"[{stamp}] {line}")
        if left == 0 and (st.slurm_answered or not use_slurm):
            break
        time.sleep(interval)
    if tty:
        click.echo("")
    click.echo("sweep ended:")
    click.echo("\n".join(st.counts_lines()))
    click.echo(cost.line())
    return 0


@click.command("status")
@click.argument("group_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--no-slurm", is_flag=True, help="Use only sweep.json and the run directories.")
@click.option("--watch", is_flag=True, help="Redraw counts, elapsed time and GPU-hours until the sweep ends.")
@click.option(
    "--interval", type=click.FloatRange(min=0.5), default=10.0, show_default=True, help="Seconds (--watch)."
)
def status_cmd(group_dir: Path, no_slurm: bool, watch: bool, interval: float) -> None:
    """One line per (competition, seed) of a sweep: pending, running on NODE, finished, failed
    with reason, requeued n times, which attempt; then the CPU- and GPU-hours so far, and one line
    of counts per state. A group of several agents: an agent column, and one line of counts
    per agent. --watch: one line per INTERVAL (a progress bar on a terminal) until no pair is
    pending or running, then the final counts."""
    if watch:
        raise SystemExit(watch_sweep(group_dir, interval, use_slurm=not no_slurm))
    st = sweep_status(group_dir, use_slurm=not no_slurm)
    several = len(st.agents) > 1
    table = [(("agent",) if several else ()) + ("competition", "seed", "job", "state")]
    # Every cell may quote the agent (its error line) or a file it could write: printable only.
    table += [
        ((printable(label(r.agent)),) if several else ())
        + (printable(r.competition), str(r.seed), printable(r.job), printable(r.text))
        for r in st.pairs
    ]
    n = len(table[0]) - 1
    widths = [max(len(r[i]) for r in table) for i in range(n)]
    lines = ["  ".join(v.ljust(widths[i]) for i, v in enumerate(row[:n])) + "  " + row[n] for row in table]
    cost = cost_so_far(st)
    if cost.recorded or cost.running:  # nothing known yet (no Slurm, old runs): no line
        lines.append(cost.line())
    lines += st.counts_lines()  # last: scripts read the counts there
    click.echo("\n".join(lines))
