"""The worker pool that grades many runs: processes forked with the engine imported, each with a
memory budget (RLIMIT_DATA), largest submissions first; a worker that dies costs only its run (the
runs of a broken pool are graded again, each in a fresh worker of its own)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from mlebench_hpc.grading.messages import one_line
from mlebench_hpc.results.find_runs import RunSpec
from mlebench_hpc.results.grade_one import GradedRun, competition_key, empty_report, grade_run

MIB = 1024 * 1024


class _Progress:
    """tqdm on stderr when installed, else a plain counter (only on a terminal)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self._bar = total, 0, None
        self._tty = enabled and sys.stderr.isatty()
        if not enabled:
            return
        try:
            from tqdm import tqdm

            tqdm.monitor_interval = 0  # no monitor thread: worker processes are forked after this
            self._bar = tqdm(total=total, desc="grading", unit="run", file=sys.stderr, disable=None)
        except ImportError:
            self._bar = None

    def update(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
        elif self._tty:
            end = "\n" if self.done == self.total else ""
            print(f"\rgrading {self.done}/{self.total}", end=end, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _size(spec: RunSpec) -> int:
    if spec.collected and isinstance(spec.collected.get("bytes"), int):
        return int(spec.collected["bytes"])
    try:
        return os.lstat(spec.submission_path).st_size  # never follows the agent's links
    except OSError:
        return 0


def usable_cpus() -> int:
    """CPUs this process may use (a Slurm allocation's, not the whole node's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_jobs(n_runs: int) -> int:
    return max(1, min(usable_cpus(), n_runs))


def memory_budget(jobs: int) -> int:
    """Bytes each grading worker may add to its address space: the memory this process may use
    (MemAvailable, or the cgroup's limit in a Slurm allocation), shared by the workers, between
    1 and 16 GiB. One absurd submission then fails its own run, not the machine."""
    avail = 8 * 1024 * MIB
    with contextlib.suppress(OSError, ValueError, StopIteration):
        line = next(
            ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemAvailable:")
        )
        avail = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            avail = min(avail, int(limit))
    return int(min(16 * 1024 * MIB, max(1024 * MIB, 0.8 * avail / max(1, jobs))))


def _limit_memory(budget: int) -> None:
    """Worker initializer: cap the data segment (private writable memory, RLIMIT_DATA: file mappings
    and reserved-but-unused ranges do not count) at what the worker already has plus BUDGET, so an
    allocation beyond it raises MemoryError in that worker (reported for that run alone)."""
    import resource

    mapped = 0
    with contextlib.suppress(OSError, ValueError, StopIteration):
        line = next(
            ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmData:")
        )
        mapped = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_DATA, (mapped + budget, mapped + budget))


def _pool(workers: int, budget: int) -> ProcessPoolExecutor:
    # fork (Linux): workers inherit the imported engine instead of importing it again
    ctx = multiprocessing.get_context("fork") if sys.platform == "linux" else None
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_limit_memory, initargs=(budget,)
    )


def _grade_isolated(spec: RunSpec, budget: int) -> GradedRun:
    """Grade one run in a fresh worker of its own; a worker that dies costs only this run."""
    with _pool(1, budget) as pool:
        try:
            return pool.submit(grade_run, spec).result()
        except BrokenProcessPool:
            error = (
                f"grading failed: out of memory or a crash (its worker process died; memory budget "
                f"{budget // MIB} MiB per worker, see --memory-mb); the other runs were graded"
            )
            return GradedRun(empty_report(spec, error), graded=False)


def grade_runs(
    specs: list[RunSpec],
    jobs: int | None = None,
    progress: bool = True,
    meanwhile: Callable[[], None] | None = None,
    memory_mb: float | None = None,
) -> list[GradedRun]:
    """Grade every spec, in order, with `jobs` worker processes, each with a memory budget
    (memory_mb, default memory_budget()).

    A submission that needs more memory than the budget fails alone ("out of memory"). A worker
    that dies anyway takes down only the pool: its runs are graded again, each in a fresh worker,
    so the one that kills its worker fails and the others are graded. `meanwhile` runs in a thread
    of this (otherwise idle) process once the workers exist, e.g. to import the plotting library.
    """
    n = len(specs)
    jobs = default_jobs(n) if jobs is None else max(1, min(jobs, n or 1))
    budget = int(memory_mb * MIB) if memory_mb else memory_budget(jobs)
    bar = _Progress(n, progress)
    results: list[GradedRun | None] = [None] * n
    broken: list[int] = []
    try:
        import mlebench_hpc.grading  # noqa: F401 - imported before forking, paid once

        # Largest submissions first (longest-processing-time scheduling): the group then
        # takes about its slowest run, the small ones filling the other workers meanwhile.
        # Each worker caches the answers it parsed, so each is parsed at most once per worker.
        order = sorted(range(n), key=lambda i: (-_size(specs[i]), competition_key(specs[i])))
        helper = threading.Thread(target=meanwhile, daemon=True) if meanwhile else None
        with _pool(jobs, budget) as pool:
            futures: dict[Future[GradedRun], int] = {pool.submit(grade_run, specs[i]): i for i in order}
            if helper is not None:
                helper.start()  # after the fork: workers never inherit this thread
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    results[i] = fut.result()
                except BrokenProcessPool:
                    broken.append(i)
                    continue
                except Exception as exc:  # e.g. a result that cannot be pickled
                    error = one_line(f"grading worker failed ({type(exc).__name__}): {exc}")
                    results[i] = GradedRun(empty_report(specs[i], error), graded=False)
                bar.update()
        if broken:
            with ThreadPoolExecutor(max_workers=jobs) as threads:
                for i, graded in zip(
                    broken, threads.map(lambda j: _grade_isolated(specs[j], budget), broken), strict=True
                ):
                    results[i] = graded
                    bar.update()
        if helper is not None:
            helper.join()
    finally:
        bar.close()
    return [r for r in results if r is not None]
