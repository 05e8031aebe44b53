"""The per-run token of the grading server: a real process on a free port, real HTTP.

Another run's agent can find this server (ports are listed in /proc/net/tcp); without the token it
gets 401 and no verdict."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests
from test_server import (  # noqa: F401 - fixtures answers, data_dir
    COMP,
    VALID_MESSAGE,
    ServerProc,
    answers_fixture,
    data_dir_fixture,
    make_spaceship,
    spawn,
    start_server,
    submission_bytes,
    validate,
)

TOKEN = "9f2c1e0b7a64d3f8c5e1a2b3c4d5e6f7"


def token_file(path: Path, content: str = TOKEN + "\n", mode: int = 0o600) -> Path:
    path.write_text(content)
    os.chmod(path, mode)
    return path


@pytest.fixture(scope="module")
def guarded(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    work = tmp_path_factory.mktemp("tok")
    srv = start_server(data_dir, work / "srv", "--token-file", str(token_file(work / "token")))
    yield srv
    assert srv.stop() == 0, srv.stderr()
    assert TOKEN not in srv.stderr(), "the token must never be logged"


def assert_unauthorized(response: requests.Response) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert set(body) == {"error", "details"}
    assert body["error"].startswith("unauthorized")
    assert "/home/validate_submission.sh" in body["details"]
    assert "valid" not in body and "result" not in body  # no verdict without the token
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_missing_wrong_and_right_token(guarded: ServerProc, answers: pd.DataFrame) -> None:
    content = submission_bytes(answers)
    assert_unauthorized(validate(guarded.url, content))
    assert_unauthorized(validate(guarded.url, content, headers={"X-Grading-Token": "wrong"}))
    assert_unauthorized(validate(guarded.url, content, headers={"X-Grading-Token": TOKEN[:-1]}))
    assert_unauthorized(validate(guarded.url, content, headers={"X-Grading-Token": TOKEN + "x"}))
    ok = validate(guarded.url, content, headers={"X-Grading-Token": TOKEN})
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"result": VALID_MESSAGE, "valid": True}
    # an invalid submission with the token: the usual 200 with its message
    short = validate(guarded.url, submission_bytes(answers.iloc[3:]), headers={"X-Grading-Token": TOKEN})
    assert short.status_code == 200 and short.json()["valid"] is False


def test_bearer_form(guarded: ServerProc, answers: pd.DataFrame) -> None:
    content = submission_bytes(answers)
    for scheme in ("Bearer", "bearer"):
        ok = validate(guarded.url, content, headers={"Authorization": f"{scheme} {TOKEN}"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["valid"] is True
    assert_unauthorized(validate(guarded.url, content, headers={"Authorization": "Bearer nope"}))
    assert_unauthorized(validate(guarded.url, content, headers={"Authorization": f"Basic {TOKEN}"}))


def test_no_query_string_form(guarded: ServerProc, answers: pd.DataFrame) -> None:
    # URLs end up in logs and shell histories: the token is never accepted there.
    response = requests.post(
        f"{guarded.url}/validate",
        params={"token": TOKEN},
        files={"file": ("s.csv", submission_bytes(answers))},
        timeout=30,
    )
    assert_unauthorized(response)


def test_health_stays_open(guarded: ServerProc) -> None:
    response = requests.get(f"{guarded.url}/health", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "running", "competition": COMP}


def test_refused_before_the_body_is_stored(guarded: ServerProc) -> None:
    # 5 MB without the token: answered 401, nothing written to the upload directory
    big = b"PassengerId,Transported\n" + b"0001_01,True\n" * 400_000
    assert_unauthorized(validate(guarded.url, big))
    assert guarded.upload_files() == []
    assert requests.get(f"{guarded.url}/health", timeout=10).status_code == 200


def test_token_from_the_environment(data_dir: Path, tmp_path: Path, answers: pd.DataFrame) -> None:
    srv = start_server(data_dir, tmp_path / "srv", env={"GRADING_SERVER_TOKEN": TOKEN})
    try:
        content = submission_bytes(answers)
        assert_unauthorized(validate(srv.url, content))
        assert validate(srv.url, content, headers={"X-Grading-Token": TOKEN}).status_code == 200
    finally:
        assert srv.stop() == 0
    assert TOKEN not in srv.stderr()


def test_without_token_validate_is_open(data_dir: Path, tmp_path: Path, answers: pd.DataFrame) -> None:
    # local use (no job, no other run): the control that shows the 401s above come from the token
    srv = start_server(data_dir, tmp_path / "srv")
    try:
        assert validate(srv.url, submission_bytes(answers)).status_code == 200
        assert "token off" in srv.stderr()
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize(
    ("content", "mode", "env", "expected"),
    [
        (TOKEN, 0o640, None, "mode 0640"),
        (TOKEN, 0o604, None, "mode 0604"),
        (TOKEN, 0o620, None, "mode 0620"),
        ("", 0o600, None, "empty"),
        ("\n  \n", 0o600, None, "empty"),
        ("two words", 0o600, None, "printable ASCII"),
        (TOKEN, 0o600, {"GRADING_SERVER_TOKEN": "other"}, "differ"),
        (TOKEN, 0o600, {"GRADING_SERVER_TOKEN": ""}, "GRADING_SERVER_TOKEN is empty"),
        (None, 0o600, None, "cannot read the token file"),
    ],
)
def test_bad_token_file_refused(
    data_dir: Path,
    tmp_path: Path,
    content: str | None,
    mode: int,
    env: dict[str, str] | None,
    expected: str,
) -> None:
    path = tmp_path / "token"
    if content is not None:
        token_file(path, content, mode)
    proc = spawn(data_dir, tmp_path / "w", "--token-file", str(path), env=env)
    assert proc.wait(timeout=60) == 2
    assert proc.stdout is not None and proc.stdout.read() == b"", "no URL published"
    lines = (tmp_path / "w" / "server.err").read_text().strip().splitlines()
    assert len(lines) == 1, lines
    assert expected in lines[0], lines[0]
    assert TOKEN not in lines[0]
    assert not (tmp_path / "w" / "url").exists()


def test_token_file_symlink_and_fifo_refused(data_dir: Path, tmp_path: Path) -> None:
    real = token_file(tmp_path / "real")
    (tmp_path / "link").symlink_to(real)
    os.mkfifo(tmp_path / "fifo", 0o600)
    for name, expected in (("link", "cannot read the token file"), ("fifo", "not a regular file")):
        proc = spawn(data_dir, tmp_path / f"w-{name}", "--token-file", str(tmp_path / name))
        assert proc.wait(timeout=60) == 2, name  # a FIFO must not hang the start-up
        lines = (tmp_path / f"w-{name}" / "server.err").read_text().strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], lines
