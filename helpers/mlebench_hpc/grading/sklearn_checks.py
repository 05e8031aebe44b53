"""The input checks of scikit-learn 1.5 (upstream's pin) that decide whether upstream scores a case.

Upstream's graders hand the submission's columns to scikit-learn as they come out of pandas, and
scikit-learn's own checks then accept or raise: a float column that is not integral is
"continuous" and cannot be scored by accuracy, strings and booleans cannot be merged into one
label set, NaN or infinity is refused, an object column is converted to float or refused. The
grading image has no scikit-learn, so these are written out here, from its documented behaviour,
and the conformance vectors (tests/conformance) prove them equal case by case.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import InvalidSubmission


class MetricInputError(InvalidSubmission):
    """scikit-learn would raise on these inputs; str() is our one-line reason."""


def type_of_target(y: np.ndarray, what: str) -> str:
    """sklearn.utils.multiclass.type_of_target for the 1-d arrays upstream's graders pass."""
    if len(y) == 0:
        return "binary"
    if y.dtype == object and not isinstance(y[0], str):
        return "unknown"
    if y.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            integral = y == y.astype(np.int64)
        if not integral.all():
            if not np.isfinite(y).all():
                raise MetricInputError(f"{what} has missing or infinite values.")
            return "continuous"
    try:
        n_unique = len(np.unique(y))
    except TypeError:
        raise MetricInputError(f"{what} mixes text and numbers.") from None
    return "multiclass" if n_unique > 2 else "binary"


def classification_targets(y_true: np.ndarray, y_pred: np.ndarray, what: str) -> str:
    """sklearn's _check_targets for 1-d labels: the merged type, or the error it raises."""
    if len(y_true) != len(y_pred):
        raise MetricInputError(f"{what} has {len(y_pred)} rows for {len(y_true)} answers.")
    for y in (y_true, y_pred):  # scikit-learn refuses missing labels, one way or another
        n_missing = int(np.asarray(pd.isna(y), dtype=bool).sum())
        if n_missing:
            raise MetricInputError(f"{what} has {n_missing} missing values.")
    types = {type_of_target(y_true, "the answers"), type_of_target(y_pred, what)}
    if types == {"binary", "multiclass"}:
        types = {"multiclass"}
    if len(types) > 1:
        kinds = " and ".join(sorted(types))
        raise MetricInputError(f"{what} cannot be compared with the answers as labels ({kinds} labels).")
    y_type = types.pop()
    if y_type not in ("binary", "multiclass"):
        raise MetricInputError(f"{what} does not hold class labels ({y_type}).")
    if y_type == "binary":
        try:
            union = np.union1d(y_true, y_pred)
        except TypeError:
            raise MetricInputError(f"{what} holds labels of another type than the answers.") from None
        if len(union) > 2:
            y_type = "multiclass"
    return y_type


def unique_labels(y_true: np.ndarray, y_pred: np.ndarray, what: str) -> None:
    """sklearn's unique_labels refuses label sets that mix strings and numbers."""
    labels = set(np.unique(y_true).tolist()) | set(np.unique(y_pred).tolist())
    if len({isinstance(v, str) for v in labels}) > 1:
        raise MetricInputError(f"{what} mixes text labels with the answers' numeric labels.")


def as_float(values: np.ndarray, what: str, *, keep_bool: bool = False) -> np.ndarray:
    """sklearn's check_array(dtype="numeric" or float): object -> float64, then all finite."""
    if values.dtype.kind in "USV":
        raise MetricInputError(f"{what} must hold numbers.")
    if values.dtype == bool and keep_bool:
        return values
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise MetricInputError(f"{what} must hold numbers.") from None
    bad = ~np.isfinite(out)
    if bad.any():
        raise MetricInputError(f"{what} has {int(bad.sum())} missing or infinite values.")
    return out
