"""`mlebench-hpc grade`: grade a run, a run group, or upstream's submissions.jsonl.

Exit status: 0 when at least one run could be graded (missing or invalid submissions are
results, not failures; runs whose competition could not be loaded are reported with their error
and a warning); 2 when nothing could be graded (no runs found, or every run hit a setup error
such as an unprepared competition) or on a usage error; 1 with --strict when any run hit a
setup error, and 1 when a split asked for with --split cannot be aggregated (upstream's script
would refuse it; the line says what to do). The report is written in every case where runs were
found, with `aggregates` per split (mlebench_hpc.results.aggregation).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click

from mlebench_hpc.competition_sets import AskedSet, asked_set
from mlebench_hpc.errors import HelperError
from mlebench_hpc.printable import printable
from mlebench_hpc.results.aggregation import add_aggregates, format_group_aggregates, resolve_split
from mlebench_hpc.results.find_runs import DirResolver, RunSpecError, specs_from_dir, specs_from_jsonl
from mlebench_hpc.results.pool import default_jobs, grade_runs
from mlebench_hpc.results.report import aggregate_agents
from mlebench_hpc.results.report_output import (
    REPORT_NAME,
    format_table,
    format_totals,
    sort_key,
    write_reports,
)
from mlebench_hpc.sweep.attempts import SWEEP_JSON, Superseded, settle_and_split


def superseded_note(n: int) -> str:
    return (
        f"{n} earlier attempt{'s' if n != 1 else ''} of sweep pairs superseded by a later attempt: "
        "listed in grading_report.json (superseded_runs), not counted"
    )


def format_superseded(superseded: list[Superseded], root: Path | None) -> str:
    """One line per superseded attempt: which, how it ended, and which run counts instead."""

    def name(p: Path) -> str:
        if root is not None and p.is_relative_to(root) and p != root:
            return str(p.relative_to(root))
        return p.name

    lines = [f"superseded (not counted): {len(superseded)}"]
    several = len({s.agent for s in superseded}) > 1
    for s in superseded:
        lines.append(
            printable(
                f"  {f'agent {s.agent} ' if several else ''}"
                f"{s.run.competition} seed {s.run.seed} attempt {s.attempt} of {s.attempts} "
                f"{name(s.run.path)}: {s.run.ended_text()}; counted: {name(s.final.path)}"
            )
        )
    return "\n".join(lines)


def _warn(msg: str) -> None:
    click.echo(f"warning: {printable(msg)}", err=True)


def _import_plotting() -> None:
    """Pay matplotlib's import (about half a second) while workers grade."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
    except Exception:  # missing or broken: write_summaries says so later
        pass


@click.command("grade")
@click.argument("run_dir", required=False, type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Prepared data (default: config DATA_DIR, else ~/.cache/mle-bench/data; a run's recorded "
    "data_dir is never used).",
)
@click.option(
    "--mlebench-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Upstream MLE-bench checkout for leaderboards (default: $MLEBENCH_DIR, else config).",
)
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Worker processes (default: min(cpus, runs)).")
@click.option(
    "--submissions",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Upstream submissions JSONL (competition_id, submission_path per line).",
)
@click.option(
    "--output-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the report goes with --submissions (default: the JSONL file's directory).",
)
@click.option(
    "--summary/--no-summary",
    default=True,
    show_default=True,
    help="Also write summary.csv, summary.md, summary.png and report.html.",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
@click.option("--strict", is_flag=True, help="Exit 1 when any run could not be graded (setup error).")
@click.option(
    "--split",
    "splits",
    multiple=True,
    help="Also aggregate over this split: a name (low, medium, high, split75 or all, dev, ...) or a file "
    "of competition ids; repeatable; an error exits 1 (the report is written). Without it: every "
    "upstream split the group has runs of all competitions of, and the sweep's own set.",
)
@click.option(
    "--num-seeds",
    type=click.IntRange(min=-1),
    default=-1,
    show_default=True,
    help="Seeds averaged per split, as upstream's script (-1: every complete seed).",
)
@click.option(
    "--pad-missing",
    is_flag=True,
    help="Per split, count a competition's missing runs as no submission (upstream's --pad-missing).",
)
@click.option(
    "--memory-mb",
    type=click.FloatRange(min=64),
    help="Memory each grading worker may use beyond its start (default: the available memory shared "
    "by the workers, 1-16 GiB); a run that needs more fails alone.",
)
def grade_cmd(
    run_dir: Path | None,
    data_dir: Path | None,
    mlebench_dir: Path | None,
    jobs: int | None,
    submissions: Path | None,
    output_dir: Path | None,
    summary: bool,
    progress: bool,
    strict: bool,
    memory_mb: float | None,
    splits: tuple[str, ...],
    num_seeds: int,
    pad_missing: bool,
) -> None:
    """Grade RUN_DIR (a run directory, or any directory holding run directories at any depth)
    and write RUN_DIR/grading_report.json with upstream MLE-bench's keys, plus summaries.

    Exit status: 0 when at least one run was graded (missing and invalid submissions are
    results); 2 when nothing could be graded (e.g. competition not prepared) or no run was
    found; 1 with --strict when any run could not be graded, or when a --split cannot be
    aggregated as upstream would (e.g. a competition without runs: use --pad-missing)."""
    from mlebench_hpc.config import ConfigError

    if (run_dir is None) == (submissions is None):
        raise click.UsageError("give either RUN_DIR or --submissions FILE (with --output-dir)")
    dirs = DirResolver(data_dir=data_dir, mlebench_dir=mlebench_dir)
    try:
        if submissions is not None:
            submissions = submissions.absolute()
            out_dir = output_dir or submissions.parent
            specs = specs_from_jsonl(submissions, dirs)
            root = None
            source = str(submissions)
        else:
            assert run_dir is not None
            if not run_dir.is_dir():
                raise click.ClickException(f"{run_dir} is not a directory: give a run or run-group directory")
            run_dir = run_dir.absolute()  # reports name absolute paths, usable wherever they are read
            out_dir = output_dir or run_dir
            root = run_dir
            specs = specs_from_dir(run_dir, dirs, _warn)
            source = str(run_dir)
    except (RunSpecError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    try:  # before grading: a wrong --split costs nothing
        upstream_dir = dirs.mlebench_dir()
    except ConfigError:
        upstream_dir = None
    mlebench = str(upstream_dir) if upstream_dir is not None else None
    try:
        explicit = [resolve_split(s, mlebench, Path.cwd()) for s in splits]
    except HelperError as exc:
        raise click.UsageError(exc.message) from None
    for s in explicit:
        if s.note:  # all: split75
            click.echo(s.note, err=True)
    superseded: list[Superseded] = []
    sets: dict[str | None, AskedSet | None] = {}
    if run_dir is not None and specs:
        # One run per (agent, competition, seed) of a sweep: earlier attempts are listed, never
        # counted; each run is its agent's, runs that name none included (attribution.py).
        counted = settle_and_split([s.run_dir for s in specs if s.run_dir is not None], "grade")
        superseded = counted.superseded
        specs = [
            replace(s, agent_id=counted.agents.get(s.run_dir, s.agent_id)) if s.run_dir is not None else s
            for s in specs
            if s.run_dir is None or s.run_dir in counted.dirs
        ]
        if (run_dir / SWEEP_JSON).is_file():
            # a whole sweep group: each agent's competition set is known, and the summary names it
            sets = {agent: asked_set(asked) for agent, asked in counted.asked.items()}
    if not specs:
        click.echo(
            f"error: no runs found in {source} (a run directory holds metadata.json with "
            "competition_id and submission/submission.csv)",
            err=True,
        )
        sys.exit(2)

    from mlebench_hpc.grading import backend_info

    n_jobs = jobs or default_jobs(len(specs))
    meanwhile = _import_plotting if summary else None
    results = grade_runs(specs, jobs=n_jobs, progress=progress, meanwhile=meanwhile, memory_mb=memory_mb)
    from mlebench_hpc.results.costs import with_costs

    reports = with_costs([r.report for r in results])
    if run_dir is not None:
        # Run dirs in the file by (agent, competition, seed): upstream's aggregate_grading_reports.py
        # pairs each competition's runs into seeds in file order, so its seeds are our recorded ones
        # wherever every competition has them (a lost pair still shifts: aggregation.pairing_note).
        # A submissions file keeps its own order, as upstream's grader does.
        reports.sort(key=sort_key)
    group, own = aggregate_agents(reports, backend_info(), [s.as_dict() for s in superseded])
    split_errors = add_aggregates(group, own, sets, explicit, mlebench, num_seeds, pad_missing)
    report_path = out_dir / REPORT_NAME
    try:
        written = write_reports(out_dir, group, own)
    except OSError as exc:
        click.echo(format_table(reports, root))  # the results are not lost with the file
        raise click.ClickException(
            f"cannot write {report_path} ({exc.strerror}): give a writable --output-dir"
        ) from None

    click.echo(format_table(reports, root))
    click.echo("")
    click.echo(format_totals(group))
    click.echo("")
    click.echo(format_group_aggregates(group))
    if superseded:
        click.echo("")
        click.echo(format_superseded(superseded, root))
    if summary:
        from mlebench_hpc.results.leaderboard import text_table
        from mlebench_hpc.results.summary import write_summaries

        notes = [superseded_note(len(superseded))] if superseded else []
        try:
            written += write_summaries(
                reports,
                out_dir,
                title=(root or out_dir).resolve().name,
                warn=_warn,
                notes=notes,
                sets=sets,
                show=lambda rows: click.echo("\n" + text_table(rows)) if rows else None,
            )
        except Exception as exc:  # the report is already written; a plotting problem must not hide it
            _warn(f"summaries not written ({type(exc).__name__}: {exc})")
    for path in written:
        click.echo(f"wrote {path}")

    failed = [r for r in results if not r.graded]
    if failed:
        _warn(f"{len(failed)} of {len(results)} runs could not be graded (see errors above)")
    if len(failed) == len(results):
        sys.exit(2)
    if strict and failed:
        sys.exit(1)
    for line in split_errors:
        click.echo(f"error: {printable(line)}", err=True)
    if split_errors:
        sys.exit(1)
