"""`mlebench-hpc serve`: the grading server's process: its upload directory, the HTTP server of
mlebench_hpc.server.app on its socket with the deadlines, the validation workers, the URL file, and
the signals that stop it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import shutil
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from mlebench_hpc.server.app import (
    MIB,
    THREAD_POOL_VARS,
    UPLOAD_DIR_LOCK,
    UPLOAD_DIR_PREFIX,
    URL_MARKER,
    GradingApp,
    _Server,
    _stderr_line,
    format_url,
    published_host,
    write_url_file,
)
from mlebench_hpc.server.deadlines import Deadlines
from mlebench_hpc.server.inflight import InFlightRecorder
from mlebench_hpc.server.tokens import TokenError, resolve_token
from mlebench_hpc.server.validation_pool import ValidationPool, choose_budget, proc_status, reset_peak_rss


class SetupError(Exception):
    """A problem with the server's own configuration: one line, exit 2."""


# -- uploads ---------------------------------------------------------------------------------------
def prepare_upload_dir(tmp_dir: Path | None) -> tuple[Path, int | None]:
    """A fresh private directory for this process's uploads under TMP_DIR (created 0700 if missing),
    and the descriptor holding its owner lock. Directories of servers that died without cleaning up
    (their lock is free) are removed first."""
    base = tmp_dir if tmp_dir is not None else Path(tempfile.gettempdir())
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        _remove_stale_upload_dirs(base)
        upload_dir = Path(tempfile.mkdtemp(prefix=UPLOAD_DIR_PREFIX, dir=base))
        return upload_dir, _lock_upload_dir(upload_dir)
    except OSError as exc:
        raise SetupError(
            f"cannot create the upload directory in {base} ({exc.strerror}); fix --tmp-dir"
        ) from None


def _lock_upload_dir(upload_dir: Path) -> int | None:
    # Locked under a temporary name, then renamed: no other server ever sees it unlocked.
    pending = upload_dir / (UPLOAD_DIR_LOCK + ".new")
    fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # no flock on this file system: then nobody may judge this directory stale
        os.close(fd)
        pending.unlink()
        return None
    os.rename(pending, upload_dir / UPLOAD_DIR_LOCK)
    return fd


def _remove_stale_upload_dirs(base: Path) -> None:
    for entry in base.glob(UPLOAD_DIR_PREFIX + "*"):
        try:
            if not stat.S_ISDIR(entry.lstat().st_mode):
                continue
            fd = os.open(entry / UPLOAD_DIR_LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:  # not ours, or no lock file: leave it alone
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its server is alive (or the file system cannot tell)
            continue
        else:
            shutil.rmtree(entry, ignore_errors=True)
            _stderr_line(f"removed {entry}, left behind by a grading server that was killed")
        finally:
            os.close(fd)


def _report_upload_room(upload_dir: Path, max_upload_mb: float) -> None:
    free_mib = shutil.disk_usage(upload_dir).free / MIB
    _stderr_line(f"uploads go to {upload_dir} ({free_mib:.0f} MiB free)")
    if free_mib < max_upload_mb:
        _stderr_line(
            f"warning: only {free_mib:.0f} MiB free for uploads, less than --max-upload-mb "
            f"{max_upload_mb:g}: larger uploads will fail with 507; give --tmp-dir more room"
        )


# -- the process ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Validation:
    """How /validate parses submissions: WORKERS pre-forked processes (0: in the server process,
    without a budget) with BUDGET_MB each (None: chosen from the answers and the job's memory,
    MEMORY_LIMIT_MB when known)."""

    workers: int = 2
    budget_mb: float | None = None
    memory_limit_mb: float | None = None


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
    deadlines: Deadlines | None = None,
    validation: Validation | None = None,
    inflight_file: Path | None = None,
) -> int:
    """Run until SIGTERM/SIGINT or --idle-timeout; returns the exit code."""
    stop = threading.Event()
    reason: list[str] = []
    deadlines = deadlines or Deadlines()
    validation = validation or Validation()

    def on_signal(signum: int, _frame: Any) -> None:
        reason.append(signal.Signals(signum).name)
        stop.set()

    # Registered first: a SIGTERM during start-up still ends in a clean exit.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # A file size limit (ulimit -f; Slurm propagates it) must fail an upload's write with EFBIG
    # (answered 507), not kill the server.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _raise_fd_limit()
    # Before numpy is imported: no BLAS thread pool, so the validation zygote forks a process with
    # one thread (validation does no linear algebra).
    for name in THREAD_POOL_VARS:
        os.environ.setdefault(name, "1")

    try:
        upload_dir, upload_lock = prepare_upload_dir(tmp_dir)
    except SetupError as exc:
        _stderr_line(f"error: {exc}")
        return 2
    server: _Server | None = None
    pool: ValidationPool | None = None
    inflight = InFlightRecorder(None)
    published = False
    try:
        # Imports and the answers are loaded before anything is published.
        from mlebench_hpc.grading import GradingSetupError, load_competition

        rss_before = proc_status("VmRSS").get("VmRSS", 0)
        try:
            if mlebench_dir is not None:
                competition = load_competition(competition_id, data_dir, mlebench_dir=mlebench_dir)
            else:
                competition = load_competition(competition_id, data_dir)
        except GradingSetupError as exc:
            _stderr_line(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            return 2
        answers_bytes = max(0, proc_status("VmRSS").get("VmRSS", 0) - rss_before)
        sample = getattr(getattr(competition, "spec", None), "sample_submission", "sample_submission.csv")
        sample_bytes = _warm_up(competition, data_dir / competition_id / "prepared" / "public" / sample)
        _report_upload_room(upload_dir, max_upload_mb)
        budget = choose_budget(
            validation.workers,
            validation.budget_mb,
            validation.memory_limit_mb,
            answers_bytes,
            sample_bytes,
            proc_status("VmRSS").get("VmRSS", 0),
        )
        if budget.warning:
            _stderr_line(budget.warning)
        if inflight_file is not None:
            try:
                inflight = InFlightRecorder(inflight_file)
            except OSError as exc:
                _stderr_line(f"error: cannot write {inflight_file} ({exc.strerror}); check --inflight-file")
                return 2
        validator: Callable[[Path], tuple[bool, str]] = _in_process(competition.validate)
        if budget.workers:
            # Forked now: the answers are loaded and warm, and no thread has started yet.
            pool = ValidationPool(competition.validate, budget, _stderr_line, inflight.over_budget)
            pool.start()
            validator = pool.validate

        app = GradingApp(
            competition_id,
            validator,
            upload_dir,
            max_upload_bytes=int(max_upload_mb * MIB),
            token=token,
            deadlines=deadlines,
            inflight=inflight,
        )
        server = _Server(
            (host, port),
            app,
            numthreads=threads,
            request_queue_size=128,
            timeout=int(deadlines.read_idle_secs),
            shutdown_timeout=5,
            server_name="mlebench-hpc-grading",
            deadlines=deadlines,
        )
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
                f"token {'required' if token else 'off'}, {deadlines.describe()}, {budget.describe()}"
            )
        while not stop.wait(0.5):
            if idle_timeout > 0 and app.activity.idle_for() >= idle_timeout:
                reason.append(f"idle for {idle_timeout:g}s")
                break
            if not worker.is_alive():
                _stderr_line("error: the server thread stopped unexpectedly")
                return 1
            gone = pool.zygote_exit() if pool is not None else None
            if gone is not None:
                _stderr_line(f"error: the validation zygote {gone}: no worker can be replaced, stopping")
                return 1
        _stderr_line(f"stopping ({', '.join(reason) or 'requested'})")
        return 0
    finally:
        if published and url_file is not None:
            with contextlib.suppress(OSError):
                url_file.unlink()
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop()
        if pool is not None:
            pool.close()
        inflight.remove()
        shutil.rmtree(upload_dir, ignore_errors=True)
        if upload_lock is not None:
            os.close(upload_lock)


def _in_process(validate: Callable[[Path], tuple[bool, str]]) -> Callable[[Path], tuple[bool, str]]:
    """--validate-workers 0: validation in the server process, without a budget (no pool)."""

    from mlebench_hpc.grading.messages import invalid_message

    def validator(path: Path) -> tuple[bool, str]:
        try:
            return validate(path)
        except MemoryError:
            return False, invalid_message("Submission could not be graded (MemoryError).")

    return validator


def _raise_fd_limit() -> None:
    """Every connection, queued or served, holds a descriptor: use all the hard limit allows (the
    soft limit is often 1024 under a hard one of 4096 or more), so idle connections run out later."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _warm_up(competition: Any, sample: Path) -> int:
    """Validate the public sample once so the first agent request does not pay for lazy imports.
    Returns the memory it took at its peak (bytes; 0 when not measurable): a submission of the
    answers' rows, for the validation budget."""
    if not sample.is_file():
        return 0
    measured = reset_peak_rss()
    before = proc_status("VmRSS").get("VmRSS", 0)
    with contextlib.suppress(Exception):
        competition.validate(sample)
    peak = proc_status("VmHWM").get("VmHWM", 0)
    return max(0, peak - before) if measured else 0


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
    "--token-file",
    envvar="GRADING_TOKEN_FILE",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File (mode 0600) holding the token /validate requires, sent as header X-Grading-Token or "
    "'Authorization: Bearer'. The env var GRADING_SERVER_TOKEN works too. Neither: no token.",
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
    type=click.Path(file_okay=False, path_type=Path),
    help="Where uploads are streamed (created 0700 if missing; default: $TMPDIR or /tmp). "
    "Needs room for --max-upload-mb: a 64 MiB tmpfs /tmp does not have it.",
)
@click.option(
    "--header-timeout",
    envvar="GRADING_HEADER_TIMEOUT",
    default=Deadlines.header_secs,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds from connect to the end of the request headers; slower clients are dropped.",
)
@click.option(
    "--body-timeout",
    envvar="GRADING_BODY_TIMEOUT",
    default=Deadlines.body_secs,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds allowed for a request body, plus 1 s per --body-min-rate MiB received.",
)
@click.option(
    "--body-min-rate",
    envvar="GRADING_BODY_MIN_RATE_MB",
    default=Deadlines.body_min_rate / MIB,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Slowest accepted average upload rate (MiB/s) once --body-timeout is used up.",
)
@click.option(
    "--validate-workers",
    envvar="GRADING_VALIDATE_WORKERS",
    default=Validation.workers,
    show_default=True,
    type=click.IntRange(0, 64),
    help="Processes that parse submissions, each with a memory budget; 0 = in the server process, "
    "unbounded (an oversized upload can then kill the server).",
)
@click.option(
    "--validate-budget-mb",
    envvar="GRADING_VALIDATE_BUDGET_MB",
    default="auto",
    show_default=True,
    help="Memory one validation may use (MiB); auto: 4 x what the answers or a validation of the "
    "sample submission take, at least 256, within --memory-limit-mb.",
)
@click.option(
    "--memory-limit-mb",
    envvar="GRADING_MEMORY_LIMIT_MB",
    default=0.0,
    type=click.FloatRange(min=0),
    help="The job's memory (Slurm's --mem), shared by the workers' budgets; 0 = unknown.",
)
@click.option(
    "--inflight-file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Keep a record of the authenticated /validate requests in flight here (host-only state, "
    "written atomically; removed at exit), read when the server dies.",
)
def serve_cmd(
    competition_id: str,
    data_dir: Path,
    host: str,
    port: int,
    url_file: Path | None,
    max_upload_mb: float,
    idle_timeout: float,
    token_file: Path | None,
    threads: int,
    mlebench_dir: Path | None,
    tmp_dir: Path | None,
    header_timeout: float,
    body_timeout: float,
    body_min_rate: float,
    validate_workers: int,
    validate_budget_mb: str,
    memory_limit_mb: float,
    inflight_file: Path | None,
) -> None:
    """Serve GET /health and POST /validate for one competition; print GRADING_SERVER_URL=... once
    listening."""
    try:
        token = resolve_token(token_file, dict(os.environ))
    except TokenError as exc:
        _stderr_line(f"error: {exc}")
        sys.exit(2)
    budget_mb: float | None = None
    if validate_budget_mb.strip().lower() != "auto":
        try:
            budget_mb = float(validate_budget_mb)
            if not budget_mb > 0:
                raise ValueError
        except ValueError:
            _stderr_line(f"error: --validate-budget-mb {validate_budget_mb!r}: give MiB (> 0) or auto")
            sys.exit(2)
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
        deadlines=Deadlines(header_timeout, body_timeout, body_min_rate * MIB),
        validation=Validation(validate_workers, budget_mb, memory_limit_mb or None),
        inflight_file=inflight_file,
    )
    sys.exit(code)
