"""Grading a run group vs its slowest run.

Builds a group of N runs (default 100) on the demo competitions: valid, noisy, invalid and
missing submissions, plus a few large ones (default 2 runs of 1M rows). Then times, as real
`mlebench-hpc grade` processes, (a) every large run alone and a small one alone, (b) the whole
group, and prints the group's wall time against the slowest single run. The target: the group
takes about the slowest run plus a small overhead.

    .venv/bin/python bench/grade_bench.py [--runs 100] [--large 2] [--large-rows 1000000] [--jobs N]
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import pandas as pd

CLI = [sys.executable, "-m", "mlebench_hpc.cli"]


def prepare(data_dir: Path) -> list[str]:
    out = subprocess.run(
        [*CLI, "prepare-demo", "--data-dir", str(data_dir)], check=True, capture_output=True, text=True
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def write_run(run_dir: Path, comp: str, seed: int, data_dir: Path, sub: pd.DataFrame | None) -> None:
    """A run directory laid out as the job makes it (`<comp>_<jobid>`, submission/, logs/)."""
    (run_dir / "submission").mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    job = run_dir.name[len(comp) + 1 :]
    (run_dir / "metadata.json").write_text(
        json.dumps({"competition_id": comp, "agent_job_id": job, "seed": seed, "data_dir": str(data_dir)})
    )
    if sub is not None:
        sub.to_csv(run_dir / "submission" / "submission.csv", index=False)


def build_group(
    group: Path, data_dir: Path, comps: list[str], runs: int, large: int, large_rows: int
) -> list[Path]:
    """Returns the large runs' directories."""
    rng = np.random.default_rng(0)
    answers = {c: pd.read_csv(data_dir / c / "prepared" / "private" / "test.csv") for c in comps}
    large_dirs = []
    for i in range(runs):
        comp = comps[i % len(comps)]
        seed = i // len(comps)
        ans = answers[comp][["id", "target"]]
        run_dir = group / f"{comp}_{1000 + i}"
        kind = i % 5
        if i < large:
            n = large_rows
            sub = pd.DataFrame({"id": np.arange(n), "target": rng.random(n)})
            large_dirs.append(run_dir)
        elif kind == 0:
            sub = ans.copy()
        elif kind in (1, 2):
            sub = ans.copy()
            sub["target"] = (sub["target"] * 0.5 + rng.random(len(sub)) * 0.5).clip(0, None)
        elif kind == 3:
            sub = ans.iloc[: len(ans) // 2].copy()  # missing rows: invalid
        else:
            sub = None
        write_run(run_dir, comp, seed, data_dir, sub)
    return large_dirs


CPU_USED: dict[str, float] = {}


def time_grade(target: Path, extra: list[str], repeat: int, label: str) -> float:
    """Median wall time of `repeat` real `mlebench-hpc grade` processes (start-up included).

    Also records the median CPU seconds (user + sys, worker processes included) under `label`:
    on a shared, loaded machine wall times wander, CPU times much less."""
    times, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [*CLI, "grade", str(target), "--no-progress", *extra], capture_output=True, text=True
        )
        times.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            raise SystemExit(f"grade {target} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    CPU_USED[label] = statistics.median(cpus)
    return statistics.median(times)


@click.command()
@click.option("--runs", default=100, show_default=True)
@click.option("--large", default=2, show_default=True, help="Runs with a large (invalid) submission.")
@click.option("--large-rows", default=1_000_000, show_default=True)
@click.option("--jobs", type=int, default=None, help="Passed to grade --jobs (default: its own).")
@click.option("--repeat", default=3, show_default=True, help="Timings are medians of this many runs.")
@click.option("--keep", is_flag=True, help="Keep the temporary directory.")
def main(runs: int, large: int, large_rows: int, jobs: int | None, repeat: int, keep: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="grade-bench-"))
    try:
        load_before = os.getloadavg()[0]
        data_dir = work / "data"
        comps = prepare(data_dir)
        group = work / "group"
        large_dirs = build_group(group, data_dir, comps, runs, large, large_rows)
        size_mb = sum(f.stat().st_size for f in group.rglob("submission.csv")) / 2**20
        extra = ["--data-dir", str(data_dir), *(["--jobs", str(jobs)] if jobs else [])]
        small = sorted(d for d in group.iterdir() if d not in large_dirs)[0]
        single = ["--no-summary", "--data-dir", str(data_dir)]
        singles = {d.name: time_grade(d, single, repeat, d.name) for d in [*large_dirs, small]}
        slowest = max(singles.values())
        group_no_summary = time_grade(group, ["--no-summary", *extra], repeat, "group")
        group_full = time_grade(group, extra, repeat, "group+summaries")
        print(
            f"cpus {os.cpu_count()}, runs {runs} over {len(comps)} competitions, {large} large "
            f"submissions of {large_rows} rows, {size_mb:.1f} MiB of submissions; medians of {repeat}"
        )
        print(
            f"load average before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f} "
            "(wall times are only meaningful when it is below the cpu count)"
        )
        for name, secs in singles.items():
            print(f"  single run {name:<32} {secs:6.2f} s   cpu {CPU_USED[name]:5.2f} s")
        print(f"slowest single run           {slowest:6.2f} s")
        print(
            f"group, report only           {group_no_summary:6.2f} s   "
            f"(overhead {group_no_summary - slowest:+.2f} s, ratio {group_no_summary / slowest:.2f}x)"
            f"   cpu {CPU_USED['group']:5.2f} s"
        )
        print(
            f"group, report + summaries    {group_full:6.2f} s   "
            f"(overhead {group_full - slowest:+.2f} s, ratio {group_full / slowest:.2f}x)"
            f"   cpu {CPU_USED['group+summaries']:5.2f} s"
        )
    finally:
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
