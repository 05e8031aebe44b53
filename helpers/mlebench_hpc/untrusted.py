"""Reading, on the host, files that an agent wrote: never trusting them.

An agent cannot open the answers, but everything it leaves in its run directory is later read on
the host, where host paths resolve. A symbolic link planted as submission.csv and pointing at the
answers would be graded as the submission; a FIFO would hang the reader; a sparse 2 GiB file or a
million columns would exhaust the grader's memory. So every host-side reader of an agent-written
file goes through `open_untrusted`: each path component below the run directory is opened with
O_NOFOLLOW (no component may be a link), the file must be a regular file (checked on the open
descriptor, so a swap between check and open changes nothing), its size is bounded, and its
header line and column count are bounded before anything parses it.

`collect_submission` copies the submission this way, at the end of the run, to a directory the
agent cannot write (RUN/collected/), recording its size and sha256; grading uses that copy.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MIB = 1024 * 1024
# Same bound as the grading server's default upload limit: a submission the agent could not even
# validate is not graded either.
MAX_SUBMISSION_BYTES = 1024 * MIB
MAX_HEADER_BYTES = 1 * MIB
# Upstream's widest submissions have a few hundred columns (dog-breed-identification: 121).
MAX_COLUMNS = 10_000
CHUNK = 1 * MIB

SUBMISSION_REL = PurePosixPath("submission/submission.csv")
COLLECTED_REL = PurePosixPath("collected/submission.csv")


class UntrustedFileError(Exception):
    """The file is not what a submission may be; the message is one line, for reports."""


@dataclass(frozen=True)
class Collected:
    path: Path
    size: int
    sha256: str


def _open_below(base: Path, rel: PurePosixPath | str) -> tuple[int, os.stat_result]:
    """Open BASE/REL read-only without following any link below BASE; return (fd, fstat).

    BASE itself was made by the host and may lie below symbolic links of the site (e.g. a home
    directory on another file system); nothing below it may be a link.
    """
    rel = PurePosixPath(rel)
    if rel.is_absolute() or any(part in ("..", ".", "") for part in rel.parts) or not rel.parts:
        raise UntrustedFileError(f"{rel}: not a plain relative path")
    try:
        cur = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise UntrustedFileError(f"{base}: cannot open the run directory ({exc.strerror})") from None
    try:
        shown = PurePosixPath()
        for part in rel.parts[:-1]:
            shown /= part
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
            except OSError as exc:
                raise UntrustedFileError(_why(shown, exc, directory=True)) from None
            os.close(cur)
            cur = nxt
        name = rel.parts[-1]
        # lstat first: a FIFO or device is refused without ever being opened
        try:
            before = os.stat(name, dir_fd=cur, follow_symlinks=False)
        except OSError as exc:
            raise UntrustedFileError(_why(rel, exc, directory=False)) from None
        _require_regular(rel, before)
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=cur
            )
        except OSError as exc:
            raise UntrustedFileError(_why(rel, exc, directory=False)) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            os.close(fd)
            raise UntrustedFileError(f"{rel} changed while it was being opened; refused")
        return fd, st
    finally:
        os.close(cur)


def _why(rel: PurePosixPath, exc: OSError, directory: bool) -> str:
    if exc.errno == errno.ENOENT:
        return f"{rel} does not exist"
    if exc.errno in (errno.ELOOP, errno.EMLINK) or (directory and exc.errno == errno.ENOTDIR):
        what = "a symbolic link or not a directory" if directory else "a symbolic link"
        return f"{rel} is {what}; refused (links are never followed)"
    return f"{rel} cannot be opened ({exc.strerror})"


def _require_regular(rel: PurePosixPath, st: os.stat_result) -> None:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return
    if stat.S_ISLNK(mode):
        raise UntrustedFileError(f"{rel} is a symbolic link; refused (links are never followed)")
    kind = (
        "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a directory"
        if stat.S_ISDIR(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "not a regular file"
    )
    raise UntrustedFileError(f"{rel} is {kind}, not a regular file; refused")


@contextlib.contextmanager
def open_untrusted(
    base: Path, rel: PurePosixPath | str, max_bytes: int = MAX_SUBMISSION_BYTES
) -> Iterator[tuple[io.BufferedReader, int]]:
    """A reader for BASE/REL (see _open_below) and its size; refuses files over max_bytes."""
    fd, st = _open_below(Path(base), PurePosixPath(rel))
    try:
        if st.st_size > max_bytes:
            raise UntrustedFileError(
                f"{rel} is {st.st_size} bytes, over the limit of {max_bytes} bytes; refused"
            )
        os.set_blocking(fd, True)
        reader = os.fdopen(fd, "rb", buffering=CHUNK)
    except BaseException:
        os.close(fd)
        raise
    with reader:
        yield reader, st.st_size


def check_header(head: bytes, rel: PurePosixPath | str, max_columns: int = MAX_COLUMNS) -> int:
    """Bound the header line of a CSV (its first MAX_HEADER_BYTES bytes suffice) and its column
    count; returns the number of columns (0 for an empty file)."""
    if not head:
        return 0
    end = head.find(b"\n")
    if end < 0:
        if len(head) >= MAX_HEADER_BYTES:
            raise UntrustedFileError(f"{rel}: header line longer than {MAX_HEADER_BYTES} bytes; refused")
        end = len(head)
    line = head[:end].decode("utf-8", errors="replace")
    try:
        row = next(csv.reader([line]), [])
    except csv.Error:
        row = line.split(",")
    if len(row) > max_columns:
        raise UntrustedFileError(f"{rel} has {len(row)} columns, over the limit of {max_columns}; refused")
    return len(row)


def _stream(
    run_dir: Path, src_rel: PurePosixPath | str, out: io.BufferedWriter, max_bytes: int
) -> tuple[int, str]:
    """Copy RUN/src_rel to OUT through open_untrusted, bounding size and columns."""
    digest = hashlib.sha256()
    total = 0
    with open_untrusted(Path(run_dir), src_rel, max_bytes) as (reader, _size):
        data = reader.read(MAX_HEADER_BYTES)
        check_header(data, src_rel)
        while data:
            total += len(data)
            if total > max_bytes:  # grew after the size check
                raise UntrustedFileError(f"{src_rel} grew over the limit of {max_bytes} bytes; refused")
            digest.update(data)
            out.write(data)
            data = reader.read(CHUNK)
    return total, digest.hexdigest()


def collect_submission(
    run_dir: Path,
    dest_rel: PurePosixPath | str = COLLECTED_REL,
    src_rel: PurePosixPath | str = SUBMISSION_REL,
    max_bytes: int = MAX_SUBMISSION_BYTES,
) -> Collected:
    """Copy RUN/src_rel (agent-written) to RUN/dest_rel (host-only, made here, never a link) through
    open_untrusted; the copy lands atomically (temporary file + rename). Raises UntrustedFileError."""
    run_dir = Path(run_dir)
    dest = run_dir / dest_rel
    _host_dir(run_dir, PurePosixPath(dest_rel).parent)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            size, sha = _stream(run_dir, src_rel, out, max_bytes)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Collected(dest, size, sha)


def copy_to(
    run_dir: Path, src_rel: PurePosixPath | str, dest: Path, max_bytes: int = MAX_SUBMISSION_BYTES
) -> Collected:
    """Like collect_submission, into a new file DEST anywhere (e.g. a private temporary directory)."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            size, sha = _stream(Path(run_dir), src_rel, out, max_bytes)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return Collected(dest, size, sha)


def _host_dir(run_dir: Path, rel: PurePosixPath) -> None:
    """Make RUN/rel (host-only) as a real directory; a link or file there is an error."""
    path = run_dir
    for part in rel.parts:
        path = path / part
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):
                raise UntrustedFileError(f"{path} exists and is not a directory; refused") from None


def read_text_bounded(base: Path, rel: PurePosixPath | str, max_bytes: int) -> str:
    """The last max_bytes of BASE/REL as text (for log excerpts); links and special files refused."""
    fd, st = _open_below(Path(base), PurePosixPath(rel))
    with os.fdopen(fd, "rb") as f:
        if st.st_size > max_bytes:
            f.seek(st.st_size - max_bytes)
        return f.read(max_bytes).decode("utf-8", errors="replace")


def collect_record(run_dir: Path, max_bytes: int = MAX_SUBMISSION_BYTES) -> dict[str, object]:
    """Collect RUN's submission and describe the outcome for metadata.json (never raises for what
    the agent left: a missing or refused submission is an outcome, not an error)."""
    from datetime import datetime, timezone

    when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        got = collect_submission(run_dir, max_bytes=max_bytes)
    except UntrustedFileError as exc:
        missing = str(exc).endswith("does not exist")
        with contextlib.suppress(OSError):  # an earlier attempt's copy must not be graded now
            (Path(run_dir) / COLLECTED_REL).unlink()
        return {
            "submission_exists": False,
            "submission": {"status": "missing" if missing else "refused", "reason": str(exc), "at": when},
        }
    return {
        "submission_exists": True,
        "submission": {
            "status": "collected",
            "path": str(COLLECTED_REL),
            "bytes": got.size,
            "sha256": got.sha256,
            "at": when,
        },
    }
