"""Validation in pre-forked worker processes, each with a memory budget: no upload can take the
grading server's memory.

The server (cheroot's threads) never parses a submission. Once the answers are loaded and warmed
up, and before any thread starts, it forks a single-threaded zygote; the zygote forks the workers,
at start-up and whenever one must be replaced. So every worker shares the answers copy-on-write,
none re-reads them, and none is forked from a multi-threaded process. A worker caps its private
memory at its size at fork plus the budget (RLIMIT_DATA, as the grading pool does) and volunteers
first for the out-of-memory killer (oom_score_adj 1000). A submission that needs more memory fails
an allocation in that worker (MemoryError, or a crash: pandas segfaults on some failed
allocations) or gets that worker killed (a cgroup's OOM killer, any signal), never the server: the
request is answered "invalid", naming the budget, and the worker is replaced.

Each worker talks to the server over its own AF_UNIX stream pair (length-prefixed frames): the
server sends the upload's path, the worker answers the verdict. A worker that went before reading
the request never saw it: Linux then fails the server's send (EPIPE) or its read (ECONNRESET, a
peer closed with unread data), and the request goes to another worker. A worker that read it and
died (a clean end of stream) died of it. The zygote hands the server's end of each pair over with
SCM_RIGHTS, with the wait status of the worker it replaces.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import resource
import signal
import socket
import struct
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

MIB = 1024 * 1024
# A worker needs at least this much to parse a small submission (pandas' parse threads have 8 MiB
# stacks, which RLIMIT_DATA counts).
BUDGET_FLOOR = 256 * MIB
# A valid submission has the answers' rows: give it this many times what validating the public
# sample submission (the answers' ids, every value a placeholder) took, or, when that could not be
# measured, the answers' own size in memory.
BUDGET_HEADROOM = 4
# Kept free of the job's memory (Slurm's --mem) besides the server itself and the workers' budgets.
MEMORY_RESERVE = 64 * MIB
FREE_WORKER_WAIT_SECS = 300.0
TRIES = 3  # workers found dead before taking a request, in a row, before the pool gives up
_FRAME = struct.Struct("!I")
PR_SET_PDEATHSIG = 1


class PoolBusy(Exception):
    """No worker became free within FREE_WORKER_WAIT_SECS."""


class PoolBroken(Exception):
    """The zygote is gone, or workers keep dying before they take a request."""


# -- memory figures -----------------------------------------------------------------------------
def proc_status(*keys: str, pid: int | str = "self") -> dict[str, int]:
    """Fields of /proc/PID/status in bytes (VmRSS, VmHWM, VmData, ...); missing ones are left out."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in keys and value.split():
                out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False when refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class Budget:
    """How validation runs: WORKERS processes of BYTES each (0 workers: in the server, unbounded)."""

    workers: int
    bytes: int
    why: str  # how BYTES was chosen, for the start-up line
    warning: str = ""

    def describe(self) -> str:
        if self.workers == 0:
            return "validation in the server process (--validate-workers 0: no memory bound)"
        plural = "s" if self.workers != 1 else ""
        return f"validation in {self.workers} worker{plural} of {self.bytes / MIB:.0f} MiB each ({self.why})"


def choose_budget(
    workers: int,
    budget_mb: float | None,
    memory_limit_mb: float | None,
    answers_bytes: int,
    sample_bytes: int,
    server_rss: int,
) -> Budget:
    """The budget per worker: BUDGET_MB when given, else BUDGET_HEADROOM x a sample validation's peak
    (the answers' footprint when that is unknown), at least BUDGET_FLOOR; and, when the job's memory
    is known, no more than its share of what the server leaves free (a warning when that share is
    below twice what a submission of the answers' rows took)."""
    if workers == 0:
        return Budget(0, 0, "in-process")
    if budget_mb:
        return Budget(workers, int(budget_mb * MIB), "--validate-budget-mb")
    typical, what = (sample_bytes, "a sample validation") if sample_bytes else (answers_bytes, "the answers")
    need = max(BUDGET_FLOOR, BUDGET_HEADROOM * typical)
    why = f"{BUDGET_HEADROOM} x the {typical / MIB:.0f} MiB {what} took"
    if need == BUDGET_FLOOR:
        why = f"the floor; {what} took {typical / MIB:.0f} MiB"
    if not memory_limit_mb:
        return Budget(workers, need, why)
    share = int((memory_limit_mb * MIB - server_rss - MEMORY_RESERVE) / workers)
    if share >= need:
        return Budget(workers, need, f"{why}; job memory {memory_limit_mb:.0f} MiB")
    budget = max(share, 64 * MIB)
    warning = ""
    if budget < 2 * typical:
        warning = (
            f"warning: each of the {workers} validation workers gets {budget / MIB:.0f} MiB of the job's "
            f"{memory_limit_mb:.0f} MiB, less than twice the {typical / MIB:.0f} MiB {what} took: give "
            "the grading job more memory (--mem) or fewer workers (GRADING_VALIDATE_WORKERS)"
        )
    return Budget(workers, budget, f"the job's {memory_limit_mb:.0f} MiB shared", warning)


def over_budget_message(budget: Budget, died: str = "") -> str:
    """The agent's answer when its submission exhausted a worker: one line naming the budget."""
    from mlebench_hpc.grading.messages import invalid_message  # not at import: it loads pandas

    how = f"; its validation process was {died}" if died else ""
    return invalid_message(
        f"Validating this submission needs more memory than the grading server allows one "
        f"validation ({budget.bytes / MIB:.0f} MiB{how}); a valid submission has the rows and "
        "columns of sample_submission.csv and fits easily: check the file's size and shape."
    )


def describe_status(status: int | None) -> str:
    if status is None:
        return "gone (its exit was not seen)"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(sig).name}"
        return f"killed by signal {sig}"
    return f"exited with code {os.WEXITSTATUS(status)}"


# -- framing ------------------------------------------------------------------------------------
def _send(sock: socket.socket, data: bytes) -> None:
    sock.sendall(_FRAME.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    parts: list[bytes] = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            return None
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _recv(sock: socket.socket) -> bytes | None:
    """One frame, or None at end of stream (the other side is gone)."""
    head = _recv_exact(sock, _FRAME.size)
    if head is None:
        return None
    return _recv_exact(sock, _FRAME.unpack(head)[0])


# -- the processes ------------------------------------------------------------------------------
def _die_with_parent(parent: int) -> None:
    """SIGKILL when the parent goes (a server killed outright leaves no worker behind)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it went before the line above
        os._exit(0)


def _worker_main(sock: socket.socket, validator: Callable[[Path], tuple[bool, str]], budget: int) -> NoReturn:
    data = proc_status("VmData").get("VmData", 0)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_DATA, (data + budget, data + budget))
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash on a failed allocation: no core file
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text("1000")  # the OOM killer takes a worker first
    while True:
        try:
            request = _recv(sock)
            if request is None:
                os._exit(0)  # the server is gone or closed the pool
        except OSError:
            os._exit(0)
        reply: dict[str, Any]
        try:
            valid, message = validator(Path(os.fsdecode(request)))
            reply = {"valid": bool(valid), "message": str(message)}
        except MemoryError:
            reply = {"memory": True}
        except BaseException:  # the traceback goes to the server's log, never to the agent
            reply = {"error": traceback.format_exc()}
        try:
            _send(sock, json.dumps(reply).encode())
        except (OSError, MemoryError):
            os._exit(1)
        if reply.get("memory"):
            os._exit(0)  # its heap may be in pieces: a fresh copy replaces it


def _zygote_main(ctl: socket.socket, validator: Callable[[Path], tuple[bool, str]], budget: int) -> NoReturn:
    """Fork a worker per request on CTL ("<pid it replaces>", 0 for none) and hand it over."""
    children: set[int] = set()
    me = os.getpid()
    while True:
        try:
            request = _recv(ctl)
        except OSError:
            request = None
        if request is None:  # the server is gone or stopping: so are the workers
            for pid in children:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            for pid in children:
                with contextlib.suppress(OSError):
                    os.waitpid(pid, 0)
            os._exit(0)
        old = int(request)
        status: int | None = None
        if old in children:
            with contextlib.suppress(OSError):
                os.kill(old, signal.SIGKILL)  # it lost its request or its channel: never two of one
            with contextlib.suppress(ChildProcessError):
                status = os.waitpid(old, 0)[1]
            children.discard(old)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            ctl.close()
            mine.close()
            _die_with_parent(me)
            _worker_main(theirs, validator, budget)
        theirs.close()
        children.add(pid)
        note = json.dumps({"pid": pid, "replaced": describe_status(status) if old else ""}).encode()
        with contextlib.suppress(OSError):  # the server is gone: the next recv ends the loop
            socket.send_fds(ctl, [_FRAME.pack(len(note)) + note], [mine.fileno()])
        mine.close()


@dataclass
class _Worker:
    pid: int
    sock: socket.socket


class _DiedBefore(Exception):
    pass


class _DiedDuring(Exception):
    pass


class ValidationPool:
    """validate(path) -> (valid, message) in a worker; start() before any thread exists."""

    def __init__(
        self,
        validator: Callable[[Path], tuple[bool, str]],
        budget: Budget,
        log: Callable[[str], None],
        on_over_budget: Callable[[], None] | None = None,
    ) -> None:
        self._validator = validator
        self.budget = budget
        self._log = log
        self._on_over_budget = on_over_budget
        # Last in, first out: sequential requests keep going to the same worker, whose caches are warm.
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._ctl: socket.socket | None = None
        self._ctl_lock = threading.Lock()
        self._zygote = 0
        self._closed = False

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
        if threading.active_count() > 1 or threads > 1:
            self._log(
                f"warning: {threads} threads run while the validation zygote is forked "
                "(set OPENBLAS_NUM_THREADS=1 and friends before numpy is imported)"
            )
        ours, its = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            ours.close()
            for sig in (signal.SIGINT, signal.SIGTERM):  # the server stops it by closing the channel
                signal.signal(sig, signal.SIG_IGN)
            with contextlib.suppress(OSError):  # no worker holds the server's stdout open
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.close(devnull)
            _die_with_parent(parent)
            try:
                _zygote_main(its, self._validator, self.budget.bytes)
            finally:
                os._exit(1)
        its.close()
        self._ctl, self._zygote = ours, pid
        for _ in range(self.budget.workers):
            self._idle.put(self._spawn(0)[0])

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            worker.sock.close()
        if self._ctl is not None:
            self._ctl.close()  # the zygote kills what is left and exits
        if self._zygote:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(self._zygote, 0)
            self._zygote = 0

    def zygote_exit(self) -> str | None:
        """None while the zygote runs, else how it ended."""
        if not self._zygote:
            return "not started"
        try:
            pid, status = os.waitpid(self._zygote, os.WNOHANG)
        except ChildProcessError:
            return describe_status(None)
        if pid == 0:
            return None
        self._zygote = 0
        return describe_status(status)

    def worker_pids(self) -> list[int]:
        """The idle workers' pids (tests and the bench find them through /proc too)."""
        return [w.pid for w in list(self._idle.queue)]

    # -- workers --------------------------------------------------------------------------------
    def _spawn(self, replaces: int) -> tuple[_Worker, str]:
        """A new worker, and how the one it replaces ended."""
        assert self._ctl is not None
        with self._ctl_lock:
            try:
                _send(self._ctl, str(replaces).encode())
                head, fds, _flags, _addr = socket.recv_fds(self._ctl, _FRAME.size + 4096, 1)
            except OSError as exc:
                raise PoolBroken(f"the validation zygote is gone ({exc.strerror})") from None
        if not fds:
            raise PoolBroken("the validation zygote is gone")
        note = json.loads(head[_FRAME.size :])
        return _Worker(int(note["pid"]), socket.socket(fileno=fds[0])), str(note.get("replaced") or "")

    def _replace(self, worker: _Worker) -> str:
        """Replace a dead (or doomed) worker; returns how the old one ended."""
        worker.sock.close()
        new, how = self._spawn(worker.pid)
        self._idle.put(new)
        return how

    def _ask(self, worker: _Worker, path: Path) -> dict[str, Any]:
        try:
            _send(worker.sock, os.fsencode(str(path)))
        except OSError:  # EPIPE: it was gone before the request
            raise _DiedBefore from None
        try:
            reply = _recv(worker.sock)
        except ConnectionResetError:  # it went with the request unread
            raise _DiedBefore from None
        except OSError:
            reply = None
        if reply is None:  # it read the request, then died
            raise _DiedDuring
        result: dict[str, Any] = json.loads(reply)
        return result

    # -- the one call -----------------------------------------------------------------------------
    def validate(self, path: Path) -> tuple[bool, str]:
        """The verdict on PATH from a worker. Raises PoolBusy, PoolBroken, or RuntimeError (the
        validator's own failure, traceback logged)."""
        size = path.stat().st_size if path.exists() else 0
        for _ in range(TRIES):
            try:
                worker = self._idle.get(timeout=FREE_WORKER_WAIT_SECS)
            except queue.Empty:
                raise PoolBusy from None
            try:
                reply = self._ask(worker, path)
            except _DiedBefore:
                how = self._replace(worker)
                self._log(f"validation worker {worker.pid} was {how} before taking a request: replaced")
                continue
            except _DiedDuring:
                how = self._replace(worker)
                self._over_budget(worker.pid, size, how)
                return False, over_budget_message(self.budget, how)
            if reply.get("memory"):
                self._replace(worker)
                self._over_budget(worker.pid, size, "out of memory")
                return False, over_budget_message(self.budget)
            self._idle.put(worker)
            if "error" in reply:
                self._log("error: validation failed in a worker:\n" + str(reply["error"]).rstrip())
                raise RuntimeError("the validator failed in its worker")
            return bool(reply["valid"]), str(reply["message"])
        raise PoolBroken(f"{TRIES} validation workers in a row died before taking a request")

    def _over_budget(self, pid: int, size: int, how: str) -> None:
        self._log(
            f"validation worker {pid} ({how}) on an upload of {size / MIB:.1f} MiB: answered invalid "
            f"(budget {self.budget.bytes / MIB:.0f} MiB per validation); replaced"
        )
        if self._on_over_budget is not None:
            self._on_over_budget()
