"""The one writer of RUN/metadata.json (the run record: mlebench_hpc.run.record).

Every write takes the run directory's exclusive lock (a hetjob's components and a sweep task may
write at the same time), checks the attempt fence, checks the types of the record's typed fields,
stamps the schema version and lands atomically (temporary file + os.replace), so a reader never sees
half a file and a decision made on what was read cannot be overtaken.

The attempt fence: an attempt (Slurm's restart count, `slurm_restart_count`) writes only while no
later attempt has taken the run directory over, so the processes of an attempt Slurm gave up on (a
node that stopped answering) cannot overwrite the next attempt's record.

`sha256_file` hashes a file by streaming it; the digest is cached by (path, size, mtime, inode) under
~/.cache/mlebench-hpc/sha256 so that every job of a sweep does not re-read a multi-GB image."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from mlebench_hpc.atomic import write_atomic
from mlebench_hpc.errors import HelperError
from mlebench_hpc.run.record import METADATA, SCHEMA_VERSION, FailureCause, RecordError, RunRecord, RunStatus

HASH_CHUNK = 4 * 1024 * 1024

Updates = dict[str, Any]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlebench-hpc" / "sha256"


def sha256_file(path: Path, cache: Path | None = None) -> str:
    path = path.resolve()
    st = path.stat()
    cache = cache if cache is not None else cache_dir()
    key = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
    entry = cache / (hashlib.sha256(str(path).encode()).hexdigest() + ".json")
    try:
        cached = json.loads(entry.read_text())
        if {k: cached.get(k) for k in key} == key and isinstance(cached.get("sha256"), str):
            return cached["sha256"]
    except (OSError, ValueError):
        pass
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    with contextlib.suppress(OSError):  # a read-only or full home must not fail the job
        write_atomic(entry, json.dumps({**key, "sha256": value}).encode(), 0o644)
    return value


# ---------------------------------------------------------------- the typed fields of a write
def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _optional_int(v: object) -> bool:
    return v is None or _int(v)


def _status(v: object) -> bool:
    return isinstance(v, str) and RunStatus.parse(v) is not None


def _failure(v: object) -> bool:
    return v is None or (
        isinstance(v, dict)
        and FailureCause.parse(v.get("cause")) is not None
        and isinstance(v.get("reason"), str)
    )


FIELD_CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    "status": (_status, "a run status (" + ", ".join(s.value for s in RunStatus) + ")"),
    "seed": (_optional_int, "an integer or null"),
    "exit_code": (_optional_int, "an integer or null"),
    "submission_exists": (lambda v: isinstance(v, bool), "true or false"),
    "failure": (_failure, "null or {cause: a known cause, reason: text}"),
    "requeue_count": (_int, "an integer"),
    "slurm_restart_count": (_int, "an integer"),
    "agent_secs_used": (_int, "an integer"),
    "time_limit_secs": (_int, "an integer"),
    "sweep_task_index": (_optional_int, "an integer or null"),
}


def check_updates(updates: Updates) -> None:
    """The typed fields of a write hold their types: a writer that drifts fails here, not a reader."""
    for key, value in updates.items():
        check = FIELD_CHECKS.get(key)
        if check is not None and not check[0](value):
            raise HelperError(f"run record: {key}={value!r} is not {check[1]}")


# ---------------------------------------------------------------- lock, fence, write
@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """The run directory's exclusive lock (Linux flock works on directories: no lock file)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    dir_fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(dir_fd)


def _read_current(run_dir: Path) -> Updates:
    target = run_dir / METADATA
    if not target.is_file():
        return {}
    try:
        current = json.loads(target.read_text() or "{}")
    except ValueError:
        raise HelperError(f"{target} is not valid JSON: fix or remove it") from None
    if not isinstance(current, dict):
        raise HelperError(f"{target} does not hold a JSON object: fix or remove it")
    try:
        RunRecord.from_json(run_dir, current)  # a newer layout is refused, never rewritten
    except RecordError as exc:
        raise HelperError(str(exc)) from None
    return current


def owning_attempt(current: Updates, attempt: int) -> int | None:
    """The restart count of a later attempt that owns the run, or None when ATTEMPT may write."""
    owner = current.get("slurm_restart_count", 0)
    if not _int(owner):
        return None
    return owner if owner > attempt else None


def update(
    run_dir: Path,
    make_updates: Callable[[Updates], Updates | None],
    attempt: int | None = None,
) -> Updates | None:
    """Under the run directory's lock: read the record, drop the write when a later attempt than
    ATTEMPT owns the run (saying so on stderr), call make_updates(current) and merge what it returns
    (None: write nothing). Returns the merged record, or None when nothing was written."""
    with _locked(run_dir):
        current = _read_current(run_dir)
        owner = owning_attempt(current, attempt) if attempt is not None else None
        if owner is not None:
            click.echo(
                f"run: {run_dir} belongs to a later attempt (restart {owner}) than this one "
                f"(restart {attempt}): not recorded",
                err=True,
            )
            return None
        updates = make_updates(current)
        if updates is None:
            return None
        check_updates(updates)
        current.update(updates)
        current["schema_version"] = SCHEMA_VERSION
        body = (json.dumps(current, indent=2, sort_keys=True) + "\n").encode()
        write_atomic(run_dir / METADATA, body, 0o644)
        return current


def write(run_dir: Path, updates: Updates, attempt: int | None = None, collect: bool = False) -> bool:
    """Merge UPDATES (and, with COLLECT, copy and record the submission under the same lock: a later
    attempt's collected copy is never replaced) unless a later attempt owns the run. False when the
    write was dropped."""

    def merge(_current: Updates) -> Updates:
        if collect:
            from mlebench_hpc.untrusted import collect_record

            return {**collect_record(run_dir), **updates}
        return updates

    return update(run_dir, merge, attempt) is not None
