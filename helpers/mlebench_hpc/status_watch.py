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

from mlebench_hpc.cost import fmt_duration
from mlebench_hpc.errors import HelperError
from mlebench_hpc.sweep import PAIR_PENDING, PAIR_RUNNING, SweepStatus, load_sweep, sweep_status
from mlebench_hpc.sweep_cost import cost_so_far

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
