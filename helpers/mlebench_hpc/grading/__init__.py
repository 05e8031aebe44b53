"""Grading engine: load a competition once, then validate and score submissions.

Backend: upstream `mlebench` when it is importable (inside an image built from a user's
MLE-bench checkout), else the built-in registry (data/competitions.json, loaded by competitions.py)
with upstream's grading procedures (procedures.py) and our own metrics.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from .errors import CompetitionNotPrepared, GradingSetupError, InvalidSubmission, UnknownCompetition
from .thresholds import Thresholds, medal_flags, rank_thresholds

__all__ = [
    "CompetitionNotPrepared",
    "GradingSetupError",
    "InvalidSubmission",
    "LoadedCompetition",
    "Thresholds",
    "UnknownCompetition",
    "backend_info",
    "load_competition",
    "medal_flags",
    "rank_thresholds",
]


class LoadedCompetition(Protocol):
    competition_id: str
    backend: str
    backend_version: str
    is_lower_better: bool

    def validate(self, submission_path: Path) -> tuple[bool, str]: ...
    def score(self, submission_path: Path) -> float: ...
    def thresholds(self) -> Thresholds | None: ...


def _upstream_available() -> bool:
    # MLEBENCH_HPC_BACKEND=builtin forces our own graders even where mlebench is installed.
    if os.environ.get("MLEBENCH_HPC_BACKEND", "").lower() == "builtin":
        return False
    from . import upstream_backend

    return upstream_backend.available()


def backend_info() -> dict[str, str]:
    if _upstream_available():
        from . import upstream_backend

        return {"backend": "upstream", "version": upstream_backend.version()}
    from .builtin import engine_version

    return {"backend": "builtin", "version": engine_version()}


def load_competition(
    competition_id: str, data_dir: Path, mlebench_dir: Path | None = None, need_answers: bool = True
) -> LoadedCompetition:
    """Load a competition; parses the answers once (unless need_answers=False).

    mlebench_dir (an upstream MLE-bench checkout, for its leaderboards) defaults to $MLEBENCH_DIR.
    """
    if mlebench_dir is None and os.environ.get("MLEBENCH_DIR"):
        mlebench_dir = Path(os.environ["MLEBENCH_DIR"]).expanduser()
    data_dir = Path(data_dir).expanduser()
    if _upstream_available():
        from .upstream_backend import UpstreamCompetition

        return UpstreamCompetition(competition_id, data_dir, mlebench_dir, need_answers)
    from .builtin import BuiltinCompetition
    from .competitions import get_spec

    spec = get_spec(competition_id)
    if spec is None:
        raise UnknownCompetition(
            f"competition {competition_id} is not in the built-in registry (data/competitions.json); "
            "use an image with upstream mlebench installed"
        )
    return BuiltinCompetition(spec, data_dir, mlebench_dir, need_answers)
