"""The LLM server's keys: the one reader of key files, the server's own key (which only the backend
and the proxy know), and the per-run keys the proxy accepts.

A shared LLM server (`slurm_llm_server.sh`, or the hetjob's `LLM_BASE_URL=job` step) keeps, in its
host-only state dir OUTPUT_BASE/.state/llm/<job>/keys/, one file per agent run (mode 0600, named by
the run) holding that run's random key. A run registers its key before its agent starts and removes
it when the run ends; the proxy forwards a request only when its `Authorization: Bearer` key is one
of those files, and replaces it with the server's key."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shlex
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mlebench_hpc.atomic import write_atomic
from mlebench_hpc.errors import HelperError

KEYS_SUBDIR = "keys"
# What may go into an env file that apptainer reads as shell and the no-container path reads as
# plain KEY=value lines: the same value both ways.
PLAIN = re.compile(r"[A-Za-z0-9._~:/@%+,=-]*")
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
# The backend server gets its key under every name the usual servers read.
BACKEND_KEY_NAMES = ("LLM_API_KEY", "VLLM_API_KEY", "LLAMA_API_KEY")


def read_api_key(path: Path, what: str = "LLM_API_KEY_FILE") -> str:
    """The key in a file of its own: its first non-blank line, stripped. The file must be readable
    by its owner only. The one reader of key files: the server, the proxy and the agent all get
    their key through here."""
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise HelperError(f"{what}={path} cannot be read ({exc}): fix the path") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise HelperError(f"{what}={path} is readable by others: chmod 600 {path}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise HelperError(f"{what}={path} is empty: put the key on its first line")
    return lines[0]


def new_key() -> str:
    """A random key of plain characters (43 of [A-Za-z0-9_-], 256 bits)."""
    return secrets.token_urlsafe(32)


def check_plain(name: str, value: str) -> None:
    if not PLAIN.fullmatch(value):
        raise HelperError(
            f"{name} may hold only letters, digits and ._~:/@%+,=- (it goes into the agent's env "
            "file): rename the model or use another key"
        )


def write_env_file(path: Path, values: dict[str, str], quote: bool = True) -> None:
    """KEY=value lines, mode 0600, atomically. QUOTE: for shell readers only (the backend's file:
    bash or apptainer source it); the agent's lines are plain (check_plain) and stay unquoted, as the
    no-container path reads them verbatim."""
    text = "".join(f"{k}={shlex.quote(v) if quote else v}\n" for k, v in values.items())
    write_atomic(path, text.encode(), 0o600)


def keys_dir(server_state: Path) -> Path:
    return server_state / KEYS_SUBDIR


def register_run_key(server_state: Path, run_id: str) -> tuple[str, Path]:
    """A fresh key for RUN_ID in the LLM server's keys dir: (key, its file)."""
    if not RUN_ID.fullmatch(run_id):
        raise HelperError(f"run id {run_id!r} is not a file name of letters, digits and ._+-")
    directory = keys_dir(server_state)
    if not directory.is_dir():
        raise HelperError(
            f"the LLM server at {server_state} takes no per-run keys ({directory} is missing): "
            "restart it with this checkout's scripts_hpc/slurm_llm_server.sh"
        )
    key = new_key()
    path = directory / run_id
    write_atomic(path, (key + "\n").encode(), 0o600)
    return key, path


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "replace")).digest()


class KeyRing:
    """The keys registered in a keys dir, re-read whenever the directory changed: a key works from
    the moment its file is there until the moment it is removed. Lookups go by the key's sha256,
    so nothing compares the presented key byte by byte."""

    # A directory's mtime has the file system's granularity: a change within this many seconds of
    # the last read may not have moved it, so the ring is read again until the mtime is older.
    RACY_SECS = 2.0

    def __init__(self, directory: Path, log: Callable[[str], None] | None = None) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self._read_at = 0.0
        self._runs: dict[bytes, str] = {}
        self._log = log
        self._refused_files: set[str] = set()

    def run_of(self, key: str | None) -> str | None:
        """The run that registered KEY, or None."""
        if not key:
            return None
        with self._lock:
            self._refresh()
            return self._runs.get(_digest(key))

    def _refresh(self) -> None:
        try:
            mtime = self.directory.stat().st_mtime_ns
        except OSError:
            self._runs, self._mtime = {}, None
            return
        now = time.time()
        racy = now - mtime / 1e9 < self.RACY_SECS
        if mtime == self._mtime and not racy:
            return
        runs: dict[bytes, str] = {}
        try:
            names = os.listdir(self.directory)
        except OSError:
            names = []
        for name in names:
            if not RUN_ID.fullmatch(name):
                continue  # the temporary files of a registration in progress
            try:
                runs[_digest(read_api_key(self.directory / name, what="run key"))] = name
            except HelperError as exc:
                if name not in self._refused_files and self._log is not None:
                    self._log(f"ignoring the run key {name}: {exc.message}")
                    self._refused_files.add(name)
        self._runs, self._mtime, self._read_at = runs, mtime, now
