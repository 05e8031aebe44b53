"""Writing a graded run group: grading_report.json (atomically) and the plain-text table and
totals `mlebench-hpc grade` prints. Every cell and note goes through printable(): competition ids,
run names and errors quoting a submission's column names are the agent's words."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlebench_hpc.atomic import write_atomic
from mlebench_hpc.grading.report import CompetitionReport
from mlebench_hpc.printable import printable

REPORT_NAME = "grading_report.json"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write then rename, so a reader never sees half a report."""
    write_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def sort_key(report: CompetitionReport) -> tuple[str, int, str, str]:
    seed = report.seed
    seed_num = int(seed) if isinstance(seed, int) or (isinstance(seed, str) and seed.isdigit()) else 1 << 30
    return (str(report.competition_id), seed_num, str(seed), str(report.run_dir or ""))


def fmt_num(x: Any) -> str:
    if x is None:
        return "-"
    return f"{float(x):.5f}".rstrip("0").rstrip(".") if abs(float(x)) < 1e6 else f"{float(x):.4g}"


def fmt_share(x: Any) -> str:
    """A share of the leaderboard's teams as a percentage ("-" when there is none)."""
    return "-" if x is None else f"{100.0 * float(x):.1f}%"


def medal_word(r: CompetitionReport) -> str:
    return r.medal or ("> median" if r.above_median else "-")


def _run_label(r: CompetitionReport, root: Path | None) -> str:
    if r.run_dir:
        p = Path(r.run_dir)
        if root is not None:
            try:
                rel = p.relative_to(root)
                return str(rel) if str(rel) != "." else p.name
            except ValueError:
                pass
        return p.name
    return Path(r.submission_path).name


def format_table(reports: list[CompetitionReport], root: Path | None = None) -> str:
    """Plain-text table, one row per run, then one line per run that has an error."""
    header = [
        "competition",
        "seed",
        "run",
        "valid",
        "score",
        "medal",
        "gold",
        "silver",
        "bronze",
        "median",
        "better",
        "beats",
    ]
    rows: list[list[str]] = []
    notes: list[str] = []
    moved: dict[tuple[str, str], int] = {}  # (recorded data dir, the one used) -> runs
    for r in sorted(reports, key=sort_key):
        if r.valid_submission:
            valid = "yes"
        elif not r.submission_exists:
            valid = "missing"
        else:
            valid = "no"
        better = {True: "lower", False: "higher", None: "?"}[r.is_lower_better]
        label = printable(_run_label(r, root))
        comp = printable(r.competition_id)
        rows.append(
            [
                comp,
                "-" if r.seed is None else printable(r.seed),
                label,
                valid,
                fmt_num(r.score),
                medal_word(r),
                fmt_num(r.gold_threshold),
                fmt_num(r.silver_threshold),
                fmt_num(r.bronze_threshold),
                fmt_num(r.median_threshold),
                better,
                fmt_share(r.leaderboard_share_beaten),
            ]
        )
        if r.error:
            notes.append(f"  {comp} {label}: {printable(r.error)}")
        if r.recorded_data_dir:
            moved[(r.recorded_data_dir, r.data_dir or "")] = (
                moved.get((r.recorded_data_dir, r.data_dir or ""), 0) + 1
            )
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    numeric = {4, 6, 7, 8, 9, 11}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(header), line(["-" * w for w in widths])] + [line(row) for row in rows]
    if notes:
        out += ["", "errors:"] + notes
    for (recorded, used), n in sorted(moved.items()):
        out += [
            "",
            f"note: {n} run{'s' if n != 1 else ''} record data_dir {printable(recorded)}; graded against "
            f"{printable(used)} (--data-dir, else the config's DATA_DIR)",
        ]
    return "\n".join(out)


def format_totals(group: dict[str, Any]) -> str:
    return (
        f"runs {group['total_runs']}, with submission {group['total_runs_with_submissions']}, "
        f"valid {group['total_valid_submissions']}, medals {group['total_medals']} "
        f"(gold {group['total_gold_medals']}, silver {group['total_silver_medals']}, "
        f"bronze {group['total_bronze_medals']}), above median {group['total_above_median']}; "
        f"grader {group.get('grading_backend')} ({group.get('grading_backend_version')})"
    )
