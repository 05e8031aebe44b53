"""Reading CSVs as upstream does, and upstream's validation message wording."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

# Upstream reads with float_precision="round_trip"; pandas >= 3 parses floats exactly that way by
# default and deprecates the option (test_pandas_compat checks the equivalence).
ROUND_TRIP: dict = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}

VALID_MESSAGE = "Submission is valid."
INVALID_PREFIX = (
    "Submission invalid! The attempt to grade the submission has resulted in the following error message:\n"
)


def invalid_message(why: str) -> str:
    # One line: a reason must never smuggle extra lines (or answer text) into the agent's view.
    return INVALID_PREFIX + " ".join(str(why).split())


def read_csv(
    path: Path, *, text_columns: tuple[str, ...] = (), str_columns: tuple[str, ...] = ()
) -> pd.DataFrame:
    """pandas.read_csv(float_precision="round_trip") as upstream; an empty file is an empty table.

    text_columns: read as strings with keep_default_na=False, so "null", "NaN", "N/A" and "" stay
    text under pandas 2.2 and 3 alike (the whole file is then read without NA tokens).
    str_columns: read as strings (ids: matched textually, no numeric inference).
    """
    dtype = dict.fromkeys((*str_columns, *text_columns), str)
    kwargs: dict = {**ROUND_TRIP, "dtype": dtype or None}
    if text_columns:
        kwargs["keep_default_na"] = False
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def read_submission(path: Path, id_column: str, text_columns: tuple[str, ...]) -> pd.DataFrame:
    """Parse a submission; raises ValueError with a one-line reason when it is not a readable CSV."""
    try:
        return read_csv(path, text_columns=text_columns, str_columns=(id_column,))
    except UnicodeDecodeError:
        raise ValueError("Submission is not UTF-8 text; write a CSV file.") from None
    except (pd.errors.ParserError, ValueError, OverflowError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"Submission could not be parsed as CSV ({first[:200]}).") from None


def describe_id_mismatch(id_column: str, n_missing: int, n_extra: int, n_duplicated: int) -> str:
    parts = []
    if n_missing:
        parts.append(f"{n_missing} expected ids are missing")
    if n_extra:
        parts.append(f"{n_extra} ids are not in the test set")
    if n_duplicated:
        parts.append(f"{n_duplicated} ids appear more than once")
    detail = ", ".join(parts) if parts else "ids differ"
    return f"Submission column '{id_column}' does not match the test set ids: {detail}."
