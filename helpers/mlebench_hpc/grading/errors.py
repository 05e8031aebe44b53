"""Exceptions of the grading engine. Every str() is one line saying what is wrong and what to do."""

from __future__ import annotations


class GradingSetupError(Exception):
    """The grader cannot be set up (unknown competition, data not prepared, bad leaderboard)."""


class UnknownCompetition(GradingSetupError):
    pass


class CompetitionNotPrepared(GradingSetupError):
    pass


class InvalidSubmission(Exception):
    """The submission cannot be graded; str() is the one-line reason (never quotes answers)."""
