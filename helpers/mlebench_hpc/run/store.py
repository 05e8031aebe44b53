"""`mlebench-hpc run-metadata`: create or update RUN_DIR/metadata.json.

Updates merge keys into the existing object under an exclusive lock (a hetjob's components
may write at the same time) and land atomically (temporary file + os.replace), so a reader
never sees half a file. `--sha256 key=path` hashes a file by streaming it; the digest is cached
by (path, size, mtime, inode) under ~/.cache/mlebench-hpc/sha256 so that every job of a sweep
does not re-read a multi-GB image.

`--attempt N` fences a requeued run: an attempt writes only while no later attempt (a higher Slurm
restart count, `slurm_restart_count`) has taken the run directory over, so the processes of an
attempt Slurm gave up on (a node that stopped answering) cannot overwrite the next attempt's record."""

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

METADATA = "metadata.json"
HASH_CHUNK = 4 * 1024 * 1024


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
        _atomic_write(entry, json.dumps({**key, "sha256": value}).encode())
    return value


def _atomic_write(path: Path, data: bytes) -> None:
    write_atomic(path, data, 0o644)


def _split(item: str, option: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise HelperError(f"{option} {item!r}: expected key=value")
    return key.strip(), value


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


def _read_current(target: Path) -> dict[str, Any]:
    if not target.is_file():
        return {}
    try:
        current = json.loads(target.read_text() or "{}")
    except ValueError:
        raise HelperError(f"{target} is not valid JSON: fix or remove it") from None
    if not isinstance(current, dict):
        raise HelperError(f"{target} does not hold a JSON object: fix or remove it")
    return current


def update_metadata_if(
    run_dir: Path,
    make_updates: Callable[[dict[str, Any]], dict[str, Any] | None],
) -> dict[str, Any] | None:
    """Under the run directory's lock: read metadata.json, call make_updates(current), and merge
    what it returns (None: write nothing). Returns the merged record, or None when nothing was
    written. Every writer takes this lock, so a decision made on `current` cannot be overtaken."""
    target = run_dir / METADATA
    with _locked(run_dir):
        current = _read_current(target)
        updates = make_updates(current)
        if updates is None:
            return None
        current.update(updates)
        _atomic_write(target, (json.dumps(current, indent=2, sort_keys=True) + "\n").encode())
        return current


def update_metadata(run_dir: Path, updates: dict[str, Any]) -> Path:
    update_metadata_if(run_dir, lambda _current: updates)
    return run_dir / METADATA


def superseded_attempt(current: dict[str, Any], attempt: int) -> int | None:
    """The restart count of a later attempt that owns the run, or None when ATTEMPT may write."""
    try:
        owner = int(current.get("slurm_restart_count", 0))
    except (TypeError, ValueError):
        return None
    return owner if owner > attempt else None


def fenced_update(
    run_dir: Path, updates: dict[str, Any], attempt: int | None = None, collect: bool = False
) -> bool:
    """Merge UPDATES into RUN_DIR/metadata.json (and, with COLLECT, copy and record the submission
    under the same lock) unless a later attempt than ATTEMPT owns the run: then say so on stderr and
    write nothing. False when the write was dropped."""

    def merge(current: dict[str, Any]) -> dict[str, Any] | None:
        owner = superseded_attempt(current, attempt) if attempt is not None else None
        if owner is not None:
            click.echo(
                f"run-metadata: {run_dir} belongs to a later attempt (restart {owner}) than this one "
                f"(restart {attempt}): not recorded",
                err=True,
            )
            return None
        if collect:  # under the lock: a later attempt's collected copy is never replaced
            from mlebench_hpc.untrusted import collect_record

            return {**collect_record(run_dir), **updates}
        return updates

    return update_metadata_if(run_dir, merge) is not None


@click.command("run-metadata")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Store a string; repeatable.")
@click.option(
    "--set-json",
    "set_jsons",
    multiple=True,
    metavar="KEY=JSON",
    help="Store a JSON value (number, list, object, null); repeatable.",
)
@click.option(
    "--sha256",
    "hashes",
    multiple=True,
    metavar="KEY=PATH",
    help="Store the sha256 of a file (cached by path, size and mtime); repeatable.",
)
@click.option(
    "--collect-submission",
    is_flag=True,
    help="Also copy RUN_DIR/submission/submission.csv, never following links, to RUN_DIR/collected/ "
    "and record it (submission_exists, submission: size, sha256 or why it was refused).",
)
@click.option(
    "--attempt",
    type=click.IntRange(min=0),
    help="Write only while no later attempt (a higher slurm_restart_count) owns RUN_DIR; "
    "else say so and write nothing (exit 0).",
)
def run_metadata_cmd(
    run_dir: Path,
    sets: tuple[str, ...],
    set_jsons: tuple[str, ...],
    hashes: tuple[str, ...],
    collect_submission: bool,
    attempt: int | None,
) -> None:
    """Create or update RUN_DIR/metadata.json, merging the given keys."""
    updates: dict[str, Any] = {}
    for item in sets:
        key, value = _split(item, "--set")
        updates[key] = value
    for item in set_jsons:
        key, raw = _split(item, "--set-json")
        try:
            updates[key] = json.loads(raw)
        except ValueError as exc:
            raise HelperError(f"--set-json {key}: not JSON ({exc.msg}); quote strings: '\"x\"'") from None
    for item in hashes:
        key, raw = _split(item, "--sha256")
        path = Path(raw)
        if not path.is_file():
            raise HelperError(f"--sha256 {key}: {raw} is not a file")
        updates[key] = sha256_file(path)

    fenced_update(run_dir, updates, attempt, collect_submission)
