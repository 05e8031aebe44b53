"""The grading server an agent calls over HTTP: `GET /health` and `POST /validate`, nothing else.

Compatible with upstream MLE-bench's Flask server (same paths, same multipart field `file`, HTTP 200
`{"result": message}` for valid and invalid submissions alike), but a real multi-threaded server
(cheroot): answers are parsed once before the URL is published, each upload is streamed to its own
temporary file, uploads are bounded, and no answer value, score, rank or medal ever leaves it.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs

import click
from cheroot import wsgi
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wrappers import Request

from mlebench_hpc.atomic import write_atomic

MIB = 1024 * 1024
READ_CHUNK = 64 * 1024
# A client whose body is a little over the limit must still read the 413 (closing a socket with
# unread data makes the kernel send a reset); one sending gigabytes gets closed on instead.
DRAIN_MAX_BYTES = 16 * MIB
DRAIN_MAX_SECS = 5.0
FORCE_CLOSE_KEY = "mlebench_hpc.force_close"
URL_MARKER = "GRADING_SERVER_URL="
WILDCARD_HOSTS = {"0.0.0.0", "::", ""}

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
    ) -> None:
        self.competition_id = competition_id
        self.validator = validator
        self.upload_dir = upload_dir
        self.max_upload_bytes = max_upload_bytes
        self.token = token or None
        self.activity = Activity()
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
        path = environ.get("PATH_INFO", "")[:200].encode("unicode_escape").decode("ascii")
        self._log(
            f"{environ.get('REQUEST_METHOD', '?')} {path} {status} bytes={counter.count} "
            f"ms={elapsed_ms:.1f} verdict={verdict}"
        )
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
            return 403, {"error": "forbidden: missing or wrong grading token"}, [], "refused"
        declared = _content_length(environ)
        if declared is not None and declared > self.max_upload_bytes:
            return 413, self._too_large(), [], "refused"
        request = _UploadRequest(environ, self.upload_dir, self.max_upload_bytes)
        try:
            try:
                upload = request.files.get("file")
            except RequestEntityTooLarge:
                return 413, self._too_large(), [], "refused"
            except HTTPException as exc:  # e.g. the client disconnected mid-body
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
            stream = upload.stream
            stream.flush()
            valid, message = self.validator(Path(stream.name))
            return 200, {"result": message, "valid": bool(valid)}, [], "valid" if valid else "invalid"
        finally:
            request.discard()

    def _too_large(self) -> dict[str, Any]:
        limit_mb = self.max_upload_bytes / MIB
        return {"error": f"upload too large: the limit is {limit_mb:g} MiB (--max-upload-mb)"}

    def _token_ok(self, environ: dict[str, Any]) -> bool:
        assert self.token is not None
        given = environ.get("HTTP_X_GRADING_TOKEN")
        if given is None:
            values = parse_qs(environ.get("QUERY_STRING", "")).get("token")
            given = values[0] if values else None
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    # -- connection hygiene -------------------------------------------------------------------
    def _settle_body(self, environ: dict[str, Any], raw: Any) -> None:
        """Read what is left of the request body if that is cheap, else close the connection.

        cheroot would otherwise read an unread fixed-length body in one piece, into memory, to keep
        the connection alive."""
        if raw is None:
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
    sys.stderr.write(f"{stamp} grading-server {line}\n")
    sys.stderr.flush()


class _Gateway(wsgi.Gateway_10):
    """Lets the app close the connection instead of having cheroot slurp an unread body."""

    def get_environ(self) -> dict[str, Any]:
        env: dict[str, Any] = super().get_environ()
        req = self.req

        def close() -> None:
            req.close_connection = True

        env[FORCE_CLOSE_KEY] = close
        return env


class _Server(wsgi.Server):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gateway = _Gateway
        # Body size is decided by the app (JSON 413, bounded drain); 0 = cheroot does not check.
        self.max_request_body_size = 0


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


# -- the process ----------------------------------------------------------------------------------
def serve(
    competition_id: str,
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    url_file: Path | None = None,
    max_upload_mb: float = 1024,
    idle_timeout: float = 0,
    token: str | None = None,
    threads: int = 16,
    mlebench_dir: Path | None = None,
    tmp_dir: Path | None = None,
) -> int:
    """Run until SIGTERM/SIGINT or --idle-timeout; returns the exit code."""
    stop = threading.Event()
    reason: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        reason.append(signal.Signals(signum).name)
        stop.set()

    # Registered first: a SIGTERM during start-up still ends in a clean exit.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # Imports and the answers are loaded before anything is published.
    from mlebench_hpc.grading import GradingSetupError, load_competition

    try:
        if mlebench_dir is not None:
            competition = load_competition(competition_id, data_dir, mlebench_dir=mlebench_dir)
        else:
            competition = load_competition(competition_id, data_dir)
    except GradingSetupError as exc:
        _stderr_line(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return 2
    sample = getattr(getattr(competition, "spec", None), "sample_submission", "sample_submission.csv")
    _warm_up(competition, data_dir / competition_id / "prepared" / "public" / sample)

    # Private (0700) directory for this process's uploads, removed at exit.
    upload_dir = Path(tempfile.mkdtemp(prefix="mlebench-grading-uploads-", dir=tmp_dir))
    app = GradingApp(
        competition_id,
        competition.validate,
        upload_dir,
        max_upload_bytes=int(max_upload_mb * MIB),
        token=token,
    )
    server = _Server(
        (host, port),
        app,
        numthreads=threads,
        request_queue_size=128,
        timeout=30,
        shutdown_timeout=5,
        server_name="mlebench-hpc-grading",
    )
    published = False
    try:
        try:
            server.prepare()  # bind + listen
        except OSError as exc:
            _stderr_line(f"error: cannot listen on {host}:{port} ({exc}); use --port 0 for a free port")
            return 2
        worker = threading.Thread(target=server.serve, name="cheroot-serve", daemon=True)
        worker.start()
        bound_port = int(server.bind_addr[1])
        url = format_url(published_host(host), bound_port)
        if not stop.is_set():
            if url_file is not None:
                try:
                    write_url_file(url_file, url)
                except OSError as exc:
                    _stderr_line(f"error: cannot write the URL file {url_file} ({exc}); check --url-file")
                    return 2
                published = True
            print(f"{URL_MARKER}{url}", flush=True)
            backend = getattr(competition, "backend", "?")
            _stderr_line(
                f"serving {competition_id} ({backend} backend) on {url} (bound {host}:{bound_port}), "
                f"max upload {max_upload_mb:g} MiB, idle timeout {idle_timeout:g}s, "
                f"token {'required' if token else 'off'}"
            )
        while not stop.wait(0.5):
            if idle_timeout > 0 and app.activity.idle_for() >= idle_timeout:
                reason.append(f"idle for {idle_timeout:g}s")
                break
            if not worker.is_alive():
                _stderr_line("error: the server thread stopped unexpectedly")
                return 1
        _stderr_line(f"stopping ({', '.join(reason) or 'requested'})")
        return 0
    finally:
        if published and url_file is not None:
            with contextlib.suppress(OSError):
                url_file.unlink()
        with contextlib.suppress(Exception):
            server.stop()
        shutil.rmtree(upload_dir, ignore_errors=True)


def _warm_up(competition: Any, sample: Path) -> None:
    """Validate the public sample once so the first agent request does not pay for lazy imports."""
    if sample.is_file():
        with contextlib.suppress(Exception):
            competition.validate(sample)


@click.command("serve")
@click.option("--competition-id", envvar="COMPETITION_ID", required=True, help="Competition to validate for.")
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Prepared data: DATA_DIR/<competition>/prepared/{public,private}.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (0.0.0.0: all).")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535), help="0 = a free port.")
@click.option(
    "--url-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the URL here (atomically) once listening; removed at exit.",
)
@click.option(
    "--max-upload-mb",
    envvar="GRADING_MAX_UPLOAD_MB",
    default=1024.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Largest accepted request body.",
)
@click.option(
    "--idle-timeout",
    envvar="GRADING_IDLE_TIMEOUT",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Exit 0 after this many seconds without a request (0 = never).",
)
@click.option(
    "--token",
    envvar="GRADING_SERVER_TOKEN",
    default=None,
    help="If set, /validate requires it (header X-Grading-Token or ?token=). "
    "Prefer the env var GRADING_SERVER_TOKEN: ps shows command lines.",
)
@click.option("--threads", default=16, show_default=True, type=click.IntRange(1, 256), help="Worker threads.")
@click.option(
    "--mlebench-dir",
    envvar="MLEBENCH_DIR",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Upstream MLE-bench checkout (leaderboards), if any.",
)
@click.option(
    "--tmp-dir",
    envvar="GRADING_TMP_DIR",
    default=None,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Where uploads are streamed (default: $TMPDIR or /tmp). Needs room for --max-upload-mb.",
)
def serve_cmd(
    competition_id: str,
    data_dir: Path,
    host: str,
    port: int,
    url_file: Path | None,
    max_upload_mb: float,
    idle_timeout: float,
    token: str | None,
    threads: int,
    mlebench_dir: Path | None,
    tmp_dir: Path | None,
) -> None:
    """Serve GET /health and POST /validate for one competition; print GRADING_SERVER_URL=... once
    listening."""
    code = serve(
        competition_id,
        data_dir,
        host=host,
        port=port,
        url_file=url_file,
        max_upload_mb=max_upload_mb,
        idle_timeout=idle_timeout,
        token=token,
        threads=threads,
        mlebench_dir=mlebench_dir,
        tmp_dir=tmp_dir,
    )
    sys.exit(code)
