"""The leaderboard row of a graded group: upstream's README leaderboard columns, one row per agent.

Upstream's leaderboard gives, per agent: the agent, its model(s), Any Medal % on Low (Lite),
Medium, High and All as mean ± SEM over seeds, the run time, the hardware and the date. Everything
here is read from plain dicts, as grading_report.json and metadata.json hold them, and defensively:
`aggregates` (by split, upstream's aggregation) and `cost` (from Slurm) are written by other parts
of the grader and may be absent (old reports), in which case the figure is `n/a`.

Models come from what each run's metadata records of its variant: `agent_models` (recorded at run
start), else the variant's kwargs that name a model (`agent.code.model=...`), plus the local LLM
(`llm_model`); `unknown` when nothing names one. Hardware is the agent component as Slurm allocated
it (`cost.hardware`); several distinct values are all listed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mlebench_hpc.agents.registry import names_model
from mlebench_hpc.sweep.attribution import label as agent_label

# (column, split name in `aggregates`), in upstream's order; All is split75.
LEADERBOARD_SPLITS: tuple[tuple[str, str], ...] = (
    ("Low", "low"),
    ("Medium", "medium"),
    ("High", "high"),
    ("All", "split75"),
)
NA = "n/a"
# the group cost's figures (cost.py) in summary.csv's LEADERBOARD rows, as cost_<key>
COST_COLUMNS = (
    "source",
    "elapsed_s",
    "cpu_hours",
    "gpu_hours",
    "peak_mem_mb",
    "runs_with_cost",
    "runs_without_cost",
)


@dataclass(frozen=True)
class LeaderboardRow:
    agent: str
    models: tuple[str, ...]
    splits: dict[str, str]  # column (Low, ...) -> "mean ± SEM" or n/a
    own_sets: dict[str, str]  # the group's own set(s), by name, when none of the four
    time_limit: str
    hardware: str
    gpu_hours: str
    date: str
    cost: dict[str, Any] = field(default_factory=dict)  # the agent's group cost (report["cost"])

    def model_text(self) -> str:
        return ", ".join(self.models) if self.models else "unknown"

    def csv_columns(self) -> dict[str, str]:
        """The columns this row adds to summary.csv (lb_ prefixed, never clashing with others)."""
        out = {"lb_agent": self.agent, "lb_model": self.model_text()}
        out.update({f"lb_{col.lower()}": text for col, text in self.splits.items()})
        out["lb_own_set"] = " + ".join(self.own_sets) if self.own_sets else ""
        out["lb_own_set_any_medal"] = " ; ".join(self.own_sets.values()) if self.own_sets else ""
        out.update(
            lb_time_limit=self.time_limit,
            lb_hardware=self.hardware,
            lb_gpu_hours=self.gpu_hours,
            lb_date=self.date,
        )
        for key in COST_COLUMNS:
            value = self.cost.get(key) if self.cost.get("runs_with_cost") else None
            out[f"cost_{key}"] = "" if value is None else str(value)
        return out


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(float(x)):
        return None
    return float(x)


def split_text(entry: Any, metric: str = "any_medal_percentage") -> str:
    """`mean ± SEM` (2 decimals, %) of METRIC in one split's aggregate, n/a when not there."""
    if not isinstance(entry, dict):
        return NA
    m = (entry.get("metrics") or {}).get(metric) if isinstance(entry.get("metrics"), dict) else None
    if not isinstance(m, dict):
        return NA
    mean, se = _num(m.get("mean")), _num(m.get("standard_error"))
    if mean is None:
        return NA
    return f"{mean:.2f}% ± {se:.2f}%" if se is not None else f"{mean:.2f}% ± {NA}"


def interval_text(entry: Any, metric: str = "any_medal_percentage") -> str:
    """`[ci_lower, ci_upper]` of METRIC in one split's aggregate, n/a when not there."""
    m = ((entry or {}).get("metrics") or {}).get(metric) if isinstance(entry, dict) else None
    if not isinstance(m, dict):
        return NA
    lo, hi = _num(m.get("ci_lower")), _num(m.get("ci_upper"))
    return NA if lo is None or hi is None else f"[{lo:.2f}%, {hi:.2f}%]"


def agent_reports(group: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    """Each agent's own report in a group report: the group itself for one agent."""
    by = group.get("by_agent")
    if isinstance(by, dict) and by:
        return {str(k): v for k, v in by.items() if isinstance(v, dict)}
    agents = {r.get("agent_id") for r in group.get("competition_reports") or [] if isinstance(r, dict)}
    return {next(iter(agents)) if len(agents) == 1 else None: group}


def _models(meta: dict[str, Any]) -> list[str]:
    recorded = meta.get("agent_models")
    if isinstance(recorded, list):
        found = [str(m) for m in recorded if m]
    else:
        kwargs = meta.get("agent_kwargs") if isinstance(meta.get("agent_kwargs"), dict) else {}
        found = [str(v) for k, v in kwargs.items() if names_model(k) and v]
    if meta.get("llm_model"):
        found.append(f"{meta['llm_model']} (local LLM)")
    return found


def hardware_text(hw: Any) -> str | None:
    """`1 x a100, 8 CPUs, 32 GiB` from cost.hardware (None when it says nothing)."""
    if not isinstance(hw, dict):
        return None
    parts = []
    gpus = _num(hw.get("gpus"))
    if gpus:
        parts.append(f"{int(gpus)} x {hw.get('gpu_type') or 'GPU'}")
    else:
        parts.append("no GPU")
    cpus = _num(hw.get("cpus"))
    if cpus is not None:
        parts.append(f"{int(cpus)} CPU{'' if int(cpus) == 1 else 's'}")
    mem = _num(hw.get("mem_mb"))
    if mem is not None:
        parts.append(f"{mem / 1024:.0f} GiB" if mem >= 1024 else f"{mem:.0f} MiB")
    return ", ".join(parts) if len(parts) > 1 or gpus else None


def hours_text(hours: float) -> str:
    """GPU-hours to 2 decimals, 3 below one hour (a short sweep's 0.004 must not read 0.00)."""
    return f"{hours:.2f}" if hours >= 1 else f"{hours:.3f}"


def duration_text(secs: float) -> str:
    if secs % 3600 == 0:
        return f"{int(secs // 3600)}h"
    if secs % 60 == 0:
        return f"{int(secs // 60)} min"
    return f"{secs:g} s"


def _distinct(values: list[str]) -> str:
    seen = list(dict.fromkeys(v for v in values if v))
    return "; ".join(seen) if seen else NA


def leaderboard_row(
    agent: str | None,
    report: dict[str, Any],
    metadata: dict[str, dict[str, Any]],
    own_set_names: tuple[str, ...] = (),
) -> LeaderboardRow:
    """The row of AGENT from its own REPORT (grading_report.json's, or by_agent's), METADATA (each
    run's metadata.json by run_dir) and the names of the competition set its sweeps asked for."""
    aggs = report.get("aggregates") if isinstance(report.get("aggregates"), dict) else {}
    splits = {col: split_text(aggs.get(name)) for col, name in LEADERBOARD_SPLITS}
    upstream = {name for _, name in LEADERBOARD_SPLITS} | {"all"}
    own: dict[str, str] = {}
    for name in own_set_names:
        if name not in upstream:
            own[name] = split_text(aggs.get(name))
    for name, entry in aggs.items():
        if (
            isinstance(entry, dict)
            and entry.get("split_source") in ("sweep", "file")
            and name not in upstream
        ):
            own.setdefault(str(name), split_text(entry))
    runs = [r for r in report.get("competition_reports") or [] if isinstance(r, dict)]
    metas = [metadata.get(str(r.get("run_dir")), {}) for r in runs]
    models = list(dict.fromkeys(m for meta in metas for m in _models(meta)))
    limits = sorted({float(v) for meta in metas if (v := _num(meta.get("time_limit_secs")))})
    hardware = _distinct(
        [
            hardware_text((r.get("cost") or {}).get("hardware")) or ""
            for r in runs
            if isinstance(r.get("cost"), dict)
        ]
    )
    cost = report.get("cost") if isinstance(report.get("cost"), dict) else {}
    gpu_h = _num(cost.get("gpu_hours"))
    with_cost, without = _num(cost.get("runs_with_cost")), _num(cost.get("runs_without_cost"))
    if with_cost == 0:
        gpu_h = None  # no run's cost is known: 0.00 would claim the sweep was free
    gpu_text = NA if gpu_h is None else hours_text(gpu_h)
    if gpu_h is not None and without:
        gpu_text += f" ({int(with_cost or 0)} of {int((with_cost or 0) + without)} runs)"
    starts = sorted(str(meta["start"])[:10] for meta in metas if isinstance(meta.get("start"), str))
    if starts:
        date = starts[0] if starts[0] == starts[-1] else f"{starts[0]} to {starts[-1]}"
    else:
        date = str(report.get("created_at") or "")[:10] or NA
    return LeaderboardRow(
        agent=agent_label(agent),
        models=tuple(models),
        splits=splits,
        own_sets=own,
        time_limit=", ".join(duration_text(s) for s in limits) if limits else NA,
        hardware=hardware,
        gpu_hours=gpu_text,
        date=date,
        cost=dict(cost),
    )


def leaderboard_rows(
    group: dict[str, Any],
    metadata: dict[str, dict[str, Any]],
    own_sets: dict[str, tuple[str, ...]] | None = None,
) -> list[LeaderboardRow]:
    """One row per agent of the group report GROUP (grading_report.json as a dict); OWN_SETS: the
    names of each agent's competition set (by agent label), when its sweeps said."""
    own_sets = own_sets or {}
    return [
        leaderboard_row(agent, rep, metadata, own_sets.get(agent_label(agent), ()))
        for agent, rep in agent_reports(group).items()
    ]


def table_cells(rows: list[LeaderboardRow]) -> tuple[list[str], list[list[str]]]:
    """(the header, each row's cells): the columns of summary.md's table and make grade's."""
    own_names = list(dict.fromkeys(n for r in rows for n in r.own_sets))
    header = ["agent", "model(s)", *(c for c, _ in LEADERBOARD_SPLITS), *own_names]
    header += ["time limit", "hardware per run", "GPU-hours", "date"]
    body = []
    for r in rows:
        cells = [r.agent, r.model_text(), *r.splits.values(), *(r.own_sets.get(n, NA) for n in own_names)]
        body.append(cells + [r.time_limit, r.hardware, r.gpu_hours, r.date])
    return header, body


def markdown_table(rows: list[LeaderboardRow], cell: Any) -> list[str]:
    """summary.md's "Leaderboard row" table; CELL escapes each cell (markdown_cell)."""
    header, body = table_cells(rows)
    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(cell(c) for c in cells) + " |" for cells in body]
    return lines


def text_table(rows: list[LeaderboardRow]) -> str:
    """The rows for a terminal (make grade): the markdown table's columns, aligned, every cell
    made printable (agent ids and models are the agent's words)."""
    from mlebench_hpc.printable import printable

    header, body = table_cells(rows)
    table = [header, *([printable(c) for c in cells] for cells in body)]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    out = ["leaderboard row (upstream's columns: Any Medal % mean ± SEM; All = split75):"]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    return "\n".join(out)
