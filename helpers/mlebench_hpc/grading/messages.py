"""Upstream's validation wording, the words agents read (the server's `result`), in one place,
and the one-line form of any message in a report.

Reasons quote what the submission holds (column names, ids): the agent's words. So every reason is
one line with its control characters escaped (mlebench_hpc.printable), for the agent's view and for
the user's terminal alike. No pandas here: the report's one-line errors use the same words without
loading the engine."""

from __future__ import annotations

from pathlib import Path

from mlebench_hpc.printable import printable

VALID_MESSAGE = "Submission is valid."
INVALID = "Submission invalid!"
ERROR_MAX = 400  # characters of a report's one-line error
# Upstream's Grader puts this line before the error of a submission it could not grade.
INVALID_PREFIX = (
    f"{INVALID} The attempt to grade the submission has resulted in the following error message:\n"
)


def invalid_message(why: object) -> str:
    """Upstream's preamble, then WHY as one line: a reason must never smuggle extra lines (or
    answer text) into the agent's view."""
    return INVALID_PREFIX + printable(" ".join(str(why).split()))


def upstream_invalid_message(error: object) -> str:
    """Upstream's wording: its preamble, then the error as upstream prints it, on one line (its
    newlines and control characters escaped)."""
    return f"{INVALID_PREFIX}{printable(error)}"


def missing_submission_message(path: Path) -> str:
    return f"{INVALID} Submission file {path} does not exist."


def shorten_invalid(text: str) -> str:
    """Upstream's fixed preamble at the start of TEXT as "Submission invalid: " (for one-line reports)."""
    head = INVALID_PREFIX.strip()
    if not text.startswith(head):
        return text
    return f"{INVALID.rstrip('!')}: {text[len(head) :].strip()}"


def one_line(text: object, limit: int = ERROR_MAX) -> str:
    """A message as a report shows it: one line, control characters escaped, at most LIMIT
    characters, upstream's fixed 'Submission invalid!' preamble shortened."""
    s = printable(" ".join(shorten_invalid(str(text).strip()).split()))
    return s if len(s) <= limit else s[: limit - 3] + "..."
