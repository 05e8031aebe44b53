"""The built-in backend: our own checks and metrics for the competitions in competitions.py.

Answers are parsed once, sorted by id and hashed by id at load; each validate/score call parses
only the submission and aligns it to the answers with array operations, so calls share nothing
mutable and can run from many threads at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_float_dtype, is_integer_dtype, is_numeric_dtype

from . import metrics
from .competitions import CompetitionSpec
from .errors import CompetitionNotPrepared, GradingSetupError, InvalidSubmission
from .thresholds import Thresholds, find_thresholds
from .validation import (
    VALID_MESSAGE,
    describe_id_mismatch,
    invalid_message,
    read_csv,
    read_submission,
)

SIMPLEX_TOLERANCE = 1e-6  # upstream's row-sum tolerance for class probabilities


def engine_version() -> str:
    try:
        from importlib.metadata import version

        return f"mlebench-hpc {version('mlebench-hpc')}"
    except Exception:  # not installed as a distribution (e.g. run from a source tree)
        return "mlebench-hpc (source)"


@dataclass(frozen=True)
class _Answers:
    ids: np.ndarray  # file order, as strings
    index: pd.Index  # id -> file position, for describing mismatches
    position: dict[str, int]  # id -> file position; read-only after load, so safe across threads
    sort_order: np.ndarray  # file positions in id order
    targets: np.ndarray  # in id order; 1-d for one target, else (n, k)
    keep: np.ndarray | None  # rows (in id order) that are scored
    # Fixed-width copies for the vectorised match of shuffled submissions (numpy compares code
    # points, as Python does): ids sorted, and the file position of each.
    sorted_fixed: np.ndarray
    fixed_order: np.ndarray


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
        self.answers_path = self.data_dir / spec.competition_id / "prepared" / "private" / spec.answers
        self._text = spec.targets if spec.kind == "text" else ()
        self._answers = self._load_answers() if need_answers else None

    # ---- answers ---------------------------------------------------------------------------
    def _load_answers(self) -> _Answers:
        cid, spec = self.competition_id, self.spec
        if not self.answers_path.is_file():
            raise CompetitionNotPrepared(
                f"competition {cid} is not prepared: {self.answers_path} is missing; "
                f"run `mlebench prepare -c {cid}` (demo-*: `mlebench-hpc prepare-demo`) with this data dir"
            )
        table = read_csv(self.answers_path, text_columns=self._text, str_columns=(spec.id_column,))
        missing = [c for c in (spec.id_column, *spec.targets) if c not in table.columns]
        if missing:
            raise GradingSetupError(
                f"answers of {cid} ({self.answers_path}) lack columns: {', '.join(missing)}"
            )
        ids = table[spec.id_column].to_numpy(dtype=object)
        index = pd.Index(ids)
        if not index.is_unique or table[spec.id_column].isna().any():
            raise GradingSetupError(f"answers of {cid} ({self.answers_path}) have missing or repeated ids")
        index.get_indexer(ids[:1])  # build the hash table now, not lazily inside a request thread
        position = dict(zip(ids.tolist(), range(len(ids)), strict=True))
        sort_order = np.argsort(ids, kind="stable")
        targets = self._answer_targets(table)[sort_order]
        keep = None
        if spec.drop_answer_rows_all_minus_one:
            keep = np.atleast_2d(targets.T).T.sum(axis=1) >= 0
        try:  # ASCII ids (all of upstream's): bytes sort and compare fastest
            fixed = ids.astype("S")
        except UnicodeEncodeError:
            fixed = np.empty(0, dtype="S1")
        fixed_order = np.argsort(fixed, kind="stable")
        sorted_fixed = fixed[fixed_order]
        for arr in (ids, sort_order, targets, sorted_fixed, fixed_order):
            arr.flags.writeable = False  # shared by all threads: make accidental writes fail loudly
        return _Answers(ids, index, position, sort_order, targets, keep, sorted_fixed, fixed_order)

    def _answer_targets(self, table: pd.DataFrame) -> np.ndarray:
        cols = list(self.spec.targets)
        kind = self.spec.kind
        if kind == "text":
            return table[cols[0]].astype(str).to_numpy(dtype=object)
        if kind == "bool":
            col = table[cols[0]]
            if not is_bool_dtype(col):
                raise GradingSetupError(f"answers of {self.competition_id}: column {cols[0]} is not boolean")
            return col.to_numpy(dtype=bool)
        if not all(is_numeric_dtype(table[c]) for c in cols):
            raise GradingSetupError(f"answers of {self.competition_id}: target columns are not numeric")
        values = table[cols].to_numpy(dtype=np.float64)
        return values[:, 0] if len(cols) == 1 else values

    # ---- submission --------------------------------------------------------------------------
    def _aligned_predictions(self, submission_path: Path) -> np.ndarray:
        """Parse and check the submission; return its targets in the answers' id order."""
        spec, ans = self.spec, self._answers
        if ans is None:
            raise GradingSetupError("competition loaded with need_answers=False cannot validate or score")
        try:
            sub = read_submission(Path(submission_path), spec.id_column, self._text)
        except ValueError as e:
            raise InvalidSubmission(str(e)) from None
        required = [spec.id_column, *spec.targets]
        missing = [c for c in required if c not in sub.columns]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise InvalidSubmission(f"Submission is missing required columns: {shown}.")
        if not spec.extra_columns_ok:
            extra = [str(c) for c in sub.columns if c not in set(required)]
            if extra:
                raise InvalidSubmission(
                    f"Submission has unexpected columns: {', '.join(extra[:5])}; "
                    f"expected exactly '{spec.id_column}' and the {len(spec.targets)} target columns."
                )
        n = len(ans.ids)
        if len(sub) != n:
            raise InvalidSubmission(f"Submission has {len(sub)} rows but the test set has {n}.")
        position = self._answer_positions(sub[spec.id_column].to_numpy(dtype=object))
        preds = self._submission_targets(sub)
        # Row of the submission holding each answer row, in the answers' id order.
        rows_of_answer = np.empty(n, dtype=np.intp)
        rows_of_answer[position] = np.arange(n)
        return preds[rows_of_answer[ans.sort_order]]

    def _answer_positions(self, sub_ids: np.ndarray) -> np.ndarray:
        ans = self._answers
        assert ans is not None
        n = len(ans.ids)
        # Fast path: the submission lists the ids in the answers' order (the sample submission's).
        if np.array_equal(sub_ids, ans.ids):
            return np.arange(n)
        if n > 1 and len(ans.sorted_fixed) == n:
            # Shuffled rows, every id once: sort the submission's ids as bytes (C compares, no
            # hashing) and compare with the answers' sorted ids: 2-3x faster than hashing a million
            # fresh strings. Submission row o[j] holds the j-th smallest id.
            try:
                fixed = sub_ids.astype("S")
            except UnicodeEncodeError:
                fixed = None
            if fixed is not None:
                o = np.argsort(fixed, kind="stable")
                # a missing id (NaN) turns into b"nan": only a match if no cell was missing
                if np.array_equal(fixed[o], ans.sorted_fixed) and not pd.isna(sub_ids).any():
                    position = np.empty(n, dtype=np.intp)
                    position[o] = ans.fixed_order
                    return position
        if n > 1:
            # Usual case: every id known. itemgetter does all dict lookups in one C loop.
            try:
                position = np.fromiter(itemgetter(*sub_ids)(ans.position), dtype=np.intp, count=n)
            except (KeyError, TypeError):
                pass
            else:
                if np.bincount(position, minlength=n).max() == 1:
                    return position
        position = ans.index.get_indexer(sub_ids)
        found = position[position >= 0]
        counts = np.bincount(found, minlength=n)
        n_extra = int((position < 0).sum())
        n_missing = int((counts == 0).sum())
        n_dup = int((counts > 1).sum()) + _n_repeated_unknown(sub_ids[position < 0])
        if n_extra or n_missing or n_dup:
            raise InvalidSubmission(describe_id_mismatch(self.spec.id_column, n_missing, n_extra, n_dup))
        return position

    def _submission_targets(self, sub: pd.DataFrame) -> np.ndarray:
        spec, kind = self.spec, self.spec.kind
        cols = list(spec.targets)
        if kind == "text":
            return sub[cols[0]].astype(str).to_numpy(dtype=object)
        if kind == "bool":
            return _bool_column(sub[cols[0]], cols[0])
        values = np.column_stack([_numeric_column(sub[c], c) for c in cols])
        if kind == "int_label":
            v = values[:, 0]
            if not np.all(v == np.round(v)) or not np.isin(v, spec.labels).all():
                n_bad = int((~np.isin(v, spec.labels)).sum())
                raise InvalidSubmission(
                    f"Submission column '{cols[0]}' must hold integer labels from "
                    f"{min(spec.labels)} to {max(spec.labels)}; {n_bad} values are not."
                )
            return v.astype(np.int64)
        if kind in ("probability", "simplex"):
            bad = (values < 0) | (values > 1)
            if bad.any():
                col = cols[int(np.flatnonzero(bad.any(axis=0))[0])]
                raise InvalidSubmission(
                    f"Submission column '{col}' must hold probabilities between 0 and 1; "
                    f"{int(bad.any(axis=1).sum())} rows do not."
                )
        if kind == "simplex":
            off = ~np.isclose(values.sum(axis=1), 1.0, atol=SIMPLEX_TOLERANCE)
            if off.any():
                raise InvalidSubmission(
                    f"Each row's class probabilities must sum to 1 (within {SIMPLEX_TOLERANCE:g}); "
                    f"{int(off.sum())} rows do not."
                )
            return values
        if kind == "nonneg" and (values < 0).any():
            n_bad = int((values < 0).any(axis=1).sum())
            raise InvalidSubmission(f"Submission target columns must be non-negative; {n_bad} rows are not.")
        return values[:, 0] if len(cols) == 1 else values

    # ---- public API --------------------------------------------------------------------------
    def validate(self, submission_path: Path) -> tuple[bool, str]:
        path = Path(submission_path)
        if not path.is_file():
            return False, f"Submission invalid! Submission file {path} does not exist."
        try:
            self._aligned_predictions(path)
        except InvalidSubmission as e:
            return False, invalid_message(str(e))
        except GradingSetupError:
            raise
        except Exception as e:  # never raise on a bad submission; never echo details of answers
            return False, invalid_message(f"Submission could not be checked ({type(e).__name__}).")
        return True, VALID_MESSAGE

    def score(self, submission_path: Path) -> float:
        preds = self._aligned_predictions(Path(submission_path))
        ans = self._answers
        assert ans is not None
        truth = ans.targets
        if ans.keep is not None:
            truth, preds = truth[ans.keep], preds[ans.keep]
        try:
            value = metrics.METRICS[self.spec.metric](truth, preds)
        except metrics.MetricError as e:
            raise InvalidSubmission(f"The metric is undefined for this submission ({e}).") from None
        return round(float(value), 5)

    def thresholds(self) -> Thresholds | None:
        found = find_thresholds(self.competition_id, self.data_dir, self.mlebench_dir)
        return found[0] if found else None


def _n_repeated_unknown(unknown_ids: np.ndarray) -> int:
    if len(unknown_ids) < 2:
        return 0
    counts = pd.Series(unknown_ids).value_counts(dropna=False)
    return int((counts > 1).sum())


def _numeric_column(col: pd.Series, name: str) -> np.ndarray:
    if is_bool_dtype(col) or not is_numeric_dtype(col):
        raise InvalidSubmission(f"Submission column '{name}' must hold numbers.")
    values = col.to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(values).any():
        raise InvalidSubmission(
            f"Submission column '{name}' has {int(np.isnan(values).sum())} missing values."
        )
    if not np.isfinite(values).all():
        raise InvalidSubmission(
            f"Submission column '{name}' has {int((~np.isfinite(values)).sum())} infinite values."
        )
    return values


def _bool_column(col: pd.Series, name: str) -> np.ndarray:
    """True/False as pandas spells them (True/TRUE/true...), or 0/1 (upstream compares with ==)."""
    if is_bool_dtype(col):
        return col.to_numpy(dtype=bool)
    if is_integer_dtype(col) or is_float_dtype(col):
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isin(values, (0.0, 1.0)).all():
            return values.astype(bool)
    n_missing = int(col.isna().sum())
    if n_missing:
        raise InvalidSubmission(f"Submission column '{name}' has {n_missing} missing values.")
    raise InvalidSubmission(f"Submission column '{name}' must hold True or False in every row.")
