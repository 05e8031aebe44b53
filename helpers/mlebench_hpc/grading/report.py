"""Grade run directories into upstream MLE-bench grading reports.

One `CompetitionReport` dict per run with exactly upstream's fields plus a few additive ones
(backend, thresholds source, run dir, seed, error, isolation record), aggregated under upstream's
run-group keys. Grading runs in worker processes; each worker parses a competition's answers once
and reuses them for every run of that competition it grades.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlebench_hpc.atomic import write_atomic
from mlebench_hpc.config import UPSTREAM_DEFAULT_DATA_DIR
from mlebench_hpc.grading.messages import shorten_invalid
from mlebench_hpc.untrusted import (
    COLLECTED_REL,
    SUBMISSION_REL,
    Collected,
    UntrustedFileError,
    copy_to,
    open_untrusted,
)

REPORT_NAME = "grading_report.json"
METADATA_NAME = "metadata.json"
MIB = 1024 * 1024
_OOM_MESSAGE = "grading failed: out of memory (over the memory budget per grading worker, see --memory-mb)"

# Upstream's CompetitionReport.to_dict() keys, in upstream's order.
UPSTREAM_FIELDS: tuple[str, ...] = (
    "competition_id",
    "score",
    "gold_threshold",
    "silver_threshold",
    "bronze_threshold",
    "median_threshold",
    "any_medal",
    "gold_medal",
    "silver_medal",
    "bronze_medal",
    "above_median",
    "submission_exists",
    "valid_submission",
    "is_lower_better",
    "created_at",
    "submission_path",
)
EXTRA_FIELDS: tuple[str, ...] = (
    "grading_backend",
    "grading_backend_version",
    "thresholds_source",
    "run_dir",
    "seed",
    "error",
    "isolation",
    "submission_sha256",
    "leaderboard_rank",
    "leaderboard_share_beaten",
    "leaderboard_teams",
)
REPORT_FIELDS: tuple[str, ...] = UPSTREAM_FIELDS + EXTRA_FIELDS
# Upstream's aggregate_reports() keys.
GROUP_KEYS: tuple[str, ...] = (
    "total_runs",
    "total_runs_with_submissions",
    "total_valid_submissions",
    "total_medals",
    "total_gold_medals",
    "total_silver_medals",
    "total_bronze_medals",
    "total_above_median",
    "competition_reports",
)
# Directories never holding runs: agent scratch and the run's own bind mounts hold arbitrary files.
_SKIP_DIRS = {".git", "__pycache__", "node_modules", ".venv"}
# A run directory's agent-writable subdirectories (bound into the agent container).
_AGENT_DIRS = {"submission", "logs", "code"}
_ERROR_MAX = 400


class RunSpecError(Exception):
    """A run directory or submissions file that cannot be read; one line saying what to fix."""


@dataclass(frozen=True)
class RunSpec:
    """One submission to grade and where to find its competition's data.

    The submission was written by an agent: it is only ever read through mlebench_hpc.untrusted,
    as `base / rel` (base is host-made; nothing below it may be a link). `collected` is the run's
    metadata record of the copy made when the agent ended (RUN/collected/submission.csv)."""

    competition_id: str
    submission_path: Path
    data_dir: Path
    mlebench_dir: Path | None = None
    run_dir: Path | None = None
    seed: Any = None
    isolation: Any = None
    collected: Any = None


@dataclass(frozen=True)
class GradedRun:
    report: dict[str, Any]
    graded: bool  # False when the competition itself could not be loaded (setup error)


def one_line(text: object, limit: int = _ERROR_MAX) -> str:
    """Collapse a message to one line, dropping upstream's fixed 'Submission invalid!' preamble."""
    s = " ".join(shorten_invalid(str(text).strip()).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


# ---------------------------------------------------------------- locating runs and data


class DirResolver:
    """Data and upstream-checkout directories, in the documented order of precedence.

    data dir: --data-dir > run metadata.json `data_dir` > config DATA_DIR > ~/.cache/mle-bench/data.
    MLEBENCH_DIR: --mlebench-dir > $MLEBENCH_DIR > config MLEBENCH_DIR > none (shipped thresholds).
    The config is read lazily: a broken config only matters when a run actually needs it.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        mlebench_dir: Path | None = None,
        config_lookup: Callable[[str], str | None] | None = None,
    ) -> None:
        self._data_dir = data_dir
        self._mlebench_dir = mlebench_dir
        self._lookup = config_lookup
        self._cache: dict[str, str | None] = {}

    def _config(self, key: str) -> str | None:
        if key not in self._cache:
            if self._lookup is None:
                from mlebench_hpc.config import config_value

                self._lookup = config_value
            self._cache[key] = self._lookup(key)
        return self._cache[key]

    def data_dir(self, metadata: dict[str, Any] | None = None) -> Path:
        if self._data_dir is not None:
            return Path(self._data_dir).expanduser()
        meta_dir = (metadata or {}).get("data_dir")
        if meta_dir:
            return Path(str(meta_dir)).expanduser()
        cfg = self._config("DATA_DIR")
        if cfg:
            return Path(cfg).expanduser()
        return UPSTREAM_DEFAULT_DATA_DIR

    def mlebench_dir(self) -> Path | None:
        if self._mlebench_dir is not None:
            return Path(self._mlebench_dir).expanduser()
        value = os.environ.get("MLEBENCH_DIR") or self._config("MLEBENCH_DIR")
        return Path(value).expanduser() if value else None


def find_run_dirs(root: Path) -> list[Path]:
    """Directories holding a metadata.json: root itself, or any below it (not below a run)."""
    if (root / METADATA_NAME).is_file():
        return [root]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):  # symlinked dirs are not followed: no loops
        if METADATA_NAME in filenames and Path(dirpath) != root:
            found.append(Path(dirpath))
            dirnames[:] = []  # a run's code/ or logs/ may hold anything, including metadata.json
            continue
        if set(dirnames) >= _AGENT_DIRS:
            dirnames[:] = []  # a run whose metadata is gone: its agent-written dirs are not searched
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
    return sorted(found)


def _read_metadata(run_dir: Path) -> dict[str, Any]:
    path = run_dir / METADATA_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunSpecError(f"{path}: not readable JSON ({one_line(exc, 120)}); fix or remove it") from None
    if not isinstance(data, dict) or not str(data.get("competition_id") or "").strip():
        raise RunSpecError(f"{path}: has no competition_id; not a run directory, skipped")
    return data


def normalize_seed(seed: Any) -> Any:
    """The scripts record seeds as strings ("" outside a sweep): "" -> None, "3" -> 3."""
    if isinstance(seed, str):
        seed = seed.strip()
        if not seed:
            return None
        if seed.lstrip("-").isdigit():
            return int(seed)
    return seed


def specs_from_dir(root: Path, dirs: DirResolver, warn: Callable[[str], None]) -> list[RunSpec]:
    """One RunSpec per run directory under root; unreadable metadata is warned about and skipped."""
    specs: list[RunSpec] = []
    for run_dir in find_run_dirs(root):
        try:
            meta = _read_metadata(run_dir)
        except RunSpecError as exc:
            warn(str(exc))
            continue
        specs.append(
            RunSpec(
                competition_id=str(meta["competition_id"]).strip(),
                submission_path=run_dir / SUBMISSION_REL,
                data_dir=dirs.data_dir(meta),
                mlebench_dir=dirs.mlebench_dir(),
                run_dir=run_dir,
                seed=normalize_seed(meta.get("seed")),
                isolation=meta.get("integrity"),
                collected=meta.get("submission") if isinstance(meta.get("submission"), dict) else None,
            )
        )
    return specs


def specs_from_jsonl(path: Path, dirs: DirResolver) -> list[RunSpec]:
    """Upstream's submissions file: one {"competition_id", "submission_path"} object per line.

    Blank lines and lines starting with # or // are skipped, as upstream does. Relative
    submission paths are taken relative to the file's directory.
    """
    specs: list[RunSpec] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", "//")):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise RunSpecError(
                f"{path}:{lineno}: not a JSON object; expected "
                '{"competition_id": ..., "submission_path": ...}'
            ) from None
        if not isinstance(obj, dict) or not obj.get("competition_id") or not obj.get("submission_path"):
            raise RunSpecError(f"{path}:{lineno}: needs both competition_id and submission_path")
        sub = Path(str(obj["submission_path"])).expanduser()
        if not sub.is_absolute():
            sub = path.parent / sub
        specs.append(
            RunSpec(
                competition_id=str(obj["competition_id"]),
                submission_path=sub,
                data_dir=dirs.data_dir(obj),
                mlebench_dir=dirs.mlebench_dir(),
                seed=normalize_seed(obj.get("seed")),
            )
        )
    return specs


# ---------------------------------------------------------------- grading one run (in a worker)

# Per process: (competition, data dir, mlebench dir) -> loaded competition (answers parsed once),
# and its thresholds (or the setup error they raised).
_COMPETITIONS: dict[tuple[str, str, str], Any] = {}
_THRESHOLDS: dict[tuple[str, str, str], tuple[Any, str | None]] = {}


def _key(spec: RunSpec) -> tuple[str, str, str]:
    return (spec.competition_id, str(spec.data_dir), str(spec.mlebench_dir or ""))


def _load(spec: RunSpec) -> Any:
    from mlebench_hpc.grading import load_competition

    key = _key(spec)
    if key not in _COMPETITIONS:
        _COMPETITIONS[key] = load_competition(spec.competition_id, spec.data_dir, spec.mlebench_dir)
    return _COMPETITIONS[key]


def _thresholds(spec: RunSpec, comp: Any) -> tuple[Any, str | None]:
    from mlebench_hpc.grading import GradingSetupError

    key = _key(spec)
    if key not in _THRESHOLDS:
        try:
            _THRESHOLDS[key] = (comp.thresholds(), None)
        except GradingSetupError as exc:
            _THRESHOLDS[key] = (None, one_line(exc))
    return _THRESHOLDS[key]


def _metadata_only(spec: RunSpec) -> Any:
    """The competition without its answers (for is_lower_better and thresholds), or None."""
    from mlebench_hpc.grading import load_competition

    try:
        return load_competition(spec.competition_id, spec.data_dir, spec.mlebench_dir, need_answers=False)
    except Exception:  # best effort only; the real error is already reported
        return None


def _present(path: Path) -> bool:
    """Something is at PATH (a link counts: the agent put it there), without following links."""
    try:
        os.lstat(path)
    except OSError:
        return False
    return True


def empty_report(spec: RunSpec) -> dict[str, Any]:
    sub = spec.submission_path
    collected = spec.collected.get("status") == "collected" if spec.collected else False
    return {
        "competition_id": spec.competition_id,
        "score": None,
        "gold_threshold": None,
        "silver_threshold": None,
        "bronze_threshold": None,
        "median_threshold": None,
        "any_medal": False,
        "gold_medal": False,
        "silver_medal": False,
        "bronze_medal": False,
        "above_median": False,
        # upstream: a submission exists when it is a file with a .csv suffix (never followed here)
        "submission_exists": collected or (_present(sub) and sub.suffix.lower() == ".csv"),
        "valid_submission": False,
        "is_lower_better": None,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "submission_path": str(sub),
        "grading_backend": None,
        "grading_backend_version": None,
        "thresholds_source": None,
        "run_dir": str(spec.run_dir) if spec.run_dir is not None else None,
        "seed": spec.seed,
        "error": None,
        "isolation": spec.isolation,
        "submission_sha256": None,
        "leaderboard_rank": None,
        "leaderboard_share_beaten": None,
        "leaderboard_teams": None,
    }


def _fill_thresholds(report: dict[str, Any], th: Any) -> None:
    if th is None:
        report["thresholds_source"] = "unknown"
        return
    report["gold_threshold"] = float(th.gold)
    report["silver_threshold"] = float(th.silver)
    report["bronze_threshold"] = float(th.bronze)
    report["median_threshold"] = float(th.median)
    report["thresholds_source"] = th.source


def _fill_placement(report: dict[str, Any], score: float | None, th: Any) -> None:
    """Beyond upstream: the rank the score would take among the leaderboard's teams and the share
    of teams it beats (ties neither beaten nor better: thresholds.leaderboard_placement)."""
    from mlebench_hpc.grading.thresholds import leaderboard_placement

    if score is None or th is None or not th.scores or math.isnan(score):
        return
    place = leaderboard_placement(score, th.scores, bool(report["is_lower_better"]))
    report["leaderboard_rank"] = place.rank
    report["leaderboard_share_beaten"] = round(place.share_beaten, 6)
    report["leaderboard_teams"] = place.n_teams


def grade_run(spec: RunSpec) -> GradedRun:
    """Grade one run. Never raises: every failure ends up as the report's one-line `error`."""
    from mlebench_hpc.grading import GradingSetupError, InvalidSubmission, backend_info, medal_flags

    report = empty_report(spec)
    try:
        info = backend_info()
        report["grading_backend"], report["grading_backend_version"] = info["backend"], info["version"]
        try:
            comp = _load(spec)
        except GradingSetupError as exc:
            report["error"] = one_line(exc)
            meta = _metadata_only(spec)
            if meta is not None:
                report["is_lower_better"] = bool(meta.is_lower_better)
                with contextlib.suppress(Exception):  # thresholds are informative here only
                    _fill_thresholds(report, meta.thresholds())
            return GradedRun(report, graded=False)

        report["grading_backend"] = comp.backend
        report["grading_backend_version"] = comp.backend_version
        report["is_lower_better"] = bool(comp.is_lower_better)
        th, th_error = _thresholds(spec, comp)
        _fill_thresholds(report, th)

        score: float | None = None
        if not report["submission_exists"]:
            sub = spec.submission_path
            what = "is not a .csv file" if _present(sub) else "does not exist"
            report["error"] = f"no submission: {sub} {what}"
        else:
            with tempfile.TemporaryDirectory(prefix="mlebench-grade-") as tmp:
                try:
                    graded = _submission_to_grade(spec, Path(tmp))
                except UntrustedFileError as exc:
                    report["error"] = one_line(f"submission refused: {exc}")
                else:
                    report["submission_path"] = str(
                        graded.path if graded.path.parent != Path(tmp) else spec.submission_path
                    )
                    report["submission_sha256"] = graded.sha256
                    try:
                        score = float(comp.score(graded.path))
                    except InvalidSubmission as exc:
                        report["error"] = one_line(exc)
                    except MemoryError:
                        report["error"] = _OOM_MESSAGE
                    except Exception as exc:  # upstream's Grader also counts any error as invalid
                        report["error"] = one_line(f"grader error ({type(exc).__name__}): {exc}")
        report["score"] = score
        report["valid_submission"] = score is not None
        flags = medal_flags(score, th, report["is_lower_better"])
        _fill_placement(report, score, th)
        for name in ("gold_medal", "silver_medal", "bronze_medal", "any_medal", "above_median"):
            report[name] = bool(flags[name])
        if th_error and not report["error"]:
            report["error"] = f"thresholds unavailable: {th_error}"
        return GradedRun(report, graded=True)
    except Exception as exc:  # one broken run must not lose the others
        report["error"] = one_line(f"internal error ({type(exc).__name__}): {exc}")
        return GradedRun(report, graded=False)


def _submission_to_grade(spec: RunSpec, tmp: Path) -> Collected:
    """The file to grade: the run's collected copy (host-made when the agent ended), else a copy
    made now through the untrusted reader. Raises UntrustedFileError (one line) when refused."""
    rec = spec.collected or {}
    if spec.run_dir is not None and rec.get("status") == "refused":
        raise UntrustedFileError(str(rec.get("reason") or "refused when the run ended"))
    if spec.run_dir is not None and rec.get("status") == "collected":
        with open_untrusted(spec.run_dir, COLLECTED_REL) as (_reader, size):
            if size != rec.get("bytes"):
                raise UntrustedFileError(
                    f"{COLLECTED_REL} has {size} bytes, but {rec.get('bytes')} were collected; refused"
                )
        return Collected(spec.run_dir / COLLECTED_REL, size, str(rec.get("sha256")))
    if spec.run_dir is not None:
        return copy_to(spec.run_dir, SUBMISSION_REL, tmp / "submission.csv")
    sub = spec.submission_path  # upstream's submissions file: the user named it
    return copy_to(sub.parent, sub.name, tmp / "submission.csv")


# ---------------------------------------------------------------- many runs


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
            report = empty_report(spec)
            report["error"] = (
                f"grading failed: out of memory or a crash (its worker process died; memory budget "
                f"{budget // MIB} MiB per worker, see --memory-mb); the other runs were graded"
            )
            return GradedRun(report, graded=False)


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
        order = sorted(range(n), key=lambda i: (-_size(specs[i]), _key(specs[i])))
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
                    report = empty_report(specs[i])
                    report["error"] = one_line(f"grading worker failed ({type(exc).__name__}): {exc}")
                    results[i] = GradedRun(report, graded=False)
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


# ---------------------------------------------------------------- the report


def aggregate(
    reports: Iterable[dict[str, Any]],
    backend: dict[str, str] | None = None,
    superseded: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Upstream's run-group report (same keys and sums) plus created_at, the grading backend and the
    superseded attempts of sweep pairs (listed, not in REPORTS, never counted)."""
    reports = list(reports)
    gold = sum(bool(r["gold_medal"]) for r in reports)
    silver = sum(bool(r["silver_medal"]) for r in reports)
    bronze = sum(bool(r["bronze_medal"]) for r in reports)
    group: dict[str, Any] = {
        "total_runs": len(reports),
        "total_runs_with_submissions": sum(bool(r["submission_exists"]) for r in reports),
        "total_valid_submissions": sum(bool(r["valid_submission"]) for r in reports),
        "total_medals": gold + silver + bronze,
        "total_gold_medals": gold,
        "total_silver_medals": silver,
        "total_bronze_medals": bronze,
        "total_above_median": sum(bool(r["above_median"]) for r in reports),
        "competition_reports": reports,
        "created_at": datetime.now(timezone.utc).isoformat(),
    }
    if backend is not None:
        group["grading_backend"] = backend.get("backend")
        group["grading_backend_version"] = backend.get("version")
    group["superseded_runs"] = list(superseded or [])
    return group


def write_json_atomic(path: Path, data: Any) -> None:
    """Write then rename, so a reader never sees half a report."""
    write_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def sort_key(report: dict[str, Any]) -> tuple[str, int, str, str]:
    seed = report.get("seed")
    seed_num = int(seed) if isinstance(seed, int) or (isinstance(seed, str) and seed.isdigit()) else 1 << 30
    return (str(report["competition_id"]), seed_num, str(seed), str(report.get("run_dir") or ""))


def fmt_num(x: Any) -> str:
    if x is None:
        return "-"
    return f"{float(x):.5f}".rstrip("0").rstrip(".") if abs(float(x)) < 1e6 else f"{float(x):.4g}"


def fmt_share(x: Any) -> str:
    """A share of the leaderboard's teams as a percentage ("-" when there is none)."""
    return "-" if x is None else f"{100.0 * float(x):.1f}%"


def medal_word(r: dict[str, Any]) -> str:
    for name in ("gold", "silver", "bronze"):
        if r.get(f"{name}_medal"):
            return name
    return "> median" if r.get("above_median") else "-"


def _run_label(r: dict[str, Any], root: Path | None) -> str:
    run_dir = r.get("run_dir")
    if run_dir:
        p = Path(run_dir)
        if root is not None:
            try:
                rel = p.relative_to(root)
                return str(rel) if str(rel) != "." else p.name
            except ValueError:
                pass
        return p.name
    return Path(r["submission_path"]).name


def format_table(reports: list[dict[str, Any]], root: Path | None = None) -> str:
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
    for r in sorted(reports, key=sort_key):
        if r["valid_submission"]:
            valid = "yes"
        elif not r["submission_exists"]:
            valid = "missing"
        else:
            valid = "no"
        better = {True: "lower", False: "higher", None: "?"}[r.get("is_lower_better")]
        label = _run_label(r, root)
        rows.append(
            [
                str(r["competition_id"]),
                "-" if r.get("seed") is None else str(r["seed"]),
                label,
                valid,
                fmt_num(r["score"]),
                medal_word(r),
                fmt_num(r["gold_threshold"]),
                fmt_num(r["silver_threshold"]),
                fmt_num(r["bronze_threshold"]),
                fmt_num(r["median_threshold"]),
                better,
                fmt_share(r.get("leaderboard_share_beaten")),
            ]
        )
        if r.get("error"):
            notes.append(f"  {r['competition_id']} {label}: {r['error']}")
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
    return "\n".join(out)


def format_totals(group: dict[str, Any]) -> str:
    return (
        f"runs {group['total_runs']}, with submission {group['total_runs_with_submissions']}, "
        f"valid {group['total_valid_submissions']}, medals {group['total_medals']} "
        f"(gold {group['total_gold_medals']}, silver {group['total_silver_medals']}, "
        f"bronze {group['total_bronze_medals']}), above median {group['total_above_median']}; "
        f"grader {group.get('grading_backend')} ({group.get('grading_backend_version')})"
    )
