"""The per-run grading token: where the server reads it, which header the agent sends it in.

The job writes a random token into a file of mode 0600 in the run's state directory (the grading
server reads it with --token-file) and gives it to the agent as GRADING_SERVER_TOKEN through its 0600
env file; the overlaid /home/validate_submission.sh sends it with every request. Another run's agent
that finds this server (ports are visible in /proc/net/tcp) gets 401.
"""

from __future__ import annotations

import hmac
import os
import stat
from pathlib import Path

TOKEN_ENV = "GRADING_SERVER_TOKEN"
TOKEN_HEADER = "X-Grading-Token"
TOKEN_MAX_BYTES = 4096


class TokenError(ValueError):
    """The token is missing, unsafe or malformed: one line, exit 2."""


def read_token_file(path: Path) -> str:
    """The token in PATH: a regular file only its owner can read or write, holding one line."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TokenError(f"cannot read the token file {path} ({exc.strerror}); check --token-file") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise TokenError(f"the token file {path} is not a regular file; check --token-file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise TokenError(
                f"the token file {path} is open to group/others (mode {mode:04o}): chmod 600 {path}"
            )
        data = handle.read(TOKEN_MAX_BYTES + 1)
    if len(data) > TOKEN_MAX_BYTES:
        raise TokenError(f"the token file {path} is over {TOKEN_MAX_BYTES} bytes: it should hold one token")
    return _check_token(data.decode("ascii", "replace").strip(), f"the token file {path}")


def _check_token(token: str, source: str) -> str:
    if not token:
        raise TokenError(f"{source} is empty: it must hold a random token (e.g. openssl rand -hex 32)")
    if not all(33 <= ord(c) < 127 for c in token):
        raise TokenError(f"{source} must hold one line of printable ASCII without spaces")
    return token


def resolve_token(token_file: Path | None, env: dict[str, str]) -> str | None:
    """The token from --token-file or GRADING_SERVER_TOKEN (never a command-line value: ps shows
    those); None when neither is given, which leaves /validate open (local use)."""
    from_env = env.get(TOKEN_ENV)
    if from_env is not None:
        from_env = _check_token(from_env.strip(), TOKEN_ENV)
    if token_file is None:
        return from_env
    from_file = read_token_file(token_file)
    if from_env is not None and not hmac.compare_digest(from_env.encode(), from_file.encode()):
        raise TokenError(f"{TOKEN_ENV} and --token-file {token_file} differ: give the token once")
    return from_file
