"""The CLI's one error for a setup or usage problem the user can fix."""

from __future__ import annotations

import click


class HelperError(click.ClickException):
    """One line saying what is wrong and what to do; exit status 2 like the bash library."""

    exit_code = 2
