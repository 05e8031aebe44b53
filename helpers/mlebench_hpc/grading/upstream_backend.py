"""Adapter to upstream MLE-bench (`import mlebench`), used when it is installed.

Kept deliberately small: upstream's registry finds the competition, upstream's load_answers
reads the answers once, and upstream's own grade function does all checks and scoring. Only
two things differ from upstream's `validate_submission`: the answers are not re-read per call,
and they are copied per call, since some upstream graders modify the frames they are given.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

from .errors import CompetitionNotPrepared, GradingSetupError, InvalidSubmission, UnknownCompetition
from .messages import VALID_MESSAGE, missing_submission_message, upstream_invalid_message
from .thresholds import Thresholds, find_thresholds, leaderboard_is_lower_better


def available() -> bool:
    return importlib.util.find_spec("mlebench") is not None


def version() -> str:
    try:
        from importlib.metadata import version as dist_version

        return f"mlebench {dist_version('mlebench')}"
    except Exception:
        return "mlebench (unknown version)"


class UpstreamCompetition:
    backend = "upstream"

    def __init__(
        self, competition_id: str, data_dir: Path, mlebench_dir: Path | None, need_answers: bool
    ) -> None:
        from mlebench.registry import registry
        from mlebench.utils import load_answers

        self.competition_id = competition_id
        self.backend_version = version()
        self.data_dir = Path(data_dir)
        self.mlebench_dir = Path(mlebench_dir) if mlebench_dir else None
        try:
            self._competition = registry.set_data_dir(self.data_dir).get_competition(competition_id)
        except Exception as e:
            raise UnknownCompetition(
                f"upstream mlebench does not know competition {competition_id}: {e}"
            ) from None
        answers = Path(self._competition.answers)
        if need_answers and not answers.is_file():
            raise CompetitionNotPrepared(
                f"competition {competition_id} is not prepared: {answers} is missing; "
                f"run `mlebench prepare -c {competition_id}` with this data dir"
            )
        self._answers: Any = load_answers(answers) if need_answers else None
        self.is_lower_better = self._direction()

    def _direction(self) -> bool:
        """Upstream derives the direction from the leaderboard; without one we fall back to our spec."""
        try:
            found = find_thresholds(self.competition_id, self.data_dir, self.mlebench_dir)
        except GradingSetupError:
            found = None
        if found and found[1]:
            return leaderboard_is_lower_better(found[1])
        leaderboard = Path(getattr(self._competition, "leaderboard", ""))
        if leaderboard.is_file():
            try:
                import pandas as pd

                scores = pd.read_csv(leaderboard)["score"].tolist()
                return leaderboard_is_lower_better(scores)
            except Exception:
                pass
        from .competitions import get_spec

        spec = get_spec(self.competition_id)
        return spec.lower_is_better if spec else False

    def _grade(self, submission_path: Path) -> float:
        from mlebench.utils import read_csv

        if self._answers is None:
            raise GradingSetupError("competition loaded with need_answers=False cannot validate or score")
        return self._competition.grader.grade_fn(read_csv(submission_path), copy.deepcopy(self._answers))

    def validate(self, submission_path: Path) -> tuple[bool, str]:
        path = Path(submission_path)
        if not path.is_file():
            return False, missing_submission_message(path)
        try:
            self._grade(path)
        except (GradingSetupError, MemoryError):
            raise  # MemoryError: out of the caller's memory budget (the server's validation workers)
        except Exception as e:  # upstream's wording exactly
            return False, upstream_invalid_message(e)
        return True, VALID_MESSAGE

    def score(self, submission_path: Path) -> float:
        try:
            value = self._grade(Path(submission_path))
        except GradingSetupError:
            raise
        except Exception as e:
            raise InvalidSubmission(" ".join(str(e).split()) or type(e).__name__) from None
        if value is None:
            raise InvalidSubmission("upstream grader returned no score")
        return round(float(value), 5)

    def thresholds(self) -> Thresholds | None:
        found = find_thresholds(self.competition_id, self.data_dir, self.mlebench_dir)
        return found[0] if found else None
