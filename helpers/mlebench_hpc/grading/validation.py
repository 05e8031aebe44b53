"""Reading CSVs as upstream does (the wording of its verdicts: messages.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

# Upstream reads with float_precision="round_trip"; pandas >= 3 parses floats exactly that way by
# default and deprecates the option (test_pandas_compat checks the equivalence).
ROUND_TRIP: dict = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}


def as_pandas22_frame(table: pd.DataFrame) -> pd.DataFrame:
    """pandas 3 infers the `str` dtype for text columns; upstream ran pandas 2.2, where they are
    `object` columns of Python strings with NaN for missing cells. Sorting, comparing, astype(str)
    and set() then behave as upstream's did, under either version."""
    text = [c for c, dt in table.dtypes.items() if isinstance(dt, pd.StringDtype)]
    if text:
        table = table.astype(dict.fromkeys(text, object))
    return table


def read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """upstream's mlebench.utils.read_csv: pandas.read_csv(float_precision="round_trip"), an empty
    file is an empty table; text columns as pandas 2.2 gives them."""
    try:
        return as_pandas22_frame(pd.read_csv(path, **ROUND_TRIP, **kwargs))
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def read_header(path: Path) -> list[str]:
    """The column names pandas gives the file (BOM removed, quotes resolved, repeats renamed)."""
    try:
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except pd.errors.EmptyDataError:
        return []


def read_submission(path: Path) -> pd.DataFrame:
    """Parse a submission; raises ValueError with a one-line reason when pandas cannot read it
    (upstream's validation turns the same exception into "invalid")."""
    try:
        return read_csv(path)
    except UnicodeDecodeError:
        raise ValueError("Submission is not UTF-8 text; write a CSV file.") from None
    except (pd.errors.ParserError, ValueError, OverflowError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if first.endswith("C error: out of memory"):  # pandas' tokenizer could not allocate
            raise MemoryError(first) from None
        raise ValueError(f"Submission could not be parsed as CSV ({first[:200]}).") from None
