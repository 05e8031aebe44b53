"""A 200-task sweep on the local cluster: time and peak memory of submit, status and grade.

Submits the 2 demo competitions x 100 seeds (dummy agent) as one array with the real
scripts_hpc/submit_sweep.sh, then times, as the real processes a user runs:
  submit   bash scripts_hpc/submit_sweep.sh ... (plan, sbatch, record)    goal < 10 s
  status   mlebench-hpc status GROUP, right after submitting (every task queued)
           and again when the sweep is over (every task finished)      goal < 3 s
  grade    make grade RUN=GROUP (report, summary.csv/.md/.png)              goal < 10 s
status and grade run --repeat times (3); the median is printed, every time on stderr.
Peak memory: the largest single process of the command's process tree (the kernel's maxrss, from
wait4) and the sum over the tree (sampled every 10 ms). Needs the local cluster (make cluster-up);
the tasks run with `--gres=none --cpus-per-task=1 --mem=1G`.

    .venv/bin/python bench/sweep_bench.py [--seeds 100] [--max-parallel 16] [--runtime auto|apptainer|none]
        [--image-dir DIR] [--work-dir DIR]
    .venv/bin/python bench/sweep_bench.py --group-dir DIR     # status and grade again on a finished sweep
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "mlebench-hpc")
GOALS = {"submit": 10.0, "status": 3.0, "grade": 10.0}
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True)
class Measured:
    name: str
    seconds: float
    max_process_mib: float  # the largest process of the tree (kernel maxrss)
    tree_mib: float  # the whole tree at its sampled peak
    output: str

    def line(self) -> str:
        goal = GOALS.get(self.name.split()[0])
        verdict = "" if goal is None else f"  goal < {goal:g} s: {'met' if self.seconds < goal else 'MISSED'}"
        return (
            f"{self.name:<26} {self.seconds:7.2f} s   peak {self.max_process_mib:6.0f} MiB "
            f"(largest process), {self.tree_mib:6.0f} MiB (all processes){verdict}"
        )


def _tree_rss_kib(root: int) -> int:
    """Resident memory of ROOT and all its descendants now (KiB)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            statm = Path(f"/proc/{entry.name}/statm").read_text().split()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(statm[1]) * PAGE_KIB
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def measure(name: str, argv: list[str], env: dict[str, str]) -> Measured:
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss_kib(proc.pid))
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise click.ClickException(f"{name}: {' '.join(argv)} exited {proc.returncode}:\n{out[-3000:]}")
    return Measured(name, seconds, usage.ru_maxrss / 1024, peak[0] / 1024, out)


def squeue_counts(job: str) -> dict[str, int]:
    out = subprocess.run(
        ["squeue", "-h", "-r", "-j", job, "-o", "%T"], capture_output=True, text=True, check=False
    ).stdout.split()
    counts: dict[str, int] = {}
    for state in out:
        counts[state] = counts.get(state, 0) + 1
    return counts


def wait_for_array(job: str, limit: float) -> float:
    t0 = time.monotonic()
    last = 0.0
    while True:
        counts = squeue_counts(job)
        if not counts:
            return time.monotonic() - t0
        now = time.monotonic() - t0
        if now - last >= 30:
            click.echo(f"  {now:5.0f} s: {counts}", err=True)
            last = now
        if now > limit:
            raise click.ClickException(f"array {job} still queued after {limit:.0f} s: {counts}")
        time.sleep(2)


def write_config(work: Path, images: Path) -> Path:
    cfg = work / "config.env"
    cfg.write_text(
        f'DATA_DIR="{work / "data"}"\nOUTPUT_BASE="{work / "runs"}"\n'
        f'GRADING_SIF="{images / "mlebench-grading.sif"}"\nAGENT_SIF="{images / "agent-dummy.sif"}"\n'
        "TIME_LIMIT_SECS=600\nTIME_MARGIN_SECS=10\n"
    )
    return cfg


def repeated(name: str, argv: list[str], env: dict[str, str], repeat: int) -> Measured:
    """The median run of REPEAT (by time): one figure that a busy moment of the machine does not
    make; every run's time is printed on stderr."""
    runs = sorted((measure(name, argv, env) for _ in range(repeat)), key=lambda m: m.seconds)
    if repeat > 1:
        click.echo(f"  {name}: " + ", ".join(f"{m.seconds:.2f} s" for m in runs), err=True)
    return runs[len(runs) // 2]


def status_and_grade(group: Path, env: dict[str, str], results: list[Measured], repeat: int) -> None:
    status = repeated("status (sweep over)", [CLI, "status", str(group)], env, repeat)
    results.append(status)
    click.echo(status.output.splitlines()[-1], err=True)
    results.append(repeated("grade (make grade)", ["make", "-s", "grade", f"RUN={group}"], env, repeat))


@click.command()
@click.option("--seeds", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--max-parallel", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--runtime", type=click.Choice(["auto", "apptainer", "none"]), default="auto", show_default=True
)
@click.option(
    "--image-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path.home() / ".cache" / "mlebench-hpc" / "images",
    show_default=True,
)
@click.option("--work-dir", type=click.Path(path_type=Path, file_okay=False), help="Kept afterwards.")
@click.option(
    "--group-dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="Only time status and grade on this finished sweep group.",
)
@click.option("--limit", type=float, default=3600, show_default=True, help="Seconds to wait for the sweep.")
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Runs of status and grade (median).",
)
def main(
    seeds: int,
    max_parallel: int,
    runtime: str,
    image_dir: Path,
    work_dir: Path | None,
    group_dir: Path | None,
    limit: float,
    repeat: int,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLEBENCH_HPC_CONFIG"}
    results: list[Measured] = []
    if group_dir is not None:  # graded against the config in force (its DATA_DIR), as `make grade` does
        status_and_grade(group_dir.resolve(), dict(os.environ), results, repeat)
        for m in results:
            click.echo(m.line())
        return
    if shutil.which("sbatch") is None:
        raise click.ClickException("no Slurm here: as root, `make cluster-up` first")
    work = work_dir or Path(tempfile.mkdtemp(prefix="mlebench-sweep-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    comps = subprocess.run(
        [CLI, "prepare-demo", "--data-dir", str(work / "data")], check=True, capture_output=True, text=True
    ).stdout.split()
    (work / "demo.txt").write_text("".join(f"{c}\n" for c in comps))
    if runtime == "auto":
        have = shutil.which("apptainer") and (image_dir / "mlebench-grading.sif").is_file()
        runtime = "apptainer" if have and (image_dir / "agent-dummy.sif").is_file() else "none"
    env.update(MLEBENCH_HPC_CONFIG=str(write_config(work, image_dir)), MLEBENCH_HPC_RUNTIME=runtime)
    group = work / "runs" / "sweep-bench"
    n = len(comps) * seeds
    click.echo(
        f"sweep: {len(comps)} competitions x {seeds} seeds = {n} tasks, runtime {runtime}, in {work}",
        err=True,
    )

    submit = measure(
        f"submit ({n} tasks)",
        [
            "bash",
            str(ROOT / "scripts_hpc" / "submit_sweep.sh"),
            "--competitions",
            str(work / "demo.txt"),
            "--seeds",
            str(seeds),
            "--max-parallel",
            str(max_parallel),
            "--group",
            "sweep-bench",
            "--",
            "--gres=none",
            "--cpus-per-task=1",
            "--mem=1G",
            "--time=30",
        ],
        env,
    )
    results.append(submit)
    job = next(
        line.split()[3].rstrip(":")
        for line in submit.output.splitlines()
        if line.startswith("submitted array job")
    )
    results.append(repeated("status (all queued)", [CLI, "status", str(group)], env, repeat))
    click.echo(results[-1].output.splitlines()[-1], err=True)
    wall = wait_for_array(job, limit)
    click.echo(f"sweep ran in {wall:.0f} s ({n / wall * 60:.1f} tasks per minute)", err=True)
    status_and_grade(group, env, results, repeat)
    click.echo(f"\n{n}-task sweep (array {job}, runtime {runtime}, --max-parallel {max_parallel}), {work}:")
    for m in results:
        click.echo(m.line())


if __name__ == "__main__":
    main()
