"""`mlebench-hpc aggregate`: several groups' grading reports combined as upstream's
experiments/aggregate_grading_reports.py combines them (same figures; `--json` prints what it prints).

Exit status: 0; 1 when a split cannot be aggregated (upstream would refuse: the line says what to
do); 2 on a usage error (no report, an unreadable one, an unknown split)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from mlebench_hpc.errors import HelperError
from mlebench_hpc.printable import printable
from mlebench_hpc.results.aggregation import (
    ALL_SEEDS,
    AggregationError,
    aggregate,
    format_aggregates,
    resolve_split,
    runs_of_files,
    split_entry,
)


@click.command("aggregate")
@click.option(
    "--grading-reports",
    "first",
    multiple=True,
    help="Grading reports (run-group grading_report.json files), as upstream's flag: "
    "--grading-reports A.json B.json ... (or as arguments).",
)
@click.argument("more", nargs=-1, type=str)
@click.option(
    "--split",
    "splits",
    multiple=True,
    help="A split name (low, medium, high, split75 or all, dev, ...) or a file of competition ids; "
    "repeatable (default: split75, as upstream).",
)
@click.option(
    "--num-seeds",
    type=click.IntRange(min=-1),
    default=ALL_SEEDS,
    show_default=True,
    help="Seeds to average (-1: every complete one).",
)
@click.option("--pad-missing", is_flag=True, help="Count a competition's missing runs as no submission.")
@click.option("--json", "as_json", is_flag=True, help="Print upstream's JSON (asdict(AggregateMetrics)).")
@click.option(
    "--mlebench-dir",
    envvar="MLEBENCH_DIR",
    default=None,
    help="Upstream checkout whose experiments/splits/ wins over the shipped splits.",
)
def aggregate_cmd(
    first: tuple[str, ...],
    more: tuple[str, ...],
    splits: tuple[str, ...],
    num_seeds: int,
    pad_missing: bool,
    as_json: bool,
    mlebench_dir: str | None,
) -> None:
    """Combine the grading reports given (one per run group; several groups: several seeds) per
    split, with upstream's aggregation: mean, SEM and 95% interval of its percentages."""
    paths = [*first, *more]
    if not paths:
        raise click.UsageError("give the grading reports: --grading-reports A.json [B.json ...]")
    try:
        resolved = [resolve_split(s, mlebench_dir, Path.cwd()) for s in (splits or ("split75",))]
        runs = runs_of_files(paths)
    except HelperError as exc:
        click.echo(f"error: {printable(exc.message)}", err=True)
        sys.exit(2)
    for s in resolved:
        if s.note:  # all: split75
            click.echo(s.note, err=True)
    entries = {s.name: split_entry(runs, s, num_seeds, pad_missing) for s in resolved}
    failed = [n for n, e in entries.items() if "error" in e]
    if as_json:
        upstream = {}
        for s in resolved:
            with contextlib.suppress(AggregationError):  # said below, from its entry
                upstream[s.name] = aggregate(runs, s.ids, num_seeds, pad_missing).upstream
        if upstream:
            out = next(iter(upstream.values())) if len(resolved) == 1 else upstream
            click.echo(json.dumps(out, indent=2))
    else:
        click.echo(format_aggregates(entries))
    for name in failed:
        click.echo(f"error: split {printable(name)}: {printable(entries[name]['error'])}", err=True)
    if as_json:
        for name, e in entries.items():
            if e.get("seed_pairing_note"):
                click.echo(f"note: split {printable(name)}: {printable(e['seed_pairing_note'])}", err=True)
    if failed:
        sys.exit(1)
