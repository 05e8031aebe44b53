"""Upstream's grading procedures, step by step, on answers parsed once.

Each procedure reproduces what one family of upstream MLE-bench graders does with the submission
pandas read (at upstream's pins: pandas 2.2, scikit-learn 1.5): which columns it looks up, by name
or by position; how it lines rows up (sorting both tables by id and comparing, comparing id sets,
sorting without comparing, or plain row order); which values it refuses before the metric; and the
checks scikit-learn then makes (sklearn_checks.py). A case upstream scores is scored with the same
value; a case where any step of upstream's raises is invalid, with our own one-line reason that
names columns and counts, never an answer value. The conformance vectors (tests/conformance/)
prove this case by case; quirks that a careful grader would refuse are listed in the README.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter

import numpy as np
import pandas as pd

from . import metrics
from .errors import InvalidSubmission
from .sklearn_checks import MetricInputError, as_float, classification_targets, unique_labels

SUM_TOLERANCE = 1e-6  # upstream's atol for rows of class probabilities (np.isclose, rtol 1e-5 too)


def upstream_sort_order(values: np.ndarray) -> np.ndarray:
    """The row order pandas' sort_values(kind="quicksort") gives: missing values last, the rest by
    numpy's (unstable, deterministic) quicksort, exactly as pandas 2.2's nargsort does it."""
    mask = np.asarray(pd.isna(values), dtype=bool)
    if not mask.any():
        return values.argsort(kind="quicksort")
    idx = np.arange(len(values))
    return np.concatenate([idx[~mask][values[~mask].argsort(kind="quicksort")], idx[mask]])


def sort_index_order(values: np.ndarray) -> np.ndarray:
    """pandas' DataFrame.sort_index(): no reordering when the index is already increasing."""
    try:
        if pd.Index(values).is_monotonic_increasing:
            return np.arange(len(values))
    except TypeError:
        pass
    return upstream_sort_order(values)


@dataclass(frozen=True)
class Answers:
    """The answers, parsed once; read-only, shared by all request threads."""

    n: int
    columns: tuple[str, ...]
    ids: np.ndarray  # id column in file order, dtype as pandas 2.2 infers it
    order: np.ndarray  # upstream's sort of the ids
    sorted_ids: np.ndarray
    unique: bool
    id_set: frozenset
    values: dict[str, np.ndarray]  # target columns in file order
    position: dict | None  # string id -> file row (unique string ids only)
    sorted_bytes: np.ndarray  # ASCII ids sorted as bytes, for the fast match of shuffled rows
    bytes_order: np.ndarray

    @classmethod
    def from_frame(cls, table: pd.DataFrame, id_column: str, targets: tuple[str, ...]) -> Answers:
        ids = table[id_column].to_numpy()
        order = upstream_sort_order(ids)
        unique = bool(pd.Index(ids).is_unique)
        position = None
        sorted_bytes = bytes_order = np.empty(0, dtype="S1")
        if unique and ids.dtype == object and all(isinstance(v, str) for v in ids.tolist()):
            position = dict(zip(ids.tolist(), range(len(ids)), strict=True))
            try:  # ASCII ids (all of upstream's): bytes sort and compare fastest
                fixed = ids.astype("S")
                bytes_order = np.argsort(fixed, kind="stable")
                sorted_bytes = fixed[bytes_order]
            except UnicodeEncodeError:
                pass
        values = {c: table[c].to_numpy() for c in targets}
        arrays = [ids, order, sorted_bytes, bytes_order, *values.values()]
        for arr in arrays:
            arr.flags.writeable = False  # shared by all threads: make accidental writes fail loudly
        return cls(
            n=len(ids), columns=tuple(str(c) for c in table.columns), ids=ids, order=order,
            sorted_ids=ids[order], unique=unique, id_set=frozenset(ids.tolist()), values=values,
            position=position, sorted_bytes=sorted_bytes, bytes_order=bytes_order,
        )  # fmt: skip


@dataclass(frozen=True)
class Spec:
    """What a procedure needs of a competition spec (competitions.CompetitionSpec)."""

    competition_id: str
    id_column: str
    targets: tuple[str, ...]
    column_rule: str
    unscored_rows: str


# ---------------------------------------------------------------------------------- helpers
def _need(sub: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in sub.columns]
    if missing:
        shown = ", ".join(f"'{c}'" for c in missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise InvalidSubmission(f"Submission is missing required columns: {shown}.")


def _same_length(sub: pd.DataFrame, ans: Answers) -> None:
    if len(sub) != ans.n:
        raise InvalidSubmission(f"Submission has {len(sub)} rows but the test set has {ans.n}.")


def _column(sub: pd.DataFrame, name: str) -> np.ndarray:
    col = sub[name]
    if isinstance(col, pd.DataFrame):  # cannot happen with pandas' mangled names; be explicit
        raise InvalidSubmission(f"Submission has column '{name}' more than once.")
    return col.to_numpy()


def _id_mismatch(spec: Spec, ans: Answers, sub_ids: np.ndarray) -> InvalidSubmission:
    """Counts of missing, unknown and repeated ids (never the ids of the answers themselves)."""
    try:
        index = pd.Index(ans.ids)
        position = index.get_indexer_for(sub_ids) if not ans.unique else index.get_indexer(sub_ids)
        position = np.asarray(position)[: len(sub_ids)]
        found = position[position >= 0]
        counts = np.bincount(found, minlength=ans.n)
        n_unknown = int((position < 0).sum())
        n_missing = int((counts == 0).sum())
        n_dup = int((counts > 1).sum()) if ans.unique else 0
    except (TypeError, ValueError):
        return InvalidSubmission(f"Submission column '{spec.id_column}' does not match the test set ids.")
    parts = []
    if n_missing:
        parts.append(f"{n_missing} expected ids are missing")
    if n_unknown:
        parts.append(f"{n_unknown} ids are not in the test set")
    if n_dup:
        parts.append(f"{n_dup} ids appear more than once")
    if not parts:
        parts.append("ids differ in type or in how often they repeat")
    return InvalidSubmission(
        f"Submission column '{spec.id_column}' does not match the test set ids: {', '.join(parts)}."
    )


def align_by_sorted_ids(spec: Spec, ans: Answers, sub_ids: np.ndarray) -> np.ndarray:
    """Upstream's `sub.sort_values(id)` vs `answers.sort_values(id)` and `(ids != ids).any()`.

    Returns the submission rows in upstream's sorted order (row j pairs with answer row
    ans.order[j]); raises when upstream's comparison finds a difference. Lengths are equal here.
    """
    n = ans.n
    # Fast path: the sample submission's order. Equal ids sort identically, duplicates included.
    if np.array_equal(sub_ids, ans.ids):
        return ans.order
    if ans.position is not None and sub_ids.dtype == object:
        # Unique string ids: upstream's comparison passes iff the rows are a permutation of the
        # answers' ids; the sorted submission then pairs each row with the answer of its id.
        if len(ans.sorted_bytes) == n:
            try:
                fixed = sub_ids.astype("S")
            except (UnicodeEncodeError, TypeError, ValueError):
                fixed = None
            if fixed is not None and not pd.isna(sub_ids).any():
                o = np.argsort(fixed, kind="stable")
                if np.array_equal(fixed[o], ans.sorted_bytes):
                    position = np.empty(n, dtype=np.intp)
                    position[o] = ans.bytes_order
                    return _rows_for(position, ans)
        try:
            position = np.fromiter(itemgetter(*sub_ids.tolist())(ans.position), dtype=np.intp, count=n)
        except (KeyError, TypeError):
            raise _id_mismatch(spec, ans, sub_ids) from None
        if np.bincount(position, minlength=n).max() != 1:
            raise _id_mismatch(spec, ans, sub_ids)
        return _rows_for(position, ans)
    # Exact: sort as pandas does and compare element by element as numpy does.
    try:
        order = upstream_sort_order(sub_ids)
        differ = np.asarray(sub_ids[order] != ans.sorted_ids)
    except (TypeError, ValueError):
        raise InvalidSubmission(
            f"Submission column '{spec.id_column}' mixes values that cannot be sorted together."
        ) from None
    if differ.any():
        raise _id_mismatch(spec, ans, sub_ids)
    return order


def _rows_for(position: np.ndarray, ans: Answers) -> np.ndarray:
    """position[i] = answer row of submission row i -> submission rows in answers' sorted order."""
    rows_of_answer = np.empty(ans.n, dtype=np.intp)
    rows_of_answer[position] = np.arange(ans.n)
    return rows_of_answer[ans.order]


def _check_probability_column(sub: pd.DataFrame, name: str) -> None:
    """prepare_for_auroc_metric: pd.to_numeric must accept the column, then min >= 0 and max <= 1."""
    col = sub[name]
    try:
        pd.to_numeric(col)
    except (ValueError, TypeError):
        raise InvalidSubmission(f"Submission column '{name}' must hold numbers.") from None
    try:
        below, above = bool(col.min() < 0), bool(col.max() > 1)
    except TypeError:
        raise InvalidSubmission(f"Submission column '{name}' must hold numbers.") from None
    if below or above:
        raise InvalidSubmission(f"Submission column '{name}' must hold probabilities between 0 and 1.")


def _in_unit_interval(frame: pd.DataFrame, columns: list[str]) -> None:
    """`((sub[cols] >= 0) & (sub[cols] <= 1)).all().all()` as upstream writes it (NaN fails)."""
    try:
        ok = ((frame[columns] >= 0) & (frame[columns] <= 1)).to_numpy().all()
    except TypeError:
        raise InvalidSubmission("Submission probability columns must hold numbers.") from None
    if not ok:
        raise InvalidSubmission("All probabilities must be between 0 and 1 (and not missing).")


def _rows_sum_to_one(frame: pd.DataFrame, columns: list[str]) -> None:
    try:
        sums = frame[columns].sum(axis=1).to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidSubmission("Submission probability columns must hold numbers.") from None
    off = ~np.isclose(sums, 1, atol=SUM_TOLERANCE)
    if off.any():
        raise InvalidSubmission(
            f"Each row's class probabilities must sum to 1; {int(off.sum())} rows do not."
        )


def _roc_auc(y_true: np.ndarray, y_score: np.ndarray, what: str) -> float:
    score = as_float(y_score, what, keep_bool=True).astype(np.float64)
    try:
        return metrics.roc_auc(y_true, score)
    except metrics.MetricError as e:
        raise InvalidSubmission(
            f"{what} cannot be graded: ROC AUC is undefined for it ({type(e).__name__})."
        ) from None


# ------------------------------------------------------------------------------- procedures
def auroc_by_sorted_id(spec: Spec, ans: Answers, sub: pd.DataFrame) -> float:
    """prepare_for_auroc_metric + roc_auc_score (one target column)."""
    target = spec.targets[0]
    return _auroc_one(spec, ans, sub, target)


def _auroc_one(spec: Spec, ans: Answers, sub: pd.DataFrame, target: str) -> float:
    _need(sub, [spec.id_column, target])
    _same_length(sub, ans)
    _check_probability_column(sub, target)
    rows = align_by_sorted_ids(spec, ans, _column(sub, spec.id_column))
    y_true = ans.values[target][ans.order]
    return _roc_auc(y_true, _column(sub, target)[rows], f"Submission column '{target}'")


def auroc_per_class_by_sorted_id(spec: Spec, ans: Answers, sub: pd.DataFrame) -> float:
    """ranzcr: every class column present, then prepare_for_auroc_metric per class; the mean."""
    _need(sub, list(spec.targets))
    _same_length(sub, ans)
    scores = [_auroc_one(spec, ans, sub, c) for c in spec.targets]
    return float(np.average(scores))


def auroc_columns_by_position(spec: Spec, ans: Answers, sub: pd.DataFrame) -> float:
    """jigsaw: set_index(id).sort_index() on both; every non-id column of the submission, in the
    submission's own order, is scored against the answers' class columns in theirs."""
    _need(sub, [spec.id_column, *spec.targets])
    _same_length(sub, ans)
    sub_ids = _column(sub, spec.id_column)
    order = sort_index_order(sub_ids)
    ans_order = sort_index_order(ans.ids)
    truth = np.column_stack([ans.values[c] for c in spec.targets])[ans_order]
    keep = (
        truth.sum(axis=1) >= 0 if spec.unscored_rows == "answer_rows_all_minus_one" else np.ones(ans.n, bool)
    )
    sorted_sub_ids, sorted_ans_ids = sub_ids[order], ans.ids[ans_order]
    try:
        same_index = pd.Index(sorted_sub_ids).equals(pd.Index(sorted_ans_ids))
    except TypeError:
        same_index = False
    if same_index:
        sub_keep = keep
    else:  # pandas aligns the boolean Series on the ids: an unknown id cannot be aligned
        where = pd.Index(sorted_ans_ids).get_indexer_for(sorted_sub_ids)
        if (where < 0).any():
            raise _id_mismatch(spec, ans, sub_ids)
        sub_keep = keep[where]
    score_columns = [c for c in sub.columns if c != spec.id_column]
    y_score = sub[score_columns].to_numpy()[order][sub_keep]
    y_true = truth[keep]
    if y_score.shape[0] != y_true.shape[0]:
        raise InvalidSubmission(
            f"Submission ids select {y_score.shape[0]} scored rows but the test set has {y_true.shape[0]}."
        )
    if y_score.shape[1] != y_true.shape[1]:
        raise InvalidSubmission(
            f"Submission has {y_score.shape[1]} columns besides '{spec.id_column}'; upstream scores them by "
            f"position against the {y_true.shape[1]} classes, so it must have exactly those."
        )
    if y_score.dtype == object:
        y_score = as_float(y_score, "Submission class columns")
    scores = [
        _roc_auc(y_true[:, j], y_score[:, j], f"Submission column {j + 2}") for j in range(y_true.shape[1])
    ]
    return float(np.average(scores))


def auroc_columns_by_name(spec: Spec, ans: Answers, sub: pd.DataFrame) -> float:
    """plant-pathology: exactly the id and class columns; ids compared after sorting; per-class AUC."""
    _same_length(sub, ans)
    _exact_columns(spec, sub)
    sub_ids = _column(sub, spec.id_column)
    try:
        order = upstream_sort_order(sub_ids)
        equal = np.asarray(sub_ids[order] == ans.sorted_ids)
    except (TypeError, ValueError):
        raise InvalidSubmission(f"Submission column '{spec.id_column}' cannot be sorted.") from None
    if not equal.all():
        raise _id_mismatch(spec, ans, sub_ids)
    scores = [
        _roc_auc(ans.values[c][ans.order], _column(sub, c)[order], f"Submission column '{c}'")
        for c in spec.targets
    ]
    return float(np.mean(scores))


def _exact_columns(spec: Spec, sub: pd.DataFrame) -> None:
    want = {spec.id_column, *spec.targets}
    have = {str(c) for c in sub.columns}
    if have != want:
        extra, missing = sorted(have - want), sorted(want - have)
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}" + (" and more" if len(missing) > 5 else ""))
        if extra:
            parts.append(f"unexpected {', '.join(extra[:5])}" + (" and more" if len(extra) > 5 else ""))
        raise InvalidSubmission(
            f"Submission must have exactly the columns '{spec.id_column}' and the {len(spec.targets)} class "
            f"columns ({'; '.join(parts)})."
        )


def accuracy_by_sorted_id(spec: Spec, ans: Answers, sub: pd.DataFrame) -> float:
    """prepare_for_accuracy_metric + accuracy_score."""
    target = spec.targets[0]
    _same_length(sub, ans)
    _need(sub, [target, spec.id_column])
    rows = align_by_sorted_ids(spec, ans, _column(sub, spec.id_column))
    y_pred = _column(sub, target)[rows]
    y_true = ans.values[target][ans.order]
    classification_targets(y_true, y_pred, f"Submission column '{target}'")
    return float(np.mean(y_true == y_pred))


def text_accuracy_by_sorted_id(spec: Spec, ans: Answers, sub: pd.DataFrame) -> float:
    """text normalization: as accuracy, both sides through pandas 2.2's astype(str) (NaN -> 'nan')."""
    target = spec.targets[0]
    _same_length(sub, ans)
    _need(sub, [target, spec.id_column])
    rows = align_by_sorted_ids(spec, ans, _column(sub, spec.id_column))
    y_pred = as_text(_column(sub, target))[rows]
    y_true = ans.values[target][ans.order]  # already text (see BuiltinCompetition)
    return float(np.mean(y_true == y_pred))


def as_text(values: np.ndarray) -> np.ndarray:
    """pandas 2.2's Series.astype(str): str() of every value, missing values become 'nan'."""
    if values.dtype == object:
        mask = np.asarray(pd.isna(values), dtype=bool)
        if not mask.any() and all(type(v) is str for v in values.tolist()):
            return values
    return np.array([str(v) for v in values.tolist()], dtype=object)


def qwk_by_id_set(spec: Spec, ans: Answers, sub: pd.DataFrame) -> float:
    """aptos: target present, not empty, the same set of ids; sort both; cohen_kappa(quadratic)."""
    target = spec.targets[0]
    _need(sub, [target])
    if len(sub) == 0:
        raise InvalidSubmission("Submission has no rows.")
    _need(sub, [spec.id_column])
    sub_ids = _column(sub, spec.id_column)
    _same_id_set(spec, ans, sub_ids)
    try:
        order = upstream_sort_order(sub_ids)
    except TypeError:
        raise InvalidSubmission(f"Submission column '{spec.id_column}' cannot be sorted.") from None
    y_pred = _column(sub, target)[order]
    y_true = ans.values[target][ans.order]
    what = f"Submission column '{target}'"
    if len(y_pred) != len(y_true):
        raise InvalidSubmission(f"Submission has {len(y_pred)} rows but the test set has {len(y_true)}.")
    classification_targets(y_pred, y_true, what)
    unique_labels(y_true, y_pred, what)
    value = metrics.quadratic_weighted_kappa(y_pred, y_true)
    return value


def _same_id_set(spec: Spec, ans: Answers, sub_ids: np.ndarray) -> None:
    try:
        same = set(sub_ids.tolist()) == ans.id_set
    except TypeError:
        same = False
    if not same:
        raise _id_mismatch(spec, ans, sub_ids)


def rmse_by_sorted_id(spec: Spec, ans: Answers, sub: pd.DataFrame) -> float:
    """denoising: id and value present, value castable to float, same length, ids compared after
    sorting, then RMSE."""
    target = spec.targets[0]
    _need(sub, [spec.id_column, target])
    try:
        sub[target].astype(float)
    except (ValueError, TypeError):
        raise InvalidSubmission(f"Submission column '{target}' must hold numbers.") from None
    _same_length(sub, ans)
    rows = align_by_sorted_ids(spec, ans, _column(sub, spec.id_column))
    y_sub = as_float(_column(sub, target)[rows], f"Submission column '{target}'")
    y_ans = as_float(ans.values[target][ans.order], "the answers")
    return metrics.rmse(y_sub, y_ans)


def rmse_by_separately_sorted_keys(spec: Spec, ans: Answers, sub: pd.DataFrame) -> float:
    """taxi: both tables sorted by key, then RMSE by position: the keys are never compared."""
    target = spec.targets[0]
    _need(sub, [target, spec.id_column])
    try:
        order = upstream_sort_order(_column(sub, spec.id_column))
    except TypeError:
        raise InvalidSubmission(f"Submission column '{spec.id_column}' cannot be sorted.") from None
    y_true = as_float(ans.values[target][ans.order], "the answers")
    y_pred = as_float(_column(sub, target)[order], f"Submission column '{target}'")
    if len(y_pred) != len(y_true):
        raise InvalidSubmission(f"Submission has {len(y_pred)} rows but the test set has {len(y_true)}.")
    return metrics.rmse(y_true, y_pred)


def rmsle_by_row_order(spec: Spec, ans: Answers, sub: pd.DataFrame) -> float:
    """nomad2018: both target columns, same length; rows taken in file order (ids never read)."""
    _need(sub, list(spec.targets))
    _same_length(sub, ans)
    values = []
    for c in spec.targets:
        t = as_float(ans.values[c], "the answers")
        # booleans stay booleans in scikit-learn's check, and numpy's log1p of a boolean is float16
        p = as_float(_column(sub, c), f"Submission column '{c}'", keep_bool=True)
        if (t < 0).any() or (p < 0).any():
            raise InvalidSubmission(
                f"Submission column '{c}' has negative values, which this grader refuses."
            )
        values.append(metrics.rmse(np.log1p(t), np.log1p(p)))
    return float((values[0] + values[1]) / 2) if len(values) == 2 else float(np.mean(values))


def log_loss_by_id_set(spec: Spec, ans: Answers, sub: pd.DataFrame) -> float:
    """dogs-vs-cats: same id set, same length, values in [0, 1], sort both; binary log loss."""
    target = spec.targets[0]
    _need(sub, [spec.id_column, target])
    sub_ids = _column(sub, spec.id_column)
    _same_id_set(spec, ans, sub_ids)
    _same_length(sub, ans)
    _in_unit_interval(sub, [target])
    order = upstream_sort_order(sub_ids)
    p = as_float(_column(sub, target)[order], f"Submission column '{target}'")
    try:
        return metrics.binary_log_loss(ans.values[target][ans.order], p)
    except metrics.MetricError as e:
        raise InvalidSubmission(
            f"The submission cannot be graded: log loss is undefined for it ({e})."
        ) from None


def log_loss_one_hot(spec: Spec, ans: Answers, sub: pd.DataFrame) -> float:
    """dog-breed, leaf, spooky: column checks (column_rule), rows summing to 1 and values in
    [0, 1], then one_hot_dfs_to_log_loss_inputs: columns by the answers' names, both sorted by id,
    ids compared as lists; multi-class log loss."""
    classes = list(spec.targets)
    if spec.column_rule == "four_columns_by_position":
        if sub.shape != (ans.n, len(classes) + 1):
            raise InvalidSubmission(
                f"Submission must have {ans.n} rows and {len(classes) + 1} columns; it has {sub.shape[0]} "
                f"rows and {sub.shape[1]} columns."
            )
        checked = [c for c in sub.columns[1:]]
    else:
        if spec.column_rule == "exact_column_set":
            _exact_columns(spec, sub)
        else:
            _need(sub, [*classes, spec.id_column])
        _same_length(sub, ans)
        checked = classes
    frame = sub.loc[:, checked] if spec.column_rule == "four_columns_by_position" else sub
    _rows_sum_to_one(
        frame, list(frame.columns) if spec.column_rule == "four_columns_by_position" else checked
    )
    _in_unit_interval(
        frame, list(frame.columns) if spec.column_rule == "four_columns_by_position" else checked
    )
    _need(sub, [spec.id_column, *classes])
    sub_ids = _column(sub, spec.id_column)
    try:
        order = upstream_sort_order(sub_ids)
    except TypeError:
        raise InvalidSubmission(f"Submission column '{spec.id_column}' cannot be sorted.") from None
    if sub_ids[order].tolist() != ans.sorted_ids.tolist():
        raise _id_mismatch(spec, ans, sub_ids)
    y_pred = as_float(sub[classes].to_numpy()[order], "Submission class columns")
    y_true = np.column_stack([ans.values[c] for c in classes])[ans.order]
    try:
        return metrics.log_loss(y_true, y_pred)
    except metrics.MetricError as e:
        raise InvalidSubmission(
            f"The submission cannot be graded: log loss is undefined for it ({e})."
        ) from None


PROCEDURES: dict[str, tuple[Callable[[Spec, Answers, pd.DataFrame], float], str]] = {
    # name: (function, the metric it computes)
    "auroc_by_sorted_id": (auroc_by_sorted_id, "roc_auc"),
    "auroc_per_class_by_sorted_id": (auroc_per_class_by_sorted_id, "mean_columnwise_roc_auc"),
    "auroc_columns_by_position": (auroc_columns_by_position, "mean_columnwise_roc_auc"),
    "auroc_columns_by_name": (auroc_columns_by_name, "mean_columnwise_roc_auc"),
    "accuracy_by_sorted_id": (accuracy_by_sorted_id, "accuracy"),
    "text_accuracy_by_sorted_id": (text_accuracy_by_sorted_id, "accuracy"),
    "qwk_by_id_set": (qwk_by_id_set, "quadratic_weighted_kappa"),
    "rmse_by_sorted_id": (rmse_by_sorted_id, "rmse"),
    "rmse_by_separately_sorted_keys": (rmse_by_separately_sorted_keys, "rmse"),
    "rmsle_by_row_order": (rmsle_by_row_order, "mean_columnwise_rmsle"),
    "log_loss_by_id_set": (log_loss_by_id_set, "binary_log_loss"),
    "log_loss_one_hot": (log_loss_one_hot, "log_loss"),
}

COLUMN_RULES = ("extra_columns_ignored", "exact_column_set", "four_columns_by_position")
UNSCORED_ROWS = ("none", "answer_rows_all_minus_one")


def header_verdict(spec: Spec, procedure: str, columns: list[str]) -> str | None:
    """A reason to reject from the header alone, where upstream's verdict depends only on it."""
    if procedure == "auroc_columns_by_position":
        extra = [c for c in columns if c not in (spec.id_column, *spec.targets)]
        if extra:
            return (
                f"Submission has columns besides '{spec.id_column}' and the {len(spec.targets)} classes "
                f"({', '.join(extra[:5])}); upstream scores columns by position, so it cannot score this."
            )
    if spec.column_rule == "exact_column_set" and set(columns) != {spec.id_column, *spec.targets}:
        n = len(spec.targets)
        return f"Submission must have exactly the columns '{spec.id_column}' and the {n} classes."
    if spec.column_rule == "four_columns_by_position" and len(columns) != len(spec.targets) + 1:
        return f"Submission must have {len(spec.targets) + 1} columns; it has {len(columns)}."
    return None


__all__ = ["PROCEDURES", "Answers", "MetricInputError", "Spec", "header_verdict"]
