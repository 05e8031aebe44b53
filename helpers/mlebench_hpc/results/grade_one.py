"""Grading one run, in a worker process: its CompetitionReport, never an exception.

Each worker parses a competition's answers once and reuses them for every run of that competition
it grades. The submission was written by an agent: it is read only through mlebench_hpc.untrusted."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mlebench_hpc.grading.messages import one_line
from mlebench_hpc.results.find_runs import RunSpec
from mlebench_hpc.results.report import CompetitionReport, now_utc
from mlebench_hpc.untrusted import (
    COLLECTED_REL,
    SUBMISSION_REL,
    Collected,
    UntrustedFileError,
    copy_to,
    open_untrusted,
)

OOM_MESSAGE = "grading failed: out of memory (over the memory budget per grading worker, see --memory-mb)"


@dataclass(frozen=True)
class GradedRun:
    report: CompetitionReport
    graded: bool  # False when the competition itself could not be loaded (setup error)


# Per process: (competition, data dir, mlebench dir) -> loaded competition (answers parsed once),
# and its thresholds (or the setup error they raised).
_COMPETITIONS: dict[tuple[str, str, str], Any] = {}
_THRESHOLDS: dict[tuple[str, str, str], tuple[Any, str | None]] = {}


def competition_key(spec: RunSpec) -> tuple[str, str, str]:
    return (spec.competition_id, str(spec.data_dir), str(spec.mlebench_dir or ""))


def _load(spec: RunSpec) -> Any:
    from mlebench_hpc.grading import load_competition

    key = competition_key(spec)
    if key not in _COMPETITIONS:
        _COMPETITIONS[key] = load_competition(spec.competition_id, spec.data_dir, spec.mlebench_dir)
    return _COMPETITIONS[key]


def _thresholds(spec: RunSpec, comp: Any) -> tuple[Any, str | None]:
    from mlebench_hpc.grading import GradingSetupError

    key = competition_key(spec)
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


def empty_report(spec: RunSpec, error: str | None = None) -> CompetitionReport:
    """The report of a run not (yet) graded: no score, no medal, nothing known of the competition."""
    sub = spec.submission_path
    collected = spec.collected.get("status") == "collected" if spec.collected else False
    return CompetitionReport(
        competition_id=spec.competition_id,
        score=None,
        gold_threshold=None,
        silver_threshold=None,
        bronze_threshold=None,
        median_threshold=None,
        any_medal=False,
        gold_medal=False,
        silver_medal=False,
        bronze_medal=False,
        above_median=False,
        # upstream: a submission exists when it is a file with a .csv suffix (never followed here)
        submission_exists=collected or (_present(sub) and sub.suffix.lower() == ".csv"),
        valid_submission=False,
        is_lower_better=None,
        created_at=now_utc(),
        submission_path=str(sub),
        run_dir=str(spec.run_dir) if spec.run_dir is not None else None,
        seed=spec.seed,
        error=error,
        isolation=spec.isolation,
        data_dir=str(spec.data_dir),
        recorded_data_dir=_recorded_if_different(spec),
        agent_id=spec.agent_id,
    )


def _recorded_if_different(spec: RunSpec) -> str | None:
    """The data dir the run's metadata.json records, when it is not the one graded against."""
    rec = spec.recorded_data_dir
    if not rec or os.path.realpath(Path(rec).expanduser()) == os.path.realpath(spec.data_dir):
        return None
    return rec


def _with_thresholds(report: CompetitionReport, th: Any) -> CompetitionReport:
    if th is None:
        return replace(report, thresholds_source="unknown")
    return replace(
        report,
        gold_threshold=float(th.gold),
        silver_threshold=float(th.silver),
        bronze_threshold=float(th.bronze),
        median_threshold=float(th.median),
        thresholds_source=th.source,
    )


def _with_placement(report: CompetitionReport, th: Any) -> CompetitionReport:
    """Beyond upstream: the rank the score would take among the leaderboard's teams and the share
    of teams it beats (ties neither beaten nor better: thresholds.leaderboard_placement)."""
    from mlebench_hpc.grading.thresholds import leaderboard_placement

    score = report.score
    if score is None or th is None or not th.scores or math.isnan(score):
        return report
    place = leaderboard_placement(score, th.scores, bool(report.is_lower_better))
    return replace(
        report,
        leaderboard_rank=place.rank,
        leaderboard_share_beaten=round(place.share_beaten, 6),
        leaderboard_teams=place.n_teams,
    )


def grade_run(spec: RunSpec) -> GradedRun:
    """Grade one run. Never raises: every failure ends up as the report's one-line `error`."""
    from mlebench_hpc.grading import GradingSetupError, InvalidSubmission, backend_info, medal_flags

    report = empty_report(spec)
    try:
        info = backend_info()
        report = replace(report, grading_backend=info["backend"], grading_backend_version=info["version"])
        try:
            comp = _load(spec)
        except GradingSetupError as exc:
            report = replace(report, error=one_line(exc))
            meta = _metadata_only(spec)
            if meta is not None:
                report = replace(report, is_lower_better=bool(meta.is_lower_better))
                with contextlib.suppress(Exception):  # thresholds are informative here only
                    report = _with_thresholds(report, meta.thresholds())
            return GradedRun(report, graded=False)

        report = replace(
            report,
            grading_backend=comp.backend,
            grading_backend_version=comp.backend_version,
            is_lower_better=bool(comp.is_lower_better),
        )
        th, th_error = _thresholds(spec, comp)
        report = _with_thresholds(report, th)

        score: float | None = None
        if spec.failed_attempt:
            report = replace(
                report,
                error=one_line(f"failed attempt, not graded: {spec.failed_attempt} (a resume runs it again)"),
            )
        elif not report.submission_exists:
            sub = spec.submission_path
            what = "is not a .csv file" if _present(sub) else "does not exist"
            report = replace(report, error=f"no submission: {sub} {what}")
        else:
            with tempfile.TemporaryDirectory(prefix="mlebench-grade-") as tmp:
                try:
                    graded = _submission_to_grade(spec, Path(tmp))
                except UntrustedFileError as exc:
                    report = replace(report, error=one_line(f"submission refused: {exc}"))
                else:
                    shown = graded.path if graded.path.parent != Path(tmp) else spec.submission_path
                    report = replace(report, submission_path=str(shown), submission_sha256=graded.sha256)
                    try:
                        score = float(comp.score(graded.path))
                    except InvalidSubmission as exc:
                        report = replace(report, error=one_line(exc))
                    except MemoryError:
                        report = replace(report, error=OOM_MESSAGE)
                    except Exception as exc:  # upstream's Grader also counts any error as invalid
                        report = replace(
                            report, error=one_line(f"grader error ({type(exc).__name__}): {exc}")
                        )
        report = replace(report, score=score, valid_submission=score is not None)
        flags = medal_flags(score, th, report.is_lower_better)
        report = _with_placement(report, th)
        report = replace(
            report,
            **{
                name: bool(flags[name])
                for name in ("gold_medal", "silver_medal", "bronze_medal", "any_medal", "above_median")
            },
        )
        if th_error and not report.error:
            report = replace(report, error=f"thresholds unavailable: {th_error}")
        return GradedRun(report, graded=True)
    except Exception as exc:  # one broken run must not lose the others
        return GradedRun(
            replace(report, error=one_line(f"internal error ({type(exc).__name__}): {exc}")), False
        )


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
