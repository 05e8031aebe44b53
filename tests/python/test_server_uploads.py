"""Where the grading server puts uploads (--tmp-dir, on disk, not Apptainer's 64 MiB tmpfs /tmp),
what happens when that area is full, and that nothing is left behind. Real process, real HTTP.

Full disks are made the way a user can: a file size limit (RLIMIT_FSIZE, what `ulimit -f` and Slurm's
limit propagation set) and a small tmpfs mounted in an unprivileged user namespace, the same kind of
mount that made 79 MiB uploads fail with "No space left on device" in the grading container."""

from __future__ import annotations

import functools
import resource
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import requests
from test_server import (  # noqa: F401 - fixtures answers, data_dir
    COMP,
    VALID_MESSAGE,
    answers_fixture,
    data_dir_fixture,
    make_spaceship,
    spawn,
    start_server,
    submission_bytes,
    validate,
)

MIB = 1024 * 1024


def padded(answers: pd.DataFrame, size: int) -> bytes:
    """A valid submission of about SIZE bytes (an extra column the grader ignores)."""
    pad = "x" * max(1, size // len(answers) - 20)
    return submission_bytes(answers.assign(Note=pad))


def uploads_in(path: Path) -> list[Path]:
    return [p for p in path.rglob("upload-*") if p.is_file()]


def test_uploads_go_to_tmp_dir_and_are_removed(data_dir: Path, tmp_path: Path, answers: pd.DataFrame) -> None:
    tmp_dir = tmp_path / "state" / "uploads"  # does not exist yet: the server creates it
    srv = start_server(data_dir, tmp_path / "srv", "--tmp-dir", str(tmp_dir))
    try:
        assert stat.S_IMODE(tmp_dir.stat().st_mode) == 0o700
        log = srv.stderr()
        assert f"uploads go to {tmp_dir}/" in log and "MiB free)" in log
        # a body sent slowly enough to be seen on disk mid-upload, then completed
        content = padded(answers, 3 * MIB)
        host, port = srv.url.removeprefix("http://").rsplit(":", 1)
        preamble = b'--b\r\nContent-Disposition: form-data; name="file"; filename="s.csv"\r\n\r\n'
        body = preamble + content + b"\r\n--b--\r\n"
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                b"POST /validate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body[: 2 * MIB]
            )
            deadline = time.monotonic() + 10
            while not uploads_in(tmp_dir) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(uploads_in(tmp_dir)) == 1, "the upload is streamed into --tmp-dir"
            assert uploads_in(srv.tmp_root) == [], "and not into $TMPDIR"
            sock.sendall(body[2 * MIB :])
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
        assert VALID_MESSAGE.encode() in reply
        assert uploads_in(tmp_dir) == []
    finally:
        assert srv.stop() == 0, srv.stderr()
    assert list(tmp_dir.iterdir()) == [], "the server's upload directory is removed at exit"


def test_file_size_limit_gives_a_clear_507(data_dir: Path, tmp_path: Path, answers: pd.DataFrame) -> None:
    def limit_file_size() -> None:  # what `ulimit -f 2048` does
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 * MIB, 2 * MIB))

    tmp_dir = tmp_path / "uploads"
    srv = start_server(
        data_dir,
        tmp_path / "srv",
        "--tmp-dir",
        str(tmp_dir),
        "--max-upload-mb",
        "16",
        preexec_fn=limit_file_size,
    )
    try:
        response = validate(srv.url, padded(answers, 4 * MIB))
        assert_no_room(response)
        assert uploads_in(tmp_dir) == []
        assert srv.proc.poll() is None, "SIGXFSZ must not kill the server"
        # the control: a submission under the limit is validated as usual
        ok = validate(srv.url, padded(answers, MIB))
        assert ok.status_code == 200 and ok.json() == {"result": VALID_MESSAGE, "valid": True}
        assert "no room for an upload" in srv.stderr()
    finally:
        assert srv.stop() == 0, srv.stderr()


def assert_no_room(response: requests.Response) -> None:
    assert response.status_code == 507, response.text
    body = response.json()
    assert set(body) == {"error", "details"}
    assert "ran out of disk space for uploads" in body["details"]
    assert "Traceback" not in response.text and "/" not in body["details"], "no paths to the agent"


# A user namespace in which we are root, with our own mounts (no privilege needed).
USERNS = ("unshare", "--user", "--map-root-user", "--mount")


@functools.cache
def _userns_tmpfs_unavailable() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare not on PATH"
    probe = subprocess.run(
        [*USERNS, "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"no tmpfs in an unprivileged user namespace: {probe.stderr.strip()[-200:]}"
    return None


@pytest.mark.skipif(_userns_tmpfs_unavailable() is not None, reason=str(_userns_tmpfs_unavailable()))
def test_full_tmpfs_gives_a_clear_507(data_dir: Path, tmp_path: Path, answers: pd.DataFrame) -> None:
    tmp_dir = tmp_path / "small"
    tmp_dir.mkdir()
    # A 3 MiB tmpfs over --tmp-dir, mounted in the server's own user + mount namespace (no root
    # needed); the network namespace is ours, so the test talks to it as usual.
    mount_then_exec = 'mount -t tmpfs -o size=3m,mode=0700 tmpfs "$0" && shift && exec "$@"'
    wrapper = [*USERNS, "sh", "-c", mount_then_exec, str(tmp_dir), "--"]
    srv = start_server(
        data_dir, tmp_path / "srv", "--tmp-dir", str(tmp_dir), "--max-upload-mb", "64", wrapper=wrapper
    )
    try:
        log = srv.stderr()
        assert "warning: only 3 MiB free for uploads, less than --max-upload-mb 64" in log, log
        response = validate(srv.url, padded(answers, 5 * MIB))
        assert_no_room(response)
        assert "No space left on device" in response.json()["details"]
        # the space is given back: the next (small) upload fits
        ok = validate(srv.url, padded(answers, 2 * MIB))
        assert ok.status_code == 200 and ok.json()["valid"] is True, ok.text
    finally:
        assert srv.stop() == 0, srv.stderr()


def test_upload_dir_of_a_killed_server_is_removed(data_dir: Path, tmp_path: Path) -> None:
    tmp_dir = tmp_path / "uploads"
    killed = start_server(data_dir, tmp_path / "killed", "--tmp-dir", str(tmp_dir))
    killed.proc.send_signal(signal.SIGKILL)
    killed.proc.wait(timeout=20)
    (left,) = list(tmp_dir.iterdir())
    (left / "upload-half.csv").write_bytes(b"x" * 1000)
    alive = start_server(data_dir, tmp_path / "alive", "--tmp-dir", str(tmp_dir))
    try:
        assert not left.exists(), "the dead server's uploads are removed"
        assert "left behind by a grading server that was killed" in alive.stderr()
        (mine,) = list(tmp_dir.iterdir())
        # a second server sharing the directory does not touch the live one's uploads
        other = start_server(data_dir, tmp_path / "other", "--tmp-dir", str(tmp_dir))
        try:
            assert mine.exists() and len(list(tmp_dir.iterdir())) == 2
        finally:
            assert other.stop() == 0
        assert list(tmp_dir.iterdir()) == [mine]
    finally:
        assert alive.stop() == 0
    assert list(tmp_dir.iterdir()) == []


def test_unusable_tmp_dir_exits_2(data_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = spawn(data_dir, tmp_path / "w", "--tmp-dir", str(blocker / "uploads"))
    assert proc.wait(timeout=60) == 2
    assert proc.stdout is not None and proc.stdout.read() == b""
    lines = (tmp_path / "w" / "server.err").read_text().strip().splitlines()
    assert len(lines) == 1 and "--tmp-dir" in lines[0], lines
