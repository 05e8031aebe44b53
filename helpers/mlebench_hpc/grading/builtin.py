"""The built-in backend: upstream's grading procedures (procedures.py) for the competitions of
data/competitions.json, without upstream's package or scikit-learn.

Answers are parsed once at load (id order, sort order and id lookups precomputed); each
validate/score call parses only the submission and shares nothing mutable, so calls can run from
many threads at once.
"""

from __future__ import annotations

import math
from pathlib import Path

from .competitions import CompetitionSpec
from .errors import CompetitionNotPrepared, GradingSetupError, InvalidSubmission
from .messages import VALID_MESSAGE, invalid_message, missing_submission_message
from .procedures import PROCEDURES, Answers, as_text, header_verdict
from .thresholds import Thresholds, find_thresholds
from .validation import read_csv, read_header, read_submission


def engine_version() -> str:
    try:
        from importlib.metadata import version

        return f"mlebench-hpc {version('mlebench-hpc')}"
    except Exception:  # not installed as a distribution (e.g. run from a source tree)
        return "mlebench-hpc (source)"


class BuiltinCompetition:
    backend = "builtin"

    def __init__(
        self,
        spec: CompetitionSpec,
        data_dir: Path,
        mlebench_dir: Path | None = None,
        need_answers: bool = True,
    ) -> None:
        self.spec = spec
        self.competition_id = spec.competition_id
        self.backend_version = engine_version()
        self.is_lower_better = spec.lower_is_better
        self.data_dir = Path(data_dir)
        self.mlebench_dir = Path(mlebench_dir) if mlebench_dir else None
        self.answers_path = self.data_dir / spec.competition_id / "prepared" / "private" / spec.answers_file
        self._procedure = PROCEDURES[spec.procedure][0]
        self._pspec = spec.procedure_spec()
        self._answers = self._load_answers() if need_answers else None

    # ---- answers ---------------------------------------------------------------------------
    def _load_answers(self) -> Answers:
        cid, spec = self.competition_id, self.spec
        if not self.answers_path.is_file():
            raise CompetitionNotPrepared(
                f"competition {cid} is not prepared: {self.answers_path} is missing; "
                f"run `mlebench prepare -c {cid}` (demo-*: `mlebench-hpc prepare-demo`) with this data dir"
            )
        try:
            table = read_csv(self.answers_path)
        except (ValueError, UnicodeDecodeError) as e:
            raise GradingSetupError(
                f"answers of {cid} ({self.answers_path}) are not a readable CSV: {e}"
            ) from None
        missing = [c for c in (spec.id_column, *spec.target_columns) if c not in table.columns]
        if missing:
            raise GradingSetupError(
                f"answers of {cid} ({self.answers_path}) lack columns: {', '.join(missing)}"
            )
        if spec.procedure == "text_accuracy_by_sorted_id":
            # upstream compares answers.astype(str) (pandas 2.2: a missing cell is 'nan')
            table = table.assign(**{c: as_text(table[c].to_numpy()) for c in spec.target_columns})
        return Answers.from_frame(table, spec.id_column, spec.target_columns)

    # ---- submission --------------------------------------------------------------------------
    def _grade(self, submission_path: Path) -> float:
        """Upstream's procedure on the submission: its raw value, or InvalidSubmission."""
        if self._answers is None:
            raise GradingSetupError("competition loaded with need_answers=False cannot validate or score")
        path = Path(submission_path)
        if (
            self.spec.column_rule != "extra_columns_ignored"
            or self.spec.procedure == "auroc_columns_by_position"
        ):
            # upstream's verdict depends on the header alone here: decide before parsing the rows
            try:
                why = header_verdict(self._pspec, self.spec.procedure, read_header(path))
            except (ValueError, UnicodeDecodeError, OverflowError):
                why = None  # the full read below gives the reason
            if why:
                raise InvalidSubmission(why)
        try:
            sub = read_submission(path)
        except ValueError as e:
            raise InvalidSubmission(str(e)) from None
        try:
            return float(self._procedure(self._pspec, self._answers, sub))
        except (InvalidSubmission, GradingSetupError, MemoryError):
            raise  # MemoryError: out of the caller's memory budget, not a fault of the submission
        except Exception as e:  # upstream's Grader turns any exception of its grader into "invalid"
            raise InvalidSubmission(f"Submission could not be graded ({type(e).__name__}).") from None

    # ---- public API --------------------------------------------------------------------------
    def validate(self, submission_path: Path) -> tuple[bool, str]:
        path = Path(submission_path)
        if not path.is_file():
            return False, missing_submission_message(path)
        try:
            self._grade(path)
        except InvalidSubmission as e:
            return False, invalid_message(str(e))
        return True, VALID_MESSAGE

    def score(self, submission_path: Path) -> float:
        """upstream's Grader: round(score, 5); NaN (e.g. kappa of constant labels) stays NaN."""
        value = self._grade(Path(submission_path))
        return value if math.isnan(value) else round(value, 5)

    def thresholds(self) -> Thresholds | None:
        found = find_thresholds(self.competition_id, self.data_dir, self.mlebench_dir)
        return found[0] if found else None


__all__ = ["BuiltinCompetition", "engine_version"]
