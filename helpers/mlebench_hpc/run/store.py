"""The one writer of RUN/metadata.json (the run record: mlebench_hpc.run.record).

Every write takes the run directory's exclusive lock (a hetjob's components and a sweep task may
write at the same time), reads the record through the record's own loader (record.typed_fields: a
record it cannot read, a newer schema or a field of the wrong type, is refused, never rewritten),
checks the attempt fence, checks that the writer's updates hold their types, checks the whole merged
record again, stamps the schema version and lands atomically (temporary file + os.replace). A field
an earlier version wrote in another form (a seed as "3") is written in its typed form (3), so a file
stamped with the schema version holds typed values only. A reader never sees half a file, and a
decision made on what was read cannot be overtaken.

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
from mlebench_hpc.run.record import METADATA, SCHEMA_VERSION, RecordError, typed_fields

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
def check_updates(updates: Updates, file: Path | None = None) -> None:
    """The typed fields of a write hold their typed form (record.FIELDS; no form an earlier version
    wrote): a writer that drifts fails here, not a reader. RecordError."""
    typed_fields(updates, file, legacy=False)


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


def read(run_dir: Path) -> Updates:
    """RUN_DIR's record as a write merges into it: every field in its typed form ({} when there is
    no record yet). A record that cannot be read as one (not a JSON object, a field holding neither
    its type nor a form an earlier version wrote, a newer schema) raises RecordError, one line."""
    target = run_dir / METADATA
    if not target.is_file():
        return {}
    try:
        current = json.loads(target.read_text() or "{}")
    except ValueError:
        raise RecordError("not valid JSON: fix or remove it", target) from None
    except OSError as exc:
        raise RecordError(f"cannot be read ({exc.strerror})", target) from None
    if not isinstance(current, dict):
        raise RecordError("does not hold a JSON object: fix or remove it", target)
    return typed_fields(current, target)


def owning_attempt(current: Updates, attempt: int) -> int | None:
    """The restart count of a later attempt that owns the run, or None when ATTEMPT may write."""
    owner = current.get("slurm_restart_count", 0)  # an integer >= 0 in a record read by `read`
    return owner if isinstance(owner, int) and not isinstance(owner, bool) and owner > attempt else None


def update(
    run_dir: Path,
    make_updates: Callable[[Updates], Updates | None],
    attempt: int | None = None,
) -> Updates | None:
    """Under the run directory's lock: read the record (typed: `read`), drop the write when a later
    attempt than ATTEMPT owns the run (saying so on stderr), call make_updates(current) and merge
    what it returns (None: write nothing). Returns the merged record as written, or None when nothing
    was written. A record that cannot be read, or updates of the wrong type, raise RecordError and
    leave the file as it was."""
    target = run_dir / METADATA
    with _locked(run_dir):
        current = read(run_dir)
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
        check_updates(updates, target)
        # the whole record, as it will be stamped: typed values only (refused otherwise, unwritten)
        merged = typed_fields({**current, **updates, "schema_version": SCHEMA_VERSION}, target, legacy=False)
        body = (json.dumps(merged, indent=2, sort_keys=True) + "\n").encode()
        write_atomic(target, body, 0o644)
        return merged


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
