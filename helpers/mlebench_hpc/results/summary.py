"""Summaries of a graded run group: summary.csv, summary.md and summary.png.

Overall rates follow upstream's experiments/aggregate_grading_reports.py: runs are grouped by
seed, each seed's rate is the percentage of the group's competitions with a medal (a competition
without a run in that seed counts as a failure, as upstream's --pad-missing), and the reported
figure is the mean over seeds +- the standard error of the mean (sd with ddof=1 / sqrt(n_seeds)).
With a single seed the standard error is not available (upstream prints 0.0; we print n/a).
Runs without a seed in their metadata are numbered per competition in run-directory order, which
is how upstream pairs reports into seeds. Upstream publishes one row per split: when the sweep's
competition set is known (sweep.json), the summary names it and its competitions without any run
count as failures in every seed too (upstream's --split with --pad-missing).

Several agents in one group (mlebench_hpc.sweep.attribution) are summarized apart, each over its own runs
and its own set: summary.csv has an agent_id column (one OVERALL row per agent), summary.md a table
comparing them and a section per agent, summary.png a row per agent and seed.

The leaderboard row (leaderboard.py: upstream's leaderboard columns, from the group report's
`aggregates` and `cost` and the runs' metadata) is a LEADERBOARD row per agent in summary.csv (its
`row_type`; the other rows are COMPETITION and OVERALL) and a table in summary.md; report.html
(report_html.py) shows it all on one page.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from mlebench_hpc.competition_sets import AskedSet
from mlebench_hpc.printable import markdown_cell, printable
from mlebench_hpc.results.leaderboard import LeaderboardRow, leaderboard_rows, markdown_table
from mlebench_hpc.results.report import CompetitionReport, agents_in, aggregate_agents
from mlebench_hpc.results.report_output import fmt_num, fmt_share, sort_key
from mlebench_hpc.run.cost import format_group_cost
from mlebench_hpc.sweep.attribution import label as agent_label

# (label, report field) of the overall lines, in the order printed.
OVERALL_METRICS: tuple[tuple[str, str], ...] = (
    ("Any medal", "any_medal"),
    ("Gold medal", "gold_medal"),
    ("Above median", "above_median"),
    ("Valid submission", "valid_submission"),
    ("Submission made", "submission_exists"),
)
THRESHOLD_NAMES: tuple[str, ...] = ("gold", "silver", "bronze", "median")


@dataclass(frozen=True)
class MeanSE:
    mean: float
    se: float | None  # None with fewer than two values
    n: int

    def text(self, digits: int = 2, unit: str = "") -> str:
        se = "n/a" if self.se is None else f"{self.se:.{digits}f}{unit}"
        return f"{self.mean:.{digits}f}{unit} ± {se}"


def mean_se(values: Iterable[float]) -> MeanSE | None:
    vals = [float(v) for v in values]
    if not vals:
        return None
    n = len(vals)
    mean = sum(vals) / n
    if n < 2:
        return MeanSE(mean, None, n)
    var = sum((v - mean) ** 2 for v in vals) / (n - 1)
    return MeanSE(mean, math.sqrt(var) / math.sqrt(n), n)


@dataclass
class Summary:
    per_competition: pd.DataFrame
    overall: dict[str, MeanSE]
    competitions: list[str]
    seeds: list[str]
    per_seed: pd.DataFrame  # one row per seed: its rate (%) for each overall metric
    notes: list[str] = field(default_factory=list)
    # Beyond upstream: per seed, the mean over the competitions that have a leaderboard of the share
    # of its teams the run beats (a run without a valid score beats none); mean +- s.e. over seeds
    share_beaten: MeanSE | None = None
    agent_id: str | None = None  # the agent whose runs these are (None: unknown)
    competition_set: AskedSet | None = None  # what its sweeps asked for, when known


def seed_keys(reports: list[CompetitionReport]) -> list[str]:
    """The seed each report belongs to: its metadata seed, else run<k> in run-directory order."""
    keys: list[str] = [""] * len(reports)
    seedless: dict[str, int] = {}
    for i in sorted(range(len(reports)), key=lambda i: str(reports[i].run_dir or reports[i].submission_path)):
        r = reports[i]
        if r.seed is not None and str(r.seed) != "":
            keys[i] = str(r.seed)
        else:
            k = seedless.get(r.competition_id, 0)
            seedless[r.competition_id] = k + 1
            keys[i] = f"run{k}"
    return keys


def _natural(s: str) -> tuple[int, int | str]:
    return (0, int(s)) if s.lstrip("-").isdigit() else (1, s)


def _no_run_row(comp: str) -> dict[str, Any]:
    """A competition of the set without any run: nothing made, nothing known of its thresholds."""
    row: dict[str, Any] = {"competition_id": comp}
    for col in ("runs", "submissions", "valid", "gold", "silver", "bronze", "any_medal", "above_median"):
        row[col] = 0
    row["scores_n"] = 0
    for col in ("score_mean", "score_se", "share_beaten_mean", "share_beaten_se"):
        row[col] = None
    for name in THRESHOLD_NAMES:
        row[f"{name}_threshold"] = None
    row.update(is_lower_better=None, thresholds_source=None)
    return row


def summarize(
    reports: list[CompetitionReport],
    competition_set: AskedSet | None = None,
    agent_id: str | None = None,
) -> Summary:
    """The summary of REPORTS (one agent's). With COMPETITION_SET, its competitions without a run
    are rows of their own and count as failures in every seed."""
    keys = seed_keys(reports)
    reported = {str(r.competition_id) for r in reports}
    asked = set(competition_set.ids) if competition_set else set()
    competitions = sorted(reported | asked)
    seeds = sorted(set(keys), key=_natural)
    notes: list[str] = []
    never = sorted(asked - reported)
    if never and competition_set is not None:
        shown = ", ".join(never[:10]) + (f" and {len(never) - 10} more" if len(never) > 10 else "")
        notes.append(
            f"{len(never)} competition{'s' if len(never) != 1 else ''} of {competition_set.describe()} "
            f"{'have' if len(never) != 1 else 'has'} no run; they count as failures in every seed: {shown}"
        )

    rows = []
    for comp in competitions:
        rs = [r for r in reports if r.competition_id == comp]
        if not rs:
            rows.append(_no_run_row(comp))
            continue
        scores = [float(r.score) for r in rs if r.valid_submission and r.score is not None]
        ms = mean_se(scores)
        shares = [float(r.leaderboard_share_beaten) for r in rs if r.leaderboard_share_beaten is not None]
        share = mean_se(shares)
        with_th = next((r for r in rs if r.gold_threshold is not None), rs[0])
        lower = next((r.is_lower_better for r in rs if r.is_lower_better is not None), None)
        rows.append(
            {
                "competition_id": comp,
                "runs": len(rs),
                "submissions": sum(bool(r.submission_exists) for r in rs),
                "valid": sum(bool(r.valid_submission) for r in rs),
                "gold": sum(bool(r.gold_medal) for r in rs),
                "silver": sum(bool(r.silver_medal) for r in rs),
                "bronze": sum(bool(r.bronze_medal) for r in rs),
                "any_medal": sum(bool(r.any_medal) for r in rs),
                "above_median": sum(bool(r.above_median) for r in rs),
                "score_mean": ms.mean if ms else None,
                "score_se": ms.se if ms else None,
                "scores_n": len(scores),
                "share_beaten_mean": share.mean if share else None,
                "share_beaten_se": share.se if share else None,
                "gold_threshold": with_th.gold_threshold,
                "silver_threshold": with_th.silver_threshold,
                "bronze_threshold": with_th.bronze_threshold,
                "median_threshold": with_th.median_threshold,
                "is_lower_better": lower,
                "thresholds_source": with_th.thresholds_source,
            }
        )
    per_comp = pd.DataFrame(rows)

    # One report per (competition, seed); duplicates (e.g. a rerun kept next to the original) would
    # turn the rate into best-of-k, so only the first in run order counts.
    cell: dict[tuple[str, str], CompetitionReport] = {}
    for i in sorted(range(len(reports)), key=lambda i: sort_key(reports[i])):
        k = (str(reports[i].competition_id), keys[i])
        if k in cell:
            notes.append(f"{k[0]} seed {k[1]}: more than one run; only the first counts in the overall rates")
            continue
        cell[k] = reports[i]
    seed_rows = []
    for s in seeds:
        row: dict[str, Any] = {"seed": s, "competitions_run": sum((c, s) in cell for c in competitions)}
        for _, fld in OVERALL_METRICS:
            hits = sum(bool(getattr(cell[(c, s)], fld)) for c in competitions if (c, s) in cell)
            row[fld] = 100.0 * hits / len(competitions) if competitions else 0.0
        seed_rows.append(row)
    per_seed = pd.DataFrame(seed_rows)
    overall = {}
    for _, fld in OVERALL_METRICS:
        ms = mean_se(per_seed[fld]) if len(per_seed) else None
        if ms is not None:
            overall[fld] = ms
    missing = sum(len(competitions) - row["competitions_run"] for row in seed_rows)
    if missing:
        notes.append(f"{missing} (competition, seed) pairs have no run; they count as failures")
    ranked = [c for c in competitions if any(r.leaderboard_teams for r in reports if r.competition_id == c)]
    per_seed_share = []
    for s in seeds:
        if ranked:
            beaten = [
                float(cell[(c, s)].leaderboard_share_beaten or 0.0) if (c, s) in cell else 0.0 for c in ranked
            ]
            per_seed_share.append(100.0 * sum(beaten) / len(ranked))
    share_beaten = mean_se(per_seed_share)
    return Summary(
        per_comp, overall, competitions, seeds, per_seed, notes, share_beaten, agent_id, competition_set
    )


def summarize_agents(
    reports: list[CompetitionReport], sets: dict[str | None, AskedSet | None] | None = None
) -> list[Summary]:
    """One summary per agent (one for a group of one agent), each over its own runs and set."""
    sets = sets or {}
    return [
        summarize([r for r in reports if r.agent_id == a], sets.get(a), a) for a in agents_in(reports)
    ] or [summarize([])]


# ---------------------------------------------------------------- files


def _csv_rows(summary: Summary) -> pd.DataFrame:
    df = summary.per_competition.copy()
    total: dict[str, Any] = {"competition_id": "OVERALL"}
    for col in (
        "runs",
        "submissions",
        "valid",
        "gold",
        "silver",
        "bronze",
        "any_medal",
        "above_median",
        "scores_n",
    ):
        total[col] = int(df[col].sum()) if len(df) else 0
    total["n_seeds"] = len(summary.seeds)
    total["n_competitions"] = len(summary.competitions)
    for _, fld in OVERALL_METRICS:
        ms = summary.overall.get(fld)
        total[f"{fld}_pct_mean"] = ms.mean if ms else None
        total[f"{fld}_pct_se"] = ms.se if ms else None
    sb = summary.share_beaten
    total["share_beaten_pct_mean"] = sb.mean if sb else None
    total["share_beaten_pct_se"] = sb.se if sb else None
    cs = summary.competition_set
    total["competition_set"] = " + ".join(cs.names) if cs else None
    out = pd.concat([df, pd.DataFrame([total])], ignore_index=True)
    out.insert(0, "agent_id", summary.agent_id)
    return out


def _leaderboard_csv_rows(rows: list[LeaderboardRow]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"agent_id": r.agent, "competition_id": "LEADERBOARD", **r.csv_columns()} for r in rows]
    )


def to_csv(
    summaries: Summary | list[Summary], path: Path, leaderboard: list[LeaderboardRow] | None = None
) -> None:
    """One row per (agent, competition), then an OVERALL row per agent: counts summed, rates as
    mean and s.e. (%) over that agent's seeds, and its competition set when known; then a
    LEADERBOARD row per agent (its lb_* columns). Column row_type tells the three apart."""
    parts = [summaries] if isinstance(summaries, Summary) else summaries
    frames = [_csv_rows(s) for s in parts]
    out = pd.concat(frames, ignore_index=True)
    out["row_type"] = ["OVERALL" if c == "OVERALL" else "COMPETITION" for c in out["competition_id"]]
    if leaderboard:
        lb = _leaderboard_csv_rows(leaderboard)
        lb["row_type"] = "LEADERBOARD"
        # the rows below leave the count columns empty: nullable ints keep "6" from turning into "6.0"
        ints = [c for c in out.columns if pd.api.types.is_integer_dtype(out[c])]
        out = pd.concat([out.astype({c: "Int64" for c in ints}), lb], ignore_index=True)
    lb_cols = [c for c in out.columns if c.startswith("lb_")]
    # The text columns come from run metadata: no control character reaches a viewer of the file.
    for col in ("agent_id", "competition_id", "thresholds_source", "competition_set", *lb_cols):
        if col in out:
            out[col] = [
                v if v is None or (isinstance(v, float) and math.isnan(v)) else printable(v) for v in out[col]
            ]
    tmp = path.with_name(f".{path.name}.tmp")
    out.to_csv(tmp, index=False)
    tmp.replace(path)


def _share_cell(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt_share(x)


def _md_cell(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x)


def _n_runs(summary: Summary) -> int:
    return int(summary.per_competition["runs"].sum()) if len(summary.per_competition) else 0


def _intro(summary: Summary, backend: str | None) -> list[str]:
    lines = [
        f"{_n_runs(summary)} runs, {len(summary.competitions)} competitions, {len(summary.seeds)} seeds"
        + (f"; graded by {backend}" if backend else "")
        + "."
    ]
    if summary.agent_id:
        lines.append(f"Agent: {markdown_cell(summary.agent_id)}.")
    if summary.competition_set is not None:
        lines.append(f"Competition set: {markdown_cell(summary.competition_set.describe())}.")
    return lines


def _sections(summary: Summary, h: str) -> list[str]:
    """Overall, per competition, per seed and notes, under headings of level H ("##", "###")."""
    lines = ["", f"{h} Overall (mean ± s.e. over seeds)", ""]
    lines.append(
        f"Per seed: percentage of the {len(summary.competitions)} competitions; a competition "
        "with no run in a seed counts as a failure; s.e. = sd(ddof=1)/sqrt(seeds)."
    )
    lines.append("")
    for label, fld in OVERALL_METRICS:
        ms = summary.overall.get(fld)
        if ms is not None:
            lines.append(f"- **{label}: {ms.text(2, '%')}** ({ms.n} seeds)")
    if summary.share_beaten is not None:
        lines.append(
            f"- Leaderboard teams beaten (beyond upstream): {summary.share_beaten.text(2, '%')} "
            f"({summary.share_beaten.n} seeds; the mean over competitions with a leaderboard of the share "
            "of its teams each run beats, 0 without a valid score)"
        )
    lines += ["", f"{h} Per competition", ""]
    header = [
        "competition",
        "runs",
        "valid",
        "gold",
        "silver",
        "bronze",
        "any medal",
        "above median",
        "score (mean ± s.e.)",
        "beats (mean)",
        "gold thr.",
        "silver thr.",
        "bronze thr.",
        "median",
        "better",
        "thresholds from",
    ]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|")
    for row in summary.per_competition.to_dict("records"):
        if _md_cell(row["score_mean"]) == "-":
            score = "-"
        else:
            se = row["score_se"]
            se_txt = "n/a" if se is None or (isinstance(se, float) and math.isnan(se)) else fmt_num(se)
            score = f"{fmt_num(row['score_mean'])} ± {se_txt} (n={row['scores_n']})"
        better = {True: "lower", False: "higher"}.get(row["is_lower_better"], "?")
        cells = [
            row["competition_id"],
            row["runs"],
            row["valid"],
            row["gold"],
            row["silver"],
            row["bronze"],
            row["any_medal"],
            row["above_median"],
            score,
            _share_cell(row["share_beaten_mean"]),
            fmt_num(row["gold_threshold"]),
            fmt_num(row["silver_threshold"]),
            fmt_num(row["bronze_threshold"]),
            fmt_num(row["median_threshold"]),
            better,
            _md_cell(row["thresholds_source"]),
        ]
        lines.append("| " + " | ".join(markdown_cell(c) for c in cells) + " |")
    lines += ["", f"{h} Per seed (%)", ""]
    seed_header = ["seed", "competitions run"] + [label.lower() for label, _ in OVERALL_METRICS]
    lines.append("| " + " | ".join(seed_header) + " |")
    lines.append("|" + "|".join("---:" if i else "---" for i in range(len(seed_header))) + "|")
    for row in summary.per_seed.to_dict("records"):
        cells = [row["seed"], row["competitions_run"]] + [f"{row[f]:.2f}" for _, f in OVERALL_METRICS]
        lines.append("| " + " | ".join(markdown_cell(c) for c in cells) + " |")
    if summary.notes:
        lines += ["", f"{h} Notes", ""] + [f"- {markdown_cell(n)}" for n in summary.notes]
    return lines


def _compared(summaries: list[Summary]) -> list[str]:
    """One row per agent: its overall rates, side by side (never added up)."""
    header = ["agent", "competition set", "runs", "seeds"] + [label.lower() for label, _ in OVERALL_METRICS]
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|")
    for sm in summaries:
        cs = sm.competition_set
        cells = [agent_label(sm.agent_id), " + ".join(cs.names) if cs else "-", _n_runs(sm), len(sm.seeds)]
        cells += [sm.overall[f].text(2, "%") if f in sm.overall else "-" for _, f in OVERALL_METRICS]
        lines.append("| " + " | ".join(markdown_cell(c) for c in cells) + " |")
    return lines


def _leaderboard_md(rows: list[LeaderboardRow] | None) -> list[str]:
    if not rows:
        return []
    return [
        "",
        "## Leaderboard row",
        "",
        "Upstream's leaderboard columns: Any Medal % as mean ± SEM over seeds per split (All = split75; "
        "n/a: the group does not cover it), the agent's time limit, its hardware per run as Slurm "
        "allocated it, the group's GPU-hours.",
        "",
        *markdown_table(rows, markdown_cell),
        "",
        *(
            f"Cost of {markdown_cell(r.agent)}: {markdown_cell(format_group_cost(r.cost))}."
            for r in rows
            if r.cost.get("runs_with_cost")
        ),
    ]


def to_markdown(
    summaries: Summary | list[Summary],
    title: str,
    backend: str | None,
    notes: list[str] | None = None,
    leaderboard: list[LeaderboardRow] | None = None,
) -> str:
    """One agent: its summary alone. Several: a table comparing them,
    then a section per agent. NOTES concern the whole group (e.g. superseded attempts). The
    LEADERBOARD rows come first after the introduction."""
    parts = [summaries] if isinstance(summaries, Summary) else summaries
    lines = [f"# Grading summary: {markdown_cell(title)}", ""]
    if len(parts) == 1:
        one = replace(parts[0], notes=[*parts[0].notes, *(notes or [])])
        lines += _intro(one, backend) + _leaderboard_md(leaderboard) + _sections(one, "##")
        return "\n".join(lines) + "\n"
    n_runs = sum(_n_runs(sm) for sm in parts)
    lines.append(
        f"{n_runs} runs of {len(parts)} agents" + (f"; graded by {backend}" if backend else "") + ". "
        "Each agent's numbers are over its own runs only: agents are never added up."
    )
    lines += _leaderboard_md(leaderboard)
    lines += ["", "## Agents compared (mean ± s.e. over seeds)", ""] + _compared(parts)
    for sm in parts:
        lines += ["", f"## Agent {markdown_cell(agent_label(sm.agent_id))}", ""]
        lines += _intro(sm, None) + _sections(sm, "###")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {markdown_cell(n)}" for n in notes]
    return "\n".join(lines) + "\n"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def run_metadata(reports: list[CompetitionReport]) -> dict[str, dict[str, Any]]:
    """Each run's metadata.json (agent-written text in it is escaped wherever it is shown), by run_dir."""
    return {str(r.run_dir): _read_json(Path(r.run_dir) / "metadata.json") for r in reports if r.run_dir}


def write_summaries(
    reports: list[CompetitionReport],
    out_dir: Path,
    title: str,
    warn: Callable[[str], None],
    notes: list[str] | None = None,
    sets: dict[str | None, AskedSet | None] | None = None,
    group: dict[str, Any] | None = None,
    show: Callable[[list[LeaderboardRow]], None] | None = None,
) -> list[Path]:
    """summary.csv, summary.md, (with matplotlib) summary.png and report.html in out_dir; returns
    the paths. NOTES go to summary.md's notes (e.g. superseded attempts, which REPORTS no longer
    hold); SETS are the competition sets each agent's sweeps asked for, when known. GROUP is the
    group report as grading_report.json holds it (its aggregates and cost feed the leaderboard
    row); by default out_dir's grading_report.json (grade writes it first), else REPORTS' own.
    SHOW gets the leaderboard rows (make grade prints them)."""
    from mlebench_hpc.results.report_html import write_report_html
    from mlebench_hpc.results.report_output import REPORT_NAME

    summaries = summarize_agents(reports, sets)
    if group is None:
        group = _read_json(out_dir / REPORT_NAME) or aggregate_agents(reports)[0]
    metadata = run_metadata(reports)
    own = {agent_label(sm.agent_id): sm.competition_set.names for sm in summaries if sm.competition_set}
    leaderboard = leaderboard_rows(group, metadata, own)
    if show is not None:
        show(leaderboard)
    backend = next(
        (f"{r.grading_backend} ({r.grading_backend_version})" for r in reports if r.grading_backend),
        None,
    )
    written = []
    csv_path = out_dir / "summary.csv"
    to_csv(summaries, csv_path, leaderboard)
    written.append(csv_path)
    md_path = out_dir / "summary.md"
    tmp = md_path.with_name(".summary.md.tmp")
    tmp.write_text(to_markdown(summaries, title, backend, notes, leaderboard))
    tmp.replace(md_path)
    written.append(md_path)
    png_path: Path | None = out_dir / "summary.png"
    try:
        import matplotlib  # noqa: F401 - optional (report extra)
    except ImportError:
        warn("matplotlib is not installed (pip install 'mlebench-hpc[report]'): summary.png skipped")
        png_path = None
    if png_path is not None:
        plot_summary(reports, png_path, title=title)
        written.append(png_path)
    written.append(write_report_html(out_dir, title, group, metadata, leaderboard, png_path))
    return written


# ---------------------------------------------------------------- plot

MEDAL_COLOURS = {"gold": "#d4a017", "silver": "#8c8c8c", "bronze": "#b0702f", "median": "#3b6ea8"}
POINT_COLOURS = {
    "gold": "#d4a017",
    "silver": "#8c8c8c",
    "bronze": "#b0702f",
    "above median": "#3b6ea8",
    "below median": "#333333",
    "no medal": "#333333",
}


def _point_class(r: CompetitionReport) -> str:
    if r.medal:
        return r.medal
    if r.median_threshold is None:
        return "no medal"
    return "above median" if r.above_median else "below median"


RowKey = tuple[int, str, str]  # (agent's position, agent, seed key)


def _row_keys(reports: list[CompetitionReport]) -> list[RowKey]:
    """Each report's row in its panel: its agent's, then its seed's (seeds numbered per agent)."""
    keys: list[RowKey] = [(0, "", "")] * len(reports)
    for i, agent in enumerate(agents_in(reports)):
        idx = [k for k, r in enumerate(reports) if r.agent_id == agent]
        for k, seed in zip(idx, seed_keys([reports[k] for k in idx]), strict=True):
            keys[k] = (i, agent_label(agent), seed)
    return keys


def _row_order(key: RowKey) -> tuple[int, tuple[int, int | str]]:
    return (key[0], _natural(key[2]))


def plot_summary(reports: list[CompetitionReport], path: Path, title: str) -> None:
    """One panel per competition: each seed's score as a point on a row of its own, against
    vertical lines at the medal thresholds, labelled on the axis itself. Better is always to the
    right (the axis is reversed for lower-is-better metrics, and the panel title says so). Several
    agents: a row per agent and seed, the agents' rows apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    keys = _row_keys(reports)
    several = len(agents_in(reports)) > 1
    competitions = sorted({str(r.competition_id) for r in reports})
    per_comp: dict[str, list[tuple[RowKey, CompetitionReport]]] = {c: [] for c in competitions}
    for key, r in zip(keys, reports, strict=True):
        per_comp[str(r.competition_id)].append((key, r))
    n_rows = {c: len({k for k, _ in per_comp[c]}) for c in competitions}
    compact = max(n_rows.values()) > 12  # many seeds: thinner rows, no per-point labels
    row_h = 0.2 if compact else 0.42
    heights = [1.3 + row_h * n_rows[c] for c in competitions]
    fig, axes = plt.subplots(
        len(competitions),
        1,
        figsize=(10, sum(heights) + 0.5),
        layout="constrained",
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    rows_are = "agent and seed" if several else "seed"
    fig.suptitle(f"{title}: score per {rows_are} against medal thresholds", fontsize=13, x=0.01, ha="left")

    for ax, comp in zip(axes[:, 0], competitions, strict=True):
        runs = sorted(per_comp[comp], key=lambda kr: _row_order(kr[0]))
        seeds = sorted({k for k, _ in runs}, key=_row_order)
        ypos = {s: i for i, s in enumerate(seeds)}
        ref = next((r for _, r in runs if r.gold_threshold is not None), runs[0][1])
        lower = next((r.is_lower_better for _, r in runs if r.is_lower_better is not None), None)
        th = {
            n: getattr(ref, f"{n}_threshold")
            for n in THRESHOLD_NAMES
            if getattr(ref, f"{n}_threshold") is not None
        }
        scores = [float(r.score) for _, r in runs if r.valid_submission and r.score is not None]

        # x range: thresholds and scores, with far outliers clipped to the edge (value still printed)
        anchor = list(th.values()) or scores or [0.0, 1.0]
        a_lo, a_hi = min(anchor), max(anchor)
        span = (a_hi - a_lo) or (abs(a_hi) * 0.1 or 1.0)
        lim_lo, lim_hi = a_lo - 6.0 * span, a_hi + 6.0 * span
        shown = [min(max(s, lim_lo), lim_hi) for s in scores]
        lo, hi = min([a_lo, *shown]), max([a_hi, *shown])
        pad = (hi - lo) * 0.12 or span * 0.5
        lo, hi = lo - pad, hi + pad
        ax.set_xlim((hi, lo) if lower else (lo, hi))
        ax.set_ylim(-0.8, len(seeds) - 0.2)
        better_edge = lo if lower else hi

        # medal zones, shaded from each threshold towards the better side
        zone_from = [("gold", better_edge), ("silver", th.get("gold")), ("bronze", th.get("silver"))]
        for name, edge in zone_from:
            if name in th and edge is not None:
                ax.axvspan(
                    min(th[name], edge), max(th[name], edge), color=MEDAL_COLOURS[name], alpha=0.13, lw=0
                )
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        width = hi - lo
        # each label's (centre, half width) in axes fractions; 0.0072 ~ one 8.5pt character
        placed: list[tuple[float, float, int]] = []
        for name in ("median", "bronze", "silver", "gold"):
            if name not in th:
                continue
            x = th[name]
            label = f"{name} {fmt_num(x)}"
            ax.axvline(x, color=MEDAL_COLOURS[name], lw=1.6, ls="--" if name == "median" else "-")
            centre, half = (x - lo) / width, len(label) * 0.0072 / 2 + 0.008
            # stagger labels that would overlap a label already placed on the same level
            level = 0
            while any(lv == level and abs(centre - c) < half + h for c, h, lv in placed):
                level += 1
            placed.append((centre, half, level))
            ax.annotate(
                label,
                xy=(x, 1.0),
                xycoords=trans,
                xytext=(0, 3 + 12 * level),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8.5,
                color=MEDAL_COLOURS[name],
                fontweight="bold",
                annotation_clip=False,
            )
        levels = max((lv for _, _, lv in placed), default=-1)

        for key, r in runs:
            y = ypos[key]
            if r.valid_submission and r.score is not None:
                s = float(r.score)
                x = min(max(s, lim_lo), lim_hi)
                cls = _point_class(r)
                marker = "o" if x == s else (">" if (x > s) == bool(lower) else "<")
                ax.plot(
                    [x],
                    [y],
                    marker=marker,
                    ms=6 if compact else 10,
                    color=POINT_COLOURS[cls],
                    mec="black",
                    mew=0.7,
                    zorder=3,
                )
                off = "" if x == s else " (off scale)"
                if compact and not off:
                    continue
                # label towards the middle of the panel, so it never runs into the seed names
                frac = (x - lo) / (hi - lo)
                on_right = (1 - frac if lower else frac) > 0.6
                dx = -8 if on_right else 8
                beats = r.leaderboard_share_beaten
                beats_txt = "" if beats is None else f", beats {fmt_share(beats)}"
                ax.annotate(
                    f"{fmt_num(s)}{off}  {cls}{beats_txt}",
                    (x, y),
                    xytext=(dx, 0 if compact else 7),
                    textcoords="offset points",
                    fontsize=7 if compact else 8.5,
                    va="center" if compact else "bottom",
                    ha="right" if on_right else "left",
                    color="#222222",
                )
            else:
                why = "no submission" if not r.submission_exists else "invalid submission"
                ax.text(
                    0.005,
                    y,
                    f"✗ {why}",
                    transform=blended_transform_factory(ax.transAxes, ax.transData),
                    va="center",
                    ha="left",
                    fontsize=7 if compact else 8.5,
                    color="#b22222",
                    zorder=4,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5},
                )

        names = [f"{printable(k[1])} · seed {k[2]}" if several else f"seed {k[2]}" for k in seeds]
        ax.set_yticks(range(len(seeds)), names, fontsize=7 if compact else 9)
        for i in range(1, len(seeds)):
            if seeds[i][0] != seeds[i - 1][0]:  # the next agent's rows
                ax.axhline(i - 0.5, color="#999999", lw=0.8)
        ax.grid(axis="x", color="#dddddd", lw=0.6)
        ax.tick_params(axis="x", labelsize=8.5)
        ax.set_xlabel("score", fontsize=8.5, labelpad=1)
        if not th and not scores:
            ax.set_xticks([])  # nothing graded: an axis of made-up numbers would mislead
        if lower is None:
            direction = "direction unknown"
        else:
            direction = "lower is better, axis reversed" if lower else "higher is better"
        note = "" if th else "; thresholds unknown, no medal claimed"
        ax.set_title(
            f"{comp}  ({direction}; better →{note})", loc="left", fontsize=10.5, pad=6 + 14 * (levels + 1)
        )
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
