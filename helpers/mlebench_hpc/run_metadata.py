"""`mlebench-hpc run-metadata`: create or update RUN_DIR/metadata.json.

Updates merge keys into the existing object under an exclusive lock (a hetjob's components
may write at the same time) and land atomically (temporary file + os.replace), so a reader
never sees half a file. `--sha256 key=path` hashes a file by streaming it; the digest is cached
by (path, size, mtime, inode) under ~/.cache/mlebench-hpc/sha256 so that every job of a sweep
does not re-read a multi-GB image."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import click

from mlebench_hpc.atomic import write_atomic
from mlebench_hpc.slurm_query import HelperError

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


def update_metadata(run_dir: Path, updates: dict[str, Any]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / METADATA
    # lock the directory itself (Linux flock works on directories): no lock file left behind
    dir_fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        current: dict[str, Any] = {}
        if target.is_file():
            try:
                current = json.loads(target.read_text() or "{}")
            except ValueError:
                raise HelperError(f"{target} is not valid JSON: fix or remove it") from None
            if not isinstance(current, dict):
                raise HelperError(f"{target} does not hold a JSON object: fix or remove it")
        current.update(updates)
        _atomic_write(target, (json.dumps(current, indent=2, sort_keys=True) + "\n").encode())
    finally:
        os.close(dir_fd)
    return target


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
def run_metadata_cmd(
    run_dir: Path,
    sets: tuple[str, ...],
    set_jsons: tuple[str, ...],
    hashes: tuple[str, ...],
    collect_submission: bool,
) -> None:
    """Create or update RUN_DIR/metadata.json, merging the given keys."""
    updates: dict[str, Any] = {}
    if collect_submission:
        from mlebench_hpc.untrusted import collect_record

        updates.update(collect_record(run_dir))
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
    update_metadata(run_dir, updates)
