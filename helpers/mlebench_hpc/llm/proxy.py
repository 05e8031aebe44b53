"""`mlebench-hpc llm-proxy`: the front of an LLM server job, which no other process on the node can
join or impersonate.

Agents run as the same Unix user as the server, in the host's network namespace, and see every
listening port in /proc/net/tcp. vLLM and llama.cpp's server set SO_REUSEPORT, so an agent can bind
the server's own port and receive part of the connections (prompts and keys of other runs), and
answer them (code that other runs' agents then execute). So the job runs the server (the backend,
LLM_CMD) on 127.0.0.1 only, and this proxy in front of it:

* its listening socket has no SO_REUSEPORT and is dual-stack (`[::]`, IPv4 and IPv6 on one port)
  where the node has IPv6, else 0.0.0.0: nobody can bind its port on either family;
* every connection to the backend is checked before a byte of the request goes out: the server side
  of the connection must be held by the backend's own process tree (socket_owner.py); a connection
  accepted by anyone else is closed unsent, logged as an ERROR, and another one opened;
* a request is forwarded only with a key registered by a run (keys.KeyRing: 401 otherwise),
  and goes out with the server's own key instead, which only the backend and this proxy know;
* only GET and POST under /v1/ pass, bodies are bounded, responses are streamed as they come.

`llm-proxy backend-env` writes the backend's 0600 env file (and the proxy's copy of the key) first;
`llm-proxy serve` then waits until the backend lists the model, binds, publishes its URL
(OUTPUT_BASE/.state/llm/<job>/url, and one `LLM_SERVER_URL=` line on stdout) and serves until
SIGTERM."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import click
from cheroot import errors as cheroot_errors
from cheroot import wsgi

from mlebench_hpc.atomic import write_atomic
from mlebench_hpc.errors import HelperError
from mlebench_hpc.llm import socket_owner
from mlebench_hpc.llm.endpoint import URL_MARK, models_verdict
from mlebench_hpc.llm.keys import BACKEND_KEY_NAMES, KeyRing, keys_dir, new_key, read_api_key, write_env_file
from mlebench_hpc.run.readiness import check_pid_alive
from mlebench_hpc.server.deadlines import DeadlineConnection, Deadlines

MIB = 1024 * 1024
BACKEND_HOST = "127.0.0.1"
# A connection that lands on a joiner is retried; with one joiner beside the server, each try
# reaches the server with probability 1/2 at least, so 32 tries fail together once in 4e9.
CONNECT_TRIES = 32
CONNECT_BUDGET_SECS = 60.0
ERROR_LOG_EVERY_SECS = 10.0
READ_CHUNK = 64 * 1024
MAX_HEADER_BYTES = 64 * 1024
# OpenAI's API lives under /v1: nothing else of the backend (llama.cpp's /slots shows other runs'
# prompts) is reachable, and a path that could pass for a URL line in a log is refused.
PATH_OK = re.compile(r"/v1(/[A-Za-z0-9._:-]+)*/?")
QUERY_OK = re.compile(r"[A-Za-z0-9._~%&=+,:-]*")
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "authorization",
        "content-length",
        "expect",
    }
)


def log_line(line: str) -> None:
    sys.stderr.write(f"[llm-proxy {time.strftime('%H:%M:%S')}] {line}\n")
    sys.stderr.flush()


class BackendUnavailable(Exception):
    """No connection to the backend could be made (or verified)."""


class Backend:
    """The LLM server behind the proxy: 127.0.0.1:PORT, served by the process tree of PID."""

    def __init__(
        self, port: int, pid: int, key: str, timeout: float, log: Callable[[str], None] = log_line
    ) -> None:
        self.port = port
        self.pid = pid
        self.key = key
        self.timeout = timeout
        self.log = log
        self.refused = 0
        self.tree = socket_owner.Tree(pid)
        self._lock = threading.Lock()
        self._last_error = -ERROR_LOG_EVERY_SECS
        self._unlogged = 0

    def connect(self) -> socket.socket:
        """A connection accepted by the backend's own process tree (BackendUnavailable if none)."""
        deadline = time.monotonic() + CONNECT_BUDGET_SECS
        for _ in range(CONNECT_TRIES):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                sock = socket.create_connection((BACKEND_HOST, self.port), timeout=min(10.0, left))
            except OSError as exc:
                raise BackendUnavailable(f"127.0.0.1:{self.port}: {exc.strerror or exc}") from None
            try:
                peer = socket_owner.check_peer(sock, self.tree, min(socket_owner.ACCEPT_WAIT_SECS, left))
            except OSError as exc:  # reset by the other end during the check
                sock.close()
                raise BackendUnavailable(f"127.0.0.1:{self.port}: {exc}") from None
            if peer.owned:
                sock.settimeout(self.timeout)
                return sock
            self._refused(peer)  # while it is open: the error line names who holds it
            sock.close()  # nothing was sent on it
        raise BackendUnavailable(
            f"no connection to 127.0.0.1:{self.port} reached the LLM server (pid {self.pid}) in "
            f"{CONNECT_TRIES} tries: other processes hold its port"
        )

    def _refused(self, peer: socket_owner.Peer) -> None:
        with self._lock:
            self.refused += 1
            now = time.monotonic()
            if now - self._last_error < ERROR_LOG_EVERY_SECS:
                self._unlogged += 1
                return
            more = f"; {self._unlogged} more since the last line" if self._unlogged else ""
            self._last_error, self._unlogged = now, 0
        if peer.inode:
            self.log(
                f"ERROR: a connection to the LLM server's port 127.0.0.1:{self.port} was accepted by "
                f"{peer.describe()}, not by the LLM server (pid {self.pid}): someone joined its port. "
                f"Closed it unsent and opened another{more}"
            )
        else:
            self.log(
                f"warning: a connection to 127.0.0.1:{self.port} was not accepted within "
                f"{socket_owner.ACCEPT_WAIT_SECS:g}s: closed it unsent and opened another{more}"
            )

    def request(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send one request on a verified connection, with the server's key; the response is
        read by the caller, who closes the connection."""
        sock = self.connect()
        conn = http.client.HTTPConnection(BACKEND_HOST, self.port, timeout=self.timeout)
        conn.sock = sock
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", f"{BACKEND_HOST}:{self.port}")
            for name, value in headers:
                conn.putheader(name, value)
            conn.putheader("Authorization", f"Bearer {self.key}")
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.putheader("Connection", "close")
            conn.endheaders(body)
            return conn, conn.getresponse()
        except BaseException:
            conn.close()
            raise

    def wait_ready(self, model: str, timeout: float, stop: threading.Event) -> float:
        """Seconds until the backend listed MODEL; HelperError when it cannot or did not in time."""
        start = time.monotonic()
        deadline, next_progress, delay = start + timeout, start + 30.0, 0.5
        url = f"http://{BACKEND_HOST}:{self.port}/v1"
        last = "no attempt made"
        while not stop.is_set():
            check_pid_alive(self.pid, what="LLM server process")
            try:
                conn, resp = self.request("GET", "/v1/models", [("Accept", "application/json")], None)
                try:
                    text = resp.read(4 * MIB).decode("utf-8", "replace")
                finally:
                    conn.close()
                if resp.status in (401, 403):
                    raise HelperError(
                        f"the LLM server refused its own key (HTTP {resp.status}): LLM_CMD must take it from "
                        "LLM_API_KEY (vLLM reads VLLM_API_KEY, llama.cpp LLAMA_API_KEY), not from elsewhere"
                    )
                reason = models_verdict(resp.status, text, url, model, keyed=True)
            except (BackendUnavailable, OSError, http.client.HTTPException) as exc:
                reason = f"{type(exc).__name__}: {str(exc)[:200]}"
            if reason is None:
                self._warn_if_open(model)
                return time.monotonic() - start
            last = reason
            now = time.monotonic()
            if now >= deadline:
                raise HelperError(
                    f"the LLM server did not list {model} within {timeout:.0f}s; last error: {last}"
                )
            if now >= next_progress:
                log_line(f"waiting {now - start:.0f}s/{timeout:.0f}s for the LLM server: {last}")
                next_progress = now + 30.0
            stop.wait(min(delay, deadline - now))
            delay = min(delay * 2, 5.0)
        raise HelperError("stopped before the LLM server was ready")

    def _warn_if_open(self, model: str) -> None:
        """The backend should refuse requests without the server's key: else any process on the node
        can use it directly, past the proxy's per-run keys."""
        conn = http.client.HTTPConnection(BACKEND_HOST, self.port, timeout=10)
        try:
            conn.sock = self.connect()
            conn.sock.settimeout(10)
            conn.request("GET", "/v1/models", headers={"Connection": "close"})
            resp = conn.getresponse()
            resp.read(4 * MIB)  # all of it: a server whose answer is cut off logs a reset
            status = resp.status
        except (BackendUnavailable, OSError, http.client.HTTPException):
            return
        finally:
            conn.close()
        if status == 200:
            self.log(
                f"warning: the LLM server answers /v1/models without its key, so any process on this node "
                f"can use {model} directly: give LLM_CMD the key (vLLM reads VLLM_API_KEY, llama.cpp "
                'LLAMA_API_KEY; else --api-key "$LLM_API_KEY")'
            )


def _error(status: int, message: str, kind: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """An answer in OpenAI's error shape, which its clients read."""
    body = json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()
    return status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))], body


def _bearer(environ: dict[str, Any]) -> str | None:
    scheme, _, credentials = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def _forwarded_headers(environ: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").title()
        elif key == "CONTENT_TYPE" and value:
            name = "Content-Type"
        else:
            continue
        if name.lower() not in HOP_BY_HOP:
            out.append((name, str(value)))
    return out


class ProxyApp:
    """The WSGI application: key check, then the request to the backend, streamed back."""

    def __init__(
        self, backend: Backend, keyring: KeyRing, max_body: int, log: Callable[[str], None] = log_line
    ) -> None:
        self.backend = backend
        self.keyring = keyring
        self.max_body = max_body
        self.log = log

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.monotonic()
        method = environ.get("REQUEST_METHOD", "")
        path, query = environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
        shown = path if PATH_OK.fullmatch(path) else f"<a path of {len(path)} characters>"
        run = self.keyring.run_of(_bearer(environ))
        counted = [0]

        def done(status: int) -> None:
            ms = (time.monotonic() - started) * 1000
            self.log(f"{method[:8]} {shown} {status} run={run or '-'} bytes={counted[0]} ms={ms:.0f}")

        status, headers, body = self._refusal(method, path, query, run)
        if status == 0:
            try:
                conn, resp = self._forward(environ, method, path, query)
            except _Refused as refused:
                status, headers, body = refused.answer
            else:
                start_response(f"{resp.status} {resp.reason}", self._response_headers(resp))
                return self._stream(conn, resp, counted, done)
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        counted[0] = len(body)
        done(status)
        return [body]

    def _refusal(
        self, method: str, path: str, query: str, run: str | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if not PATH_OK.fullmatch(path) or not QUERY_OK.fullmatch(query) or "server_url" in query.lower():
            return _error(404, "not found: only the OpenAI API under /v1/ is served", "not_found_error")
        if method not in ("GET", "POST"):
            return _error(405, f"method {method[:16]} not allowed: GET or POST", "invalid_request_error")
        if run is None:
            return _error(
                401,
                "this LLM server takes only the keys of the runs using it (LLM_API_KEY in the agent's "
                "environment)",
                "invalid_request_error",
            )
        return 0, [], b""

    def _forward(
        self, environ: dict[str, Any], method: str, path: str, query: str
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        body = self._read_body(environ) if method == "POST" else None
        target = path + (f"?{query}" if query else "")
        try:
            return self.backend.request(method, target, _forwarded_headers(environ), body)
        except BackendUnavailable as exc:
            raise _Refused(_error(502, f"the LLM server cannot be reached: {exc}", "server_error")) from None
        except ValueError:  # a header http.client will not send
            raise _Refused(
                _error(400, "a request header cannot be forwarded", "invalid_request_error")
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _Refused(
                _error(502, f"the LLM server failed the request: {type(exc).__name__}", "server_error")
            ) from None

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        stream = environ["wsgi.input"]
        chunks, size = [], 0
        try:
            while True:
                chunk = stream.read(READ_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_body:
                    raise cheroot_errors.MaxSizeExceeded()
                chunks.append(chunk)
        except (cheroot_errors.MaxSizeExceeded, OSError) as exc:
            # cheroot's chunked reader says "Request Entity Too Large" with an OSError
            if isinstance(exc, cheroot_errors.MaxSizeExceeded) or "Too Large" in str(exc):
                limit = self.max_body / MIB
                message = f"request body over {limit:g} MiB (llm-proxy --max-body-mb)"
                raise _Refused(_error(413, message, "invalid_request_error")) from None
            raise _Refused(
                _error(400, "the request body could not be read", "invalid_request_error")
            ) from None
        return b"".join(chunks)

    @staticmethod
    def _response_headers(resp: http.client.HTTPResponse) -> list[tuple[str, str]]:
        keep = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP | {"server", "date"}]
        length = resp.getheader("Content-Length")
        chunked = "chunked" in (resp.getheader("Transfer-Encoding") or "").lower()
        if length is not None and not chunked:
            keep.append(("Content-Length", length))
        return keep

    @staticmethod
    def _stream(
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        counted: list[int],
        done: Callable[[int], None],
    ) -> Iterator[bytes]:
        """The backend's body as it comes (server-sent events too); the backend connection is
        closed when the client is done or gone."""
        try:
            while True:
                chunk = resp.read1(READ_CHUNK)
                if not chunk:
                    break
                counted[0] += len(chunk)
                yield chunk
        finally:
            conn.close()
            done(resp.status)


class _Refused(Exception):
    def __init__(self, answer: tuple[int, list[tuple[str, str]], bytes]) -> None:
        super().__init__(answer[0])
        self.answer = answer


class _Server(wsgi.Server):
    """cheroot with the grading server's connection deadlines (no slow client holds a thread)."""

    ConnectionClass = DeadlineConnection

    def __init__(self, *args: Any, deadlines: Deadlines, max_body: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadlines = deadlines
        self.max_request_header_size = MAX_HEADER_BYTES
        self.max_request_body_size = max_body  # larger Content-Length: 413 before the app runs

    def on_slow_client(self, conn: Any, phase: str) -> None:
        log_line(f"dropped a slow client {conn.remote_addr}:{conn.remote_port}: no complete request {phase}")

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        exc = sys.exc_info()[1]
        log_line(f"cheroot: {msg}" + (f": {exc!r}" if exc else ""))


def listen(app: ProxyApp, threads: int, max_body: int) -> _Server:
    """The proxy's listening socket: dual-stack [::] where the node has IPv6, else 0.0.0.0; never
    SO_REUSEPORT (cheroot sets it only when asked), so no other socket can bind its port."""
    last: OSError | None = None
    for host in ("::", "0.0.0.0"):
        server = _Server(
            (host, 0),
            app,
            numthreads=threads,
            request_queue_size=128,
            timeout=30,
            shutdown_timeout=5,
            server_name="mlebench-hpc-llm-proxy",
            deadlines=Deadlines(),
            max_body=max_body,
        )
        try:
            server.prepare()
        except OSError as exc:  # no IPv6 on this node
            last = exc
            continue
        sock = server.socket
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
            raise HelperError("the proxy's socket has SO_REUSEPORT set: refusing to serve on it")
        if sock.family == socket.AF_INET6 and sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY):
            raise HelperError("the proxy's [::] socket is IPv6-only: IPv4 would be open to others")
        return server
    raise HelperError(f"cannot listen on [::] or 0.0.0.0 ({last}): check the node's network")


def serve(
    model: str,
    backend_port: int,
    backend_pid: int,
    server_key_file: Path,
    state_dir: Path,
    timeout: float,
    max_body_mb: float,
    threads: int,
    backend_timeout: float,
) -> int:
    """Run until SIGTERM/SIGINT or until the backend process is gone; returns the exit code."""
    from mlebench_hpc.server.app import format_url, published_host  # as the grading server names its node

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    keys, url_file = keys_dir(state_dir), state_dir / "url"
    url_file.unlink(missing_ok=True)
    shutil.rmtree(keys, ignore_errors=True)  # a requeued job has the same id: no earlier run's key
    keys.mkdir(mode=0o700, parents=True)
    backend = Backend(
        backend_port, backend_pid, read_api_key(server_key_file, "the server key file"), backend_timeout
    )
    max_body = int(max_body_mb * MIB)
    server: _Server | None = None
    try:
        took = backend.wait_ready(model, timeout, stop)
        if stop.is_set():
            return 0
        server = listen(ProxyApp(backend, KeyRing(keys, log_line), max_body), threads, max_body)
        threading.Thread(target=server.serve, name="cheroot-serve", daemon=True).start()
        family = "IPv4 and IPv6" if server.socket.family == socket.AF_INET6 else "IPv4 only"
        url = f"{format_url(published_host('0.0.0.0'), int(server.bind_addr[1]))}/v1"
        write_atomic(url_file, (url + "\n").encode(), 0o644)
        print(f"{URL_MARK}{url}", flush=True)
        log_line(
            f"LLM server ready after {took:.1f}s: {url} ({family}, per-run keys from {keys}) in front of "
            f"127.0.0.1:{backend_port} (pid {backend_pid})"
        )
        while not stop.wait(1.0):
            try:
                check_pid_alive(backend_pid, what="LLM server process")
            except HelperError:
                log_line(f"the LLM server process {backend_pid} exited: stopping the proxy")
                return 0
        return 0
    finally:
        url_file.unlink(missing_ok=True)
        shutil.rmtree(keys, ignore_errors=True)
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop()
        if backend.refused:
            log_line(
                f"ERROR: {backend.refused} connection(s) to the LLM server's port were accepted by "
                "other processes and closed unsent"
            )


@click.group("llm-proxy")
def llm_proxy_cmd() -> None:
    """The LLM server job's front: per-run keys, verified backend connections."""


@llm_proxy_cmd.command("backend-env")
@click.argument("env_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--key-out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the server's key here (mode 0600), for `llm-proxy serve --server-key-file`.",
)
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The server's key (LLM_API_KEY_FILE); default: a random key for this job.",
)
def backend_env_cmd(env_file: Path, key_out: Path, api_key_file: Path | None) -> None:
    """Write the backend's env file: the server's key as LLM_API_KEY, VLLM_API_KEY, LLAMA_API_KEY."""
    key = read_api_key(api_key_file) if api_key_file else new_key()
    write_env_file(env_file, dict.fromkeys(BACKEND_KEY_NAMES, key))
    write_atomic(key_out, (key + "\n").encode(), 0o600)


@llm_proxy_cmd.command("serve")
@click.option("--model", required=True, help="Model the backend must list at /v1/models (LLM_MODEL).")
@click.option(
    "--backend-port", required=True, type=click.IntRange(1, 65535), help="The backend's port on 127.0.0.1."
)
@click.option(
    "--backend-pid",
    required=True,
    type=int,
    help="The backend's process: its tree must hold every connection.",
)
@click.option(
    "--server-key-file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The backend's key (from `llm-proxy backend-env --key-out`).",
)
@click.option(
    "--state-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="OUTPUT_BASE/.state/llm/<job>: the URL file and the per-run keys (keys/).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=900.0,
    show_default=True,
    help="Seconds until the backend must list the model.",
)
@click.option(
    "--max-body-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=16.0,
    show_default=True,
    help="Largest request body.",
)
@click.option(
    "--threads", type=click.IntRange(1, 1024), default=64, show_default=True, help="Requests served at once."
)
@click.option(
    "--backend-timeout",
    type=click.FloatRange(min=1),
    default=3600.0,
    show_default=True,
    help="Longest wait for a byte of the backend's answer.",
)
def serve_cmd(
    model: str,
    backend_port: int,
    backend_pid: int,
    server_key_file: Path,
    state_dir: Path,
    timeout: float,
    max_body_mb: float,
    threads: int,
    backend_timeout: float,
) -> None:
    """Serve the backend on a port nobody else can bind, to the runs' keys only."""
    rc = serve(
        model,
        backend_port,
        backend_pid,
        server_key_file,
        state_dir,
        timeout,
        max_body_mb,
        threads,
        backend_timeout,
    )
    sys.exit(rc)
