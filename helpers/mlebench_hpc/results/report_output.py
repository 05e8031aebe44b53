"""Writing a graded run group: grading_report.json (atomically) and the plain-text table and
totals `mlebench-hpc grade` prints. Every cell and note goes through printable(): competition ids,
run names and errors quoting a submission's column names are the agent's words."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from mlebench_hpc.atomic import write_atomic
from mlebench_hpc.printable import printable
from mlebench_hpc.results.report import CompetitionReport, agents_in
from mlebench_hpc.run.cost import format_group_cost
from mlebench_hpc.sweep.attribution import label

REPORT_NAME = "grading_report.json"
# Each agent's own report when a group holds several: BY_AGENT/<agent>/grading_report.json, one
# run-group report per directory as upstream's aggregate_grading_reports.py expects (it refuses a
# directory with two *grading_report*.json).
BY_AGENT = "by_agent"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write then rename, so a reader never sees half a report."""
    write_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def agent_dirs(agents: list[str | None]) -> dict[str | None, str]:
    """A directory name per agent: its id with '/' and anything but letters, digits, '.', '_' and
    '-' as '_' (aide/dev: aide_dev); ids that would share a name, or that are no name, get a hash."""
    names = {a: _UNSAFE.sub("_", label(a)).strip("._") or "agent" for a in agents}
    clash = {n for n in names.values() if list(names.values()).count(n) > 1}
    return {
        a: f"{n}-{hashlib.sha256(label(a).encode()).hexdigest()[:8]}" if n in clash else n
        for a, n in names.items()
    }


def write_reports(out_dir: Path, group: dict[str, Any], own: dict[str | None, dict[str, Any]]) -> list[Path]:
    """grading_report.json, and each agent's own report when there are several (then listed in the
    group's `agent_reports`). Per-agent reports of an earlier grading that this one did not write
    are removed: they would be read as current."""
    written: list[Path] = []
    dirs = agent_dirs(list(own))
    if own:
        group["agent_reports"] = {label(a): f"{BY_AGENT}/{d}/{REPORT_NAME}" for a, d in dirs.items()}
    for agent, report in own.items():
        path = out_dir / BY_AGENT / dirs[agent] / REPORT_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, report)
        written.append(path)
    for old in sorted((out_dir / BY_AGENT).glob(f"*/{REPORT_NAME}")):
        if old not in written and stat.S_ISREG(os.lstat(old).st_mode):
            old.unlink()
    write_json_atomic(out_dir / REPORT_NAME, group)
    return [out_dir / REPORT_NAME, *written]


def sort_key(report: CompetitionReport) -> tuple[bool, str, str, int, str, str]:
    seed = report.seed
    seed_num = int(seed) if isinstance(seed, int) or (isinstance(seed, str) and seed.isdigit()) else 1 << 30
    agent = report.agent_id
    return (
        agent is None,
        agent or "",
        str(report.competition_id),
        seed_num,
        str(seed),
        str(report.run_dir or ""),
    )


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
    """Plain-text table, one row per run, then one line per run that has an error. A group of
    several agents: an agent column first."""
    several = len(agents_in(reports)) > 1
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
        run_name = printable(_run_label(r, root))
        comp = printable(r.competition_id)
        rows.append(
            ([printable(label(r.agent_id))] if several else [])
            + [
                comp,
                "-" if r.seed is None else printable(r.seed),
                run_name,
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
            notes.append(f"  {comp} {run_name}: {printable(r.error)}")
        if r.recorded_data_dir:
            moved[(r.recorded_data_dir, r.data_dir or "")] = (
                moved.get((r.recorded_data_dir, r.data_dir or ""), 0) + 1
            )
    if several:
        header = ["agent", *header]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    numeric = {i + several for i in (4, 6, 7, 8, 9, 11)}

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
    """The totals line; a group of several agents: one line per agent, never their sum."""
    if "by_agent" in group:
        agents = group["by_agent"].items()
        lines = [f"agent {printable(a)}: {_totals(t)}" for a, t in agents]
        lines += [f"agent {printable(a)} {format_group_cost(t['cost'])}" for a, t in agents if "cost" in t]
    else:
        lines = [_totals(group)]
    if isinstance(group.get("cost"), dict):
        lines.append(format_group_cost(group["cost"]))
    return "\n".join(lines)


def _totals(group: dict[str, Any]) -> str:
    return (
        f"runs {group['total_runs']}, with submission {group['total_runs_with_submissions']}, "
        f"valid {group['total_valid_submissions']}, medals {group['total_medals']} "
        f"(gold {group['total_gold_medals']}, silver {group['total_silver_medals']}, "
        f"bronze {group['total_bronze_medals']}), above median {group['total_above_median']}; "
        f"grader {group.get('grading_backend')} ({group.get('grading_backend_version')})"
    )
