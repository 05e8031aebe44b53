"""The grading server an agent calls over HTTP: `GET /health` and `POST /validate`, nothing else.

Compatible with upstream MLE-bench's Flask server (same paths, same multipart field `file`, HTTP 200
`{"result": message}` for valid and invalid submissions alike), but a real multi-threaded server
(cheroot): answers are parsed once before the URL is published, each upload is streamed to its own
temporary file on disk (--tmp-dir), uploads are bounded in size and time, /validate requires the
run's token when one is configured, and no answer value, score, rank or medal ever leaves it.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from http import HTTPStatus
from pathlib import Path
from traceback import format_exception
from typing import IO, Any

from cheroot import wsgi
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wrappers import Request

from mlebench_hpc.atomic import write_atomic
from mlebench_hpc.printable import printable
from mlebench_hpc.server.deadlines import DeadlineConnection, Deadlines, DeadlineSocketIO
from mlebench_hpc.server.inflight import InFlightRecorder
from mlebench_hpc.server.tokens import TOKEN_ENV, TOKEN_HEADER
from mlebench_hpc.server.validation_pool import (
    FREE_WORKER_WAIT_SECS,
    PoolBusy,
)

MIB = 1024 * 1024
READ_CHUNK = 64 * 1024
# A client whose body is a little over the limit must still read the 413 (closing a socket with
# unread data makes the kernel send a reset); one sending gigabytes gets closed on instead.
DRAIN_MAX_BYTES = 16 * MIB
DRAIN_MAX_SECS = 5.0
FORCE_CLOSE_KEY = "mlebench_hpc.force_close"
DEADLINE_KEY = "mlebench_hpc.deadline"
URL_MARKER = "GRADING_SERVER_URL="
WILDCARD_HOSTS = {"0.0.0.0", "::", ""}
# cheroot keeps request headers in memory and does not bound them by default.
MAX_HEADER_BYTES = 64 * 1024
UPLOAD_DIR_PREFIX = "mlebench-grading-uploads-"
UPLOAD_DIR_LOCK = ".owner.lock"
ERROR_LOG_EVERY_SECS = 60.0
# Thread pools of numpy's BLAS and OpenMP, pinned to one thread before numpy is imported.
THREAD_POOL_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# A write that fails with these means the upload area is full, not that the submission is wrong.
NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

StartResponse = Callable[..., Any]


class _CountingInput:
    """wsgi.input wrapper that counts the bytes read, for the request log."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.count = 0

    def read(self, size: int | None = -1) -> bytes:
        data = self.raw.read() if size is None or size < 0 else self.raw.read(size)
        self.count += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data = self.raw.readline() if size is None or size < 0 else self.raw.readline(size)
        self.count += len(data)
        return data


class _UploadRequest(Request):
    """werkzeug Request whose file parts go to our own temporary files (never memory), so they can
    be validated in place and always deleted."""

    # Bounds plain (non-file) fields, and werkzeug's parser buffer, which holds a 64 KiB read plus
    # a tail: so it must stay well above 64 KiB or every upload over ~128 KiB is refused.
    max_form_memory_size = 1 * MIB
    max_form_parts = 16

    def __init__(self, environ: dict[str, Any], upload_dir: Path, max_bytes: int) -> None:
        super().__init__(environ)
        self.max_content_length = max_bytes
        self._upload_dir = upload_dir
        self.spooled: list[IO[bytes]] = []

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        # .csv whatever the client called it: graders may check the suffix.
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed and unlinked in discard()
            dir=self._upload_dir, prefix="upload-", suffix=".csv", delete=False
        )
        self.spooled.append(handle)
        return handle

    def discard(self) -> None:
        for handle in self.spooled:
            with contextlib.suppress(OSError):
                handle.close()
            with contextlib.suppress(OSError):
                os.unlink(handle.name)
        self.spooled.clear()


class Activity:
    """When the server last saw a request, for --idle-timeout."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._last = time.monotonic()

    def begin(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._last = time.monotonic()

    def end(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._last = time.monotonic()

    def idle_for(self) -> float:
        with self._lock:
            return 0.0 if self._in_flight else time.monotonic() - self._last


class GradingApp:
    """The WSGI application. `validator` is the engine's `comp.validate(path) -> (valid, message)`."""

    def __init__(
        self,
        competition_id: str,
        validator: Callable[[Path], tuple[bool, str]],
        upload_dir: Path,
        max_upload_bytes: int,
        token: str | None = None,
        log: Callable[[str], None] | None = None,
        deadlines: Deadlines | None = None,
        inflight: InFlightRecorder | None = None,
    ) -> None:
        self.competition_id = competition_id
        self.validator = validator
        self.upload_dir = upload_dir
        self.max_upload_bytes = max_upload_bytes
        self.token = token or None
        self.deadlines = deadlines or Deadlines()
        self.activity = Activity()
        self.inflight = inflight or InFlightRecorder(None)
        self._log = log or _stderr_line

    # -- WSGI entry point -------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.monotonic()
        self.activity.begin()
        raw_input = environ.get("wsgi.input")
        counter = _CountingInput(raw_input)
        environ["wsgi.input"] = counter
        verdict = "-"
        try:
            status, payload, headers, verdict = self._dispatch(environ)
        except Exception:  # never let a bug leak a traceback (and its paths) to the client
            self._log("error: unexpected failure handling a request:\n" + traceback.format_exc().rstrip())
            status, headers, verdict = 500, [], "error"
            payload = {
                "error": "An unexpected error occurred.",
                "details": "internal error in the grading server; its log has the traceback",
            }
        try:
            self._settle_body(environ, raw_input)
        except Exception:  # the client went away while we drained: nothing left to protect
            _force_close(environ)
        body = json.dumps(payload).encode()
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff"),
                *headers,
            ],
        )
        self.activity.end()
        elapsed_ms = (time.monotonic() - started) * 1000
        # The client chose the method and the path: escaped, neither can end this line or start one.
        method = environ.get("REQUEST_METHOD", "?")[:20].encode("unicode_escape").decode("ascii")
        path = environ.get("PATH_INFO", "")[:200].encode("unicode_escape").decode("ascii")
        self._log(f"{method} {path} {status} bytes={counter.count} ms={elapsed_ms:.1f} verdict={verdict}")
        return [body]

    # -- routing ------------------------------------------------------------------------------
    def _dispatch(self, environ: dict[str, Any]) -> tuple[int, dict[str, Any], list[tuple[str, str]], str]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "")
        if path == "/health":
            if method != "GET":
                return 405, {"error": "method not allowed: use GET /health"}, [("Allow", "GET")], "-"
            return 200, {"status": "running", "competition": self.competition_id}, [], "-"
        if path == "/validate":
            if method != "POST":
                return (
                    405,
                    {"error": "method not allowed: POST the submission as multipart field 'file'"},
                    [("Allow", "POST")],
                    "-",
                )
            return self._validate(environ)
        # No file serving, no listing: only the two endpoints exist.
        return 404, {"error": "not found: the only endpoints are GET /health and POST /validate"}, [], "-"

    def _validate(self, environ: dict[str, Any]) -> tuple[int, dict[str, Any], list[tuple[str, str]], str]:
        if self.token is not None and not self._token_ok(environ):
            return 401, _UNAUTHORIZED, [("WWW-Authenticate", 'Bearer realm="grading"')], "unauthorized"
        declared = _content_length(environ)
        if declared is not None and declared > self.max_upload_bytes:
            return 413, self._too_large(), [], "refused"
        # From here on the request is the agent's (it has the run's token): recorded as in flight,
        # so that a server that dies now is known to have died of the agent's requests.
        handle = self.inflight.begin(declared or 0)
        try:
            return self._receive_and_validate(environ, handle)
        finally:
            self.inflight.end(handle)

    def _receive_and_validate(
        self, environ: dict[str, Any], handle: int
    ) -> tuple[int, dict[str, Any], list[tuple[str, str]], str]:
        request = _UploadRequest(environ, self.upload_dir, self.max_upload_bytes)
        try:
            try:
                upload = request.files.get("file")
                if upload is not None:
                    upload.stream.flush()  # a full disk shows here at the latest
            except RequestEntityTooLarge:
                return 413, self._too_large(), [], "refused"
            except (HTTPException, OSError) as exc:  # client gone, too slow, or no room on disk
                if _deadline_expired(environ):
                    _force_close(environ)
                    return 408, self._too_slow(), [], "too-slow"
                if isinstance(exc, OSError):
                    if exc.errno not in NO_ROOM_ERRNOS:
                        raise
                    self._log(f"error: no room for an upload in {self.upload_dir}: {exc.strerror}")
                    _force_close(environ)
                    return 507, _no_room(exc), [], "no-space"
                code = exc.code or 400
                return code, {"error": f"bad upload: {exc.name}"}, [], "refused"
            if upload is None:
                return (
                    400,
                    {
                        "error": "no file: POST the submission as multipart/form-data field 'file', "
                        "e.g. curl -F file=@submission.csv <url>/validate"
                    },
                    [],
                    "refused",
                )
            path = Path(upload.stream.name)
            self.inflight.sized(handle, path.stat().st_size)
            try:
                valid, message = self.validator(path)
            except PoolBusy:
                return 503, _BUSY, [("Retry-After", "60")], "busy"
            return 200, {"result": message, "valid": bool(valid)}, [], "valid" if valid else "invalid"
        finally:
            request.discard()

    def _too_large(self) -> dict[str, Any]:
        limit_mb = self.max_upload_bytes / MIB
        return {"error": f"upload too large: the limit is {limit_mb:g} MiB (--max-upload-mb)"}

    def _too_slow(self) -> dict[str, Any]:
        limits = self.deadlines
        return {
            "error": "upload too slow: the grading server closed the connection",
            "details": f"the body must arrive within {limits.body_secs:g} s plus 1 s per "
            f"{limits.body_min_rate / MIB:g} MiB; send the file again with /home/validate_submission.sh",
        }

    def _token_ok(self, environ: dict[str, Any]) -> bool:
        """The token from X-Grading-Token or `Authorization: Bearer`, compared in constant time.
        Never from the query string: URLs end up in logs."""
        assert self.token is not None
        expected = self.token.encode()
        given = [environ.get("HTTP_" + TOKEN_HEADER.upper().replace("-", "_"))]
        scheme, _, credentials = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
        if scheme.lower() == "bearer":
            given.append(credentials.strip())
        matches = [hmac.compare_digest(g.encode("latin-1", "replace"), expected) for g in given if g]
        return any(matches)

    # -- connection hygiene -------------------------------------------------------------------
    def _settle_body(self, environ: dict[str, Any], raw: Any) -> None:
        """Read what is left of the request body if that is cheap, else close the connection.

        cheroot would otherwise read an unread fixed-length body in one piece, into memory, to keep
        the connection alive."""
        if raw is None:
            return
        if _deadline_expired(environ):
            _force_close(environ)
            return
        remaining = getattr(raw, "remaining", None)
        if remaining is not None:  # Content-Length body
            if remaining == 0:
                return
            if remaining > DRAIN_MAX_BYTES:
                _force_close(environ)
                return
        elif getattr(raw, "closed", True):  # chunked body fully read, or nothing to read
            return
        deadline = time.monotonic() + DRAIN_MAX_SECS
        drained = 0
        while drained < DRAIN_MAX_BYTES and time.monotonic() < deadline:
            chunk = raw.read(READ_CHUNK)
            if not chunk:
                return
            drained += len(chunk)
        _force_close(environ)


_UNAUTHORIZED = {
    "error": "unauthorized: this grading server needs the run's token",
    "details": "validate with /home/validate_submission.sh, which sends it (header "
    f"{TOKEN_HEADER} from the environment variable {TOKEN_ENV})",
}


_BUSY = {
    "error": "the grading server is busy validating other uploads",
    "details": f"no validation worker was free within {FREE_WORKER_WAIT_SECS:g} s; this says nothing "
    "about the submission: try again in a minute",
}


def _no_room(exc: OSError) -> dict[str, Any]:
    return {
        "error": "no space for the upload",
        "details": f"the grading server ran out of disk space for uploads ({exc.strerror}); this "
        "says nothing about the submission: try again later or with a smaller file",
    }


def _deadline_expired(environ: dict[str, Any]) -> bool:
    raw: DeadlineSocketIO | None = environ.get(DEADLINE_KEY)
    return raw is not None and raw.expired_phase is not None


def _force_close(environ: dict[str, Any]) -> None:
    closer = environ.get(FORCE_CLOSE_KEY)
    if closer is not None:
        closer()


def _content_length(environ: dict[str, Any]) -> int | None:
    try:
        return int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


def _stderr_line(line: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    # Every physical line carries the stamp and no control character: nothing in a message (a
    # traceback quoting a client's bytes) can start a line of the job output or redraw one.
    sys.stderr.write(
        "".join(f"{stamp} grading-server {printable(part)}\n" for part in line.splitlines() or [""])
    )
    sys.stderr.flush()


class _Gateway(wsgi.Gateway_10):
    """Lets the app close the connection instead of having cheroot slurp an unread body."""

    def get_environ(self) -> dict[str, Any]:
        env: dict[str, Any] = super().get_environ()
        req = self.req

        def close() -> None:
            req.close_connection = True

        env[FORCE_CLOSE_KEY] = close
        rfile = getattr(req.conn, "rfile", None)
        env[DEADLINE_KEY] = getattr(rfile, "raw", None)
        return env


class _Server(wsgi.Server):
    ConnectionClass = DeadlineConnection

    def __init__(self, *args: Any, deadlines: Deadlines, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gateway = _Gateway
        self.deadlines = deadlines
        # Body size is decided by the app (JSON 413, bounded drain); 0 = cheroot does not check.
        self.max_request_body_size = 0
        self.max_request_header_size = MAX_HEADER_BYTES
        self._error_lock = threading.Lock()
        self._error_seen: dict[str, tuple[float, int]] = {}

    def process_conn(self, conn: Any) -> None:
        # A new connection, or a kept-alive one with a new request: its header deadline starts now.
        conn.queued_at = time.monotonic()
        super().process_conn(conn)

    def on_slow_client(self, conn: Any, phase: str) -> None:
        _stderr_line(
            f"dropped a slow client {conn.remote_addr}:{conn.remote_port}: no complete request "
            f"{phase} within {self.deadlines.header_secs:g}s"
        )

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        """cheroot's own errors, each kind at most once per ERROR_LOG_EVERY_SECS. When a client holds
        every file descriptor, accept() fails in a loop: unthrottled, that wrote 25 MB of tracebacks
        in two seconds."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            time.sleep(0.1)  # accept() keeps failing until connections close: do not spin
        kind = re.sub(r"\d+", "N", f"{msg} {type(exc).__name__} {getattr(exc, 'errno', '')}")[:300]
        now = time.monotonic()
        with self._error_lock:
            last, skipped = self._error_seen.get(kind, (-ERROR_LOG_EVERY_SECS, 0))
            if now - last < ERROR_LOG_EVERY_SECS:
                self._error_seen[kind] = (last, skipped + 1)
                return
            self._error_seen[kind] = (now, 0)
        line = f"cheroot: {msg}" + (f": {exc!r}" if exc else "")
        if skipped:
            line += f" (and {skipped} more like it in the last {now - last:.0f}s)"
        if traceback and exc is not None:
            line += "\n" + "".join(format_exception(exc)).rstrip()
        _stderr_line(line)


# -- URL publication ------------------------------------------------------------------------------
def published_host(bind_host: str) -> str:
    """The host other machines should use: the bind address, or for a wildcard bind the machine's
    resolvable name (the IP when no name resolves)."""
    if bind_host not in WILDCARD_HOSTS:
        return bind_host
    for name in (socket.getfqdn(), socket.gethostname()):
        if name and not name.startswith("localhost") and _resolves(name):
            return name
    return _primary_ip()


def _resolves(name: str) -> bool:
    try:
        return bool(socket.getaddrinfo(name, None))
    except OSError:
        return False


def _primary_ip() -> str:
    # A UDP "connect" sends nothing; it only asks the kernel which interface routes outwards.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def format_url(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def write_url_file(path: Path, url: str) -> None:
    """Write then rename, so a reader never sees a partial URL."""
    write_atomic(path, (url + "\n").encode(), 0o644)
