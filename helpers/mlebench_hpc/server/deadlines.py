"""Deadlines for the grading server's connections, so slow clients cannot hold its worker threads.

cheroot gives every connection a worker thread from the moment it is accepted (or, when kept alive,
from its next byte) and only bounds each socket read (30 s). A client that sends a byte every few
seconds ("slowloris") therefore keeps its thread for as long as it likes, and forty of them keep
every other request waiting. Here every read of a connection is bounded by the time left before the
connection's current deadline:

* request line + headers: `header_secs` from accept (or from the first byte of a kept-alive
  connection's next request), and at least HEADER_GRACE_SECS once a thread picks it up. Counting
  from accept, not from pick-up, is what bounds an honest client's wait: every connection queued
  ahead of it was accepted earlier, so it is gone by the honest client's own deadline (plus a grace
  per queued connection).
* body: `body_secs` + bytes received / `body_min_rate` from the end of the headers: a minimum
  average rate, so an honest 1 GiB upload at 1 MiB/s or faster is never cut, while a body that
  trickles is, whatever Content-Length it declares.

A read past the deadline raises TimeoutError("timed out"), which cheroot answers with 408 and a
closed connection (while reading headers) and the application turns into a 408 JSON answer (body).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

from cheroot import server as cheroot_server
from cheroot.makefile import StreamReader, StreamWriter

MIB = 1024 * 1024
# An honest client whose complete headers wait in the queue behind slow ones still gets this long
# to have them read; a slow client picked up late holds its thread no longer than this.
HEADER_GRACE_SECS = 0.5


@dataclass(frozen=True)
class Deadlines:
    """The limits, all in seconds except the rate (bytes per second)."""

    header_secs: float = 10.0
    body_secs: float = 30.0
    body_min_rate: float = 1.0 * MIB
    read_idle_secs: float = 30.0  # the longest single read, in any phase

    def describe(self) -> str:
        return (
            f"headers within {self.header_secs:g}s, body within {self.body_secs:g}s + "
            f"{self.body_min_rate / MIB:g} MiB/s"
        )


class DeadlineSocketIO(socket.SocketIO):
    """A socket's read side whose every read ends by the connection's current deadline."""

    def __init__(self, sock: socket.socket, mode: str, limits: Deadlines) -> None:
        super().__init__(sock, mode)
        self.limits = limits
        self.phase = "idle"  # idle | headers | body
        self.expired_phase: str | None = None  # set once a deadline cut the connection
        self._header_deadline = 0.0
        self._body_start = 0.0
        self._body_bytes = 0

    # -- phases, set by the connection and request classes below -----------------------------------
    def start_headers(self, queued_at: float) -> None:
        now = time.monotonic()
        self.phase = "headers"
        self._header_deadline = max(queued_at + self.limits.header_secs, now + HEADER_GRACE_SECS)

    def start_body(self) -> None:
        self.phase = "body"
        self._body_start = time.monotonic()
        self._body_bytes = 0

    def stop(self) -> None:
        self.phase = "idle"

    def time_left(self) -> float:
        now = time.monotonic()
        if self.phase == "headers":
            return self._header_deadline - now
        if self.phase == "body":
            allowed = self.limits.body_secs + self._body_bytes / self.limits.body_min_rate
            return self._body_start + allowed - now
        return self.limits.read_idle_secs

    # -- the read itself ----------------------------------------------------------------------------
    def readinto(self, b: Any) -> int | None:
        left = self.time_left()
        if left <= 0:
            self._expire()
        self._sock.settimeout(min(left, self.limits.read_idle_secs))
        try:
            n = super().readinto(b)
        except TimeoutError:
            if self.time_left() <= 0:
                self.expired_phase = self.expired_phase or self.phase
            raise
        finally:
            # the socket's timeout also governs writes: give the response the usual time
            self._sock.settimeout(self.limits.read_idle_secs)
        if n and self.phase == "body":
            self._body_bytes += n
        return n

    def _expire(self) -> None:
        self.expired_phase = self.expired_phase or self.phase
        raise TimeoutError("timed out")  # cheroot recognises this text: 408, connection closed


def _make_file(sock: socket.socket, mode: str, bufsize: int, limits: Deadlines) -> Any:
    if "r" not in mode:
        return StreamWriter(sock, mode, bufsize)
    reader = StreamReader(sock, mode, bufsize)
    # Same buffered reader, with our raw socket reader under it.
    super(StreamReader, reader).__init__(DeadlineSocketIO(sock, mode, limits), bufsize)
    return reader


class DeadlineRequest(cheroot_server.HTTPRequest):
    """Switches the connection to its body deadline once the headers are in."""

    def parse_request(self) -> None:
        super().parse_request()
        if self.ready:
            self.conn.rfile.raw.start_body()


class DeadlineConnection(cheroot_server.HTTPConnection):
    RequestHandlerClass = DeadlineRequest

    def __init__(self, server: Any, sock: socket.socket, makefile: Any = None) -> None:
        self.queued_at = time.monotonic()
        limits: Deadlines = server.deadlines

        def make_file(s: socket.socket, mode: str, bufsize: int) -> Any:
            return _make_file(s, mode, bufsize, limits)

        super().__init__(server, sock, make_file)

    @property
    def deadline_io(self) -> DeadlineSocketIO:
        raw: DeadlineSocketIO = self.rfile.raw
        return raw

    def communicate(self) -> bool:
        raw = self.deadline_io
        raw.start_headers(self.queued_at)
        try:
            keep_open: bool = super().communicate()
        finally:
            raw.stop()
        if raw.expired_phase == "headers":
            self.server.on_slow_client(self, "headers")
        return keep_open and raw.expired_phase is None
