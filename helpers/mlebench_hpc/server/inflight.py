"""The grading server's record of the `/validate` requests in flight, in its host-only state dir.

The server rewrites STATE/inflight.json (atomically) whenever an authenticated `/validate` request
starts, knows its upload's size, or ends. When the server dies during a run, the host reads it
(`mlebench-hpc run died --which grading`): a server that died while validating uploads was killed
by the agent's own requests (only this run's agent has the run's token), which is the agent's
doing, not an infrastructure failure. The agent never sees this directory, so it cannot forge the record.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import stat
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

INFLIGHT_FILE = "inflight.json"
MAX_RECORD_BYTES = 4096


@dataclass(frozen=True)
class InFlight:
    pid: int  # the server process
    in_flight: int  # authenticated /validate requests begun and not answered
    in_flight_bytes: int  # their uploads (declared length until the file is on disk)
    requests: int  # authenticated /validate requests so far
    over_budget: int  # of them answered invalid for exhausting a validation worker
    updated: str  # UTC, ISO 8601

    def describe(self) -> str:
        plural = "s" if self.in_flight != 1 else ""
        return f"{self.in_flight} upload{plural} ({self.in_flight_bytes / 2**20:.1f} MiB) being validated"


def read_inflight(path: Path) -> InFlight | None:
    """The record at PATH, or None when it is missing, not a regular file, too big or malformed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, MAX_RECORD_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_RECORD_BYTES:
        return None
    try:
        raw = json.loads(data)
        values = {f.name: raw[f.name] for f in fields(InFlight)}
    except (ValueError, TypeError, KeyError):
        return None
    for f in fields(InFlight):
        want = str if f.name == "updated" else int
        if not isinstance(values[f.name], want) or isinstance(values[f.name], bool):
            return None
    return InFlight(**values)


class InFlightRecorder:
    """Keeps STATE/inflight.json up to date; a recorder without a path records nothing."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}
        self._ids = itertools.count(1)
        self._requests = 0
        self._over_budget = 0
        if path is not None:
            self._write()

    def begin(self, declared: int) -> int:
        with self._lock:
            handle = next(self._ids)
            self._sizes[handle] = max(0, declared)
            self._requests += 1
            self._write()
            return handle

    def sized(self, handle: int, nbytes: int) -> None:
        with self._lock:
            if handle in self._sizes and self._sizes[handle] != nbytes:
                self._sizes[handle] = nbytes
                self._write()

    def end(self, handle: int) -> None:
        with self._lock:
            if self._sizes.pop(handle, None) is not None:
                self._write()

    def over_budget(self) -> None:
        with self._lock:
            self._over_budget += 1
            self._write()

    def remove(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _write(self) -> None:
        """Write then rename (under the lock): a reader sees one whole record. No fsync: the record
        must survive the server's death, not the machine's, and this runs on every request."""
        if self.path is None:
            return
        record = InFlight(
            pid=os.getpid(),
            in_flight=len(self._sizes),
            in_flight_bytes=sum(self._sizes.values()),
            requests=self._requests,
            over_budget=self._over_budget,
            updated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(asdict(record)))
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(tmp)
