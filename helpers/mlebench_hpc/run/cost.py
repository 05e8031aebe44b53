"""What a run cost, as Slurm allocated it: CPUs, memory, GPUs (count and type), nodes and elapsed
time per component of its job, then CPU-hours, GPU-hours and peak memory; and a group's sums.

Two sources, never the agent: the job's own allocation, read from `scontrol show job -d` by the
job's host-side script at its end (`run cost`, "allocation"), and Slurm's accounting (`sacct`,
"sacct") where the site keeps it. Both reads go through slurm_query; this module only computes.
The dict shapes are the `cost` contract of grading_report.json (README "Cost")."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlebench_hpc.slurm.query import JobInfo

SOURCES = ("sacct", "allocation")
_UNITS_MB = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2, "P": 1024.0**3}
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMGTP]?)[B]?$", re.IGNORECASE)


def mem_mb(text: str | None) -> float | None:
    """A Slurm size (`4G`, `200M`, `123456K`, `1.5T`; a bare number is MiB) in MiB, or None."""
    m = _SIZE.match((text or "").strip())
    if m is None:
        return None
    return float(m.group(1)) * _UNITS_MB[(m.group(2) or "M").upper()]


def parse_tres(text: str | None) -> dict[str, str]:
    """`cpu=2,mem=200M,node=1,gres/gpu=1,gres/gpu:a100=1` -> {name: value}."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def _count(text: str) -> int:
    text = text.split("(")[0].strip()  # gpu:a100:2(IDX:0-1)
    return int(text) if text.isdigit() else 0


def gpus_of(fields: Mapping[str, str]) -> tuple[int, str | None]:
    """(GPUs, their type or None) Slurm allocated: TRES gres/gpu (sites that account GPUs), else
    JOB_GRES (`scontrol show job -d`), else TresPerNode x nodes (what was asked, once allocated)."""
    tres = parse_tres(fields.get("AllocTRES") or fields.get("TRES"))
    types = [k.split(":", 1)[1] for k in tres if k.startswith("gres/gpu:")]
    if "gres/gpu" in tres:
        return _count(tres["gres/gpu"]), types[0] if types else None
    gres = [g for g in (fields.get("JOB_GRES") or "").split(",") if g.startswith("gpu")]
    if gres:
        parts = [g.split("(")[0].split(":") for g in gres]  # gpu:a100:1(IDX:0)
        kinds = {p[1] for p in parts if len(p) == 3}
        return sum(_count(p[-1]) for p in parts), next(iter(kinds)) if len(kinds) == 1 else None
    for item in (fields.get("TresPerNode") or "").split(","):
        parts = item.replace("gres/", "gres:").split(":")
        if len(parts) >= 3 and parts[0] == "gres" and parts[1] == "gpu":
            nodes = _count(fields.get("NumNodes", "1")) or 1
            return _count(parts[-1]) * nodes, parts[2] if len(parts) == 4 else None
    return 0, None


def runtime_secs(text: str | None) -> float | None:
    """Slurm's `[D-]HH:MM:SS` (RunTime, Elapsed) in seconds, or None."""
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", (text or "").strip())
    if m is None:
        return None
    d, h, mi, s = (int(g or 0) for g in m.groups())
    return float(((d * 24 + h) * 60 + mi) * 60 + s)


def node_list(text: str | None) -> list[str]:
    """`n1,n[2-3]` -> ['n1', 'n[2-3]'] (Slurm's ranges kept as Slurm wrote them)."""
    out, depth, cur = [], 0, ""
    for ch in text or "":
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [n.strip() for n in out if n.strip() and n.strip() not in ("(null)", "None assigned")]


@dataclass(frozen=True)
class Component:
    """One component of a job (a hetjob's, or the whole job) as Slurm allocated it."""

    name: str  # grading | agent | llm
    cpus: int
    mem_mb: float | None
    gpus: int
    gpu_type: str | None
    nodes: list[str]
    elapsed_s: float
    peak_mem_mb: float | None = None
    shares: list[str] = field(default_factory=list)  # what else ran in it (llm beside the agent)

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "cpus": self.cpus,
            "mem_mb": self.mem_mb,
            "gpus": self.gpus,
            "gpu_type": self.gpu_type,
            "elapsed_s": self.elapsed_s,
            "nodes": self.nodes,
            "peak_mem_mb": self.peak_mem_mb,
        }
        if self.shares:
            out["with"] = self.shares
        return out


def component_names(spec: str) -> list[tuple[str, list[str]]]:
    """`grading,agent+llm` -> [('grading', []), ('agent', ['llm'])]: one entry per component, in
    Slurm's order (hetjob offset); `+` names what shares a component."""
    out = []
    for item in spec.split(","):
        first, *rest = [p.strip() for p in item.split("+") if p.strip()] or ["component"]
        out.append((first, rest))
    return out


def _named(i: int, names: list[tuple[str, list[str]]]) -> tuple[str, list[str]]:
    return names[i] if i < len(names) else (f"component{i}", [])


def records_of(records: list[JobInfo], job_id: str) -> list[JobInfo]:
    """The records of JOB_ID itself among what `scontrol show job JOB_ID` printed: an array's first
    task shares its id with the array job, whose every task scontrol then lists."""
    base = job_id.split("+")[0]

    def ids(r: JobInfo) -> set[str]:
        task = r.get("ArrayTaskId")
        return {r.job_id, r.get("HetJobId"), f"{r.get('ArrayJobId')}_{task}" if task.isdigit() else ""}

    mine = [r for r in records if job_id in ids(r) or base in ids(r)]
    if any(r.get("ArrayTaskId") for r in mine) and "_" not in job_id:
        mine = [r for r in mine if r.job_id == job_id]  # a plain id of an array task: that task only
    return mine


def components_from_scontrol(
    records: list[JobInfo], spec: str, peaks: Mapping[str, float | None]
) -> list[Component]:
    """The job's components from its scontrol records (hetjob offset order), named by SPEC; PEAKS
    by component name (measured by the scripts, never by the agent)."""
    names = component_names(spec)
    ordered = sorted(records, key=lambda r: int(r.get("HetJobOffset", "0") or 0))
    out = []
    for i, rec in enumerate(ordered):
        name, shares = _named(i, names)
        tres = parse_tres(rec.get("TRES"))
        gpus, kind = gpus_of(rec.fields)
        cpus = _count(rec.get("NumCPUs")) or _count(tres.get("cpu", ""))
        out.append(
            Component(
                name=name,
                cpus=cpus,
                mem_mb=mem_mb(tres.get("mem")),
                gpus=gpus,
                gpu_type=kind,
                nodes=node_list(rec.get("NodeList")),
                elapsed_s=runtime_secs(rec.get("RunTime")) or 0.0,
                peak_mem_mb=peaks.get(name),
                shares=shares,
            )
        )
    return out


def components_from_sacct(rows: list[dict[str, str]], spec: str) -> list[Component]:
    """The job's components from `sacct --parsable2` rows: an allocation per line without a '.' in
    JobID (`123`, `123+1`, `45_6`), its steps (`123+1.batch`, `123+1.0`) give the peak memory
    (TRESUsageInMax mem, else MaxRSS: only where the site gathers it)."""
    names = component_names(spec)
    allocs = [r for r in rows if "." not in r.get("JobID", "")]
    out = []
    for i, row in enumerate(allocs):
        job = row["JobID"]
        name, shares = _named(i, names)
        tres = parse_tres(row.get("AllocTRES"))
        gpus, kind = gpus_of({"AllocTRES": row.get("AllocTRES", "")})
        steps = [r for r in rows if r.get("JobID", "").startswith(job + ".")]
        peaks = [
            p
            for r in steps
            for p in (mem_mb(parse_tres(r.get("TRESUsageInMax")).get("mem")) or mem_mb(r.get("MaxRSS")),)
            if p
        ]
        elapsed = row.get("ElapsedRaw", "")
        out.append(
            Component(
                name=name,
                cpus=_count(tres.get("cpu", "")),
                mem_mb=mem_mb(tres.get("mem")),
                gpus=gpus,
                gpu_type=kind,
                nodes=node_list(row.get("NodeList")),
                elapsed_s=float(elapsed) if elapsed.isdigit() else 0.0,
                peak_mem_mb=max(peaks) if peaks else None,
                shares=shares,
            )
        )
    return out


def run_cost(components: list[Component], source: str, job_id: str = "") -> dict[str, Any] | None:
    """The run's `cost`: hours over every component, the agent's hardware."""
    if not components:
        return None
    peaks = [c.peak_mem_mb for c in components if c.peak_mem_mb is not None]
    agent = next((c for c in components if c.name == "agent"), components[-1])
    return {
        "source": source,
        "elapsed_s": max(c.elapsed_s for c in components),
        "cpu_hours": sum(c.cpus * c.elapsed_s for c in components) / 3600,
        "gpu_hours": sum(c.gpus * c.elapsed_s for c in components) / 3600,
        "peak_mem_mb": max(peaks) if peaks else None,
        "hardware": {
            "cpus": agent.cpus,
            "mem_mb": agent.mem_mb,
            "gpus": agent.gpus,
            "gpu_type": agent.gpu_type,
            "nodes": agent.nodes,
        },
        "components": [c.record() for c in components],
        "slurm_job_id": job_id,
    }


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def valid_cost(value: Any) -> dict[str, Any] | None:
    """VALUE when it has the contract's numbers (a record written by `run cost`), else None."""
    if not isinstance(value, dict) or value.get("source") not in SOURCES:
        return None
    if any(_num(value.get(k)) is None for k in ("elapsed_s", "cpu_hours", "gpu_hours")):
        return None
    return value


def combine_attempts(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """A requeued run's cost: every attempt's hours add up (each held its allocation); the hardware
    and components are the last attempt's."""
    last = attempts[-1]
    if len(attempts) == 1:
        return last
    peaks = [p for a in attempts if (p := _num(a.get("peak_mem_mb"))) is not None]
    return {
        **last,
        "elapsed_s": sum(float(a["elapsed_s"]) for a in attempts),
        "cpu_hours": sum(float(a["cpu_hours"]) for a in attempts),
        "gpu_hours": sum(float(a["gpu_hours"]) for a in attempts),
        "peak_mem_mb": max(peaks) if peaks else None,
        "attempts": len(attempts),
    }


def group_cost(costs: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    """A group's cost: sums of elapsed and hours, the highest peak, how many runs had a cost."""
    all_costs = list(costs)
    known = [c for c in all_costs if valid_cost(c) is not None]
    sources = {c["source"] for c in known}
    peaks = [p for c in known if (p := _num(c.get("peak_mem_mb"))) is not None]
    return {
        "source": (sources.pop() if len(sources) == 1 else "mixed") if sources else None,
        "elapsed_s": sum(float(c["elapsed_s"]) for c in known),
        "cpu_hours": sum(float(c["cpu_hours"]) for c in known),
        "gpu_hours": sum(float(c["gpu_hours"]) for c in known),
        "peak_mem_mb": max(peaks) if peaks else None,
        "runs_with_cost": len(known),
        "runs_without_cost": len(all_costs) - len(known),
    }


def fmt_duration(secs: float) -> str:
    secs = int(round(secs))
    h, rem = divmod(secs, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}"


def format_group_cost(group: Mapping[str, Any]) -> str:
    """One line: elapsed, CPU-hours, GPU-hours, peak memory, and where the figures come from."""
    peak = group.get("peak_mem_mb")
    without = int(group.get("runs_without_cost") or 0)
    n = int(group.get("runs_with_cost") or 0)
    src = {
        "sacct": "Slurm accounting",
        "allocation": "Slurm allocations",
        "mixed": "accounting and allocations",
    }
    line = (
        f"cost: elapsed {fmt_duration(float(group.get('elapsed_s') or 0))}, "
        f"CPU-hours {float(group.get('cpu_hours') or 0):.3f}, "
        f"GPU-hours {float(group.get('gpu_hours') or 0):.3f}, "
        f"peak memory {'unknown' if peak is None else f'{float(peak):.0f} MiB'}"
        f" ({n} run{'s' if n != 1 else ''}, from {src.get(str(group.get('source')), 'no record')}"
    )
    if without:
        line += (
            f"; {without} run{'s' if without != 1 else ''} without a cost: "
            "no record from the job's end and no Slurm accounting for it"
        )
    return line + ")"
