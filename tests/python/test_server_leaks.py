"""Can an agent learn the answers through the grading server? Real process, real HTTP, real engine.

The answers here are distinctive decimals (a regression competition), so any answer value quoted by
a message, or any score leaking as a number, is visible in the text."""

from __future__ import annotations

import hashlib
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from test_server import (
    COMP,
    VALID_MESSAGE,
    ServerProc,
    make_spaceship,
    raw_get,
    start_server,
    submission_bytes,
    validate,
)

REGRESSION = "nomad2018-predict-transparent-conductors"
TARGETS = ("formation_energy_ev_natom", "bandgap_energy_ev")
N_ROWS = 600
DECIMAL = re.compile(r"\d*\.\d+|\d+e-?\d+", re.IGNORECASE)
SCORE_WORDS = ("score", "rmse", "rmsle", "accuracy", "medal", "rank", "leaderboard", "threshold")


def make_regression(data_dir: Path) -> pd.DataFrame:
    rng = np.random.default_rng(42)
    answers = pd.DataFrame({"id": np.arange(1, N_ROWS + 1)})
    for column in TARGETS:
        answers[column] = np.round(rng.uniform(0.1, 5.0, N_ROWS), 7)
    prepared = data_dir / REGRESSION / "prepared"
    (prepared / "private").mkdir(parents=True)
    (prepared / "public").mkdir(parents=True)
    answers.to_csv(prepared / "private" / "test.csv", index=False)
    answers.assign(**dict.fromkeys(TARGETS, 0.0)).to_csv(
        prepared / "public" / "sample_submission.csv", index=False
    )
    return answers


def answer_strings(answers: pd.DataFrame) -> set[str]:
    """Every answer value as the file spells it, plus shorter roundings a message might print."""
    out: set[str] = set()
    for column in TARGETS:
        for value in answers[column]:
            out.add(repr(float(value)))
            out.update(f"{value:.{d}f}" for d in (3, 4, 5))
    return out


@pytest.fixture(scope="module")
def regression(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProc, pd.DataFrame, Path]]:
    data_dir = tmp_path_factory.mktemp("leakdata")
    answers = make_regression(data_dir)
    srv = start_server(data_dir, tmp_path_factory.mktemp("leaksrv"), competition=REGRESSION)
    yield srv, answers, data_dir
    assert srv.stop() == 0, srv.stderr()


def assert_no_leak(message: str, secrets: set[str]) -> None:
    assert not DECIMAL.search(message), f"score-like number in: {message!r}"
    lowered = message.lower()
    for word in SCORE_WORDS:
        assert word not in lowered, f"{word!r} in: {message!r}"
    quoted = [s for s in secrets if s in message]
    assert quoted == [], f"answer values quoted: {quoted[:5]} in {message!r}"


def regression_cases(answers: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, bool]]:
    one_id = answers.copy()
    one_id.loc[5, "id"] = 999_999
    one_value = answers.copy()
    one_value.loc[3, TARGETS[0]] = 2.5
    all_wrong = answers.assign(**{c: answers[c] + 0.25 for c in TARGETS})
    negative = answers.copy()
    negative.loc[7, TARGETS[1]] = -1.0
    missing = answers.drop(columns=[TARGETS[1]])
    short = answers.iloc[:-1]
    return {
        "one id wrong": (one_id, True),  # upstream's nomad2018 grader never reads the ids (row order)
        "one value wrong": (one_value, True),
        "all values wrong": (all_wrong, True),
        "the answers themselves": (answers, True),
        "one negative value": (negative, False),
        "missing target column": (missing, False),
        "one row short": (short, False),
    }


@pytest.mark.parametrize(
    "case",
    [
        "one id wrong",
        "one value wrong",
        "all values wrong",
        "the answers themselves",
        "one negative value",
        "missing target column",
        "one row short",
    ],
)
def test_messages_never_quote_answers_or_scores(
    regression: tuple[ServerProc, pd.DataFrame, Path], case: str
) -> None:
    srv, answers, _ = regression
    frame, expected_valid = regression_cases(answers)[case]
    response = validate(srv.url, submission_bytes(frame))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"result", "valid"}, body
    assert body["valid"] is expected_valid, body
    if expected_valid:
        assert body["result"] == VALID_MESSAGE
    assert_no_leak(body["result"], answer_strings(answers))


def test_answers_file_as_upload_name_is_ignored(regression: tuple[ServerProc, pd.DataFrame, Path]) -> None:
    """A client-chosen filename pointing at the answers must neither read nor overwrite them."""
    srv, answers, data_dir = regression
    private = data_dir / REGRESSION / "prepared" / "private" / "test.csv"
    before = hashlib.sha256(private.read_bytes()).hexdigest()
    for name in (str(private), "../../" + REGRESSION + "/prepared/private/test.csv", "../test.csv"):
        response = validate(srv.url, b"id,formation_energy_ev_natom,bandgap_energy_ev\n1,0,0\n", name=name)
        assert response.status_code == 200
        assert response.json()["valid"] is False
        assert_no_leak(response.json()["result"], answer_strings(answers))
    # A form field (not a file part) holding the path is not read as a path either.
    response = requests.post(f"{srv.url}/validate", data={"file": str(private)}, timeout=30)
    assert response.status_code == 400
    assert hashlib.sha256(private.read_bytes()).hexdigest() == before


def test_answers_never_served_by_any_path(regression: tuple[ServerProc, pd.DataFrame, Path]) -> None:
    srv, answers, data_dir = regression
    private = data_dir / REGRESSION / "prepared" / "private" / "test.csv"
    secrets = answer_strings(answers)
    rel = f"{REGRESSION}/prepared/private/test.csv"
    paths = [
        "/test.csv", "/private/test.csv", "/prepared/private/test.csv", f"/{rel}", str(private),
        "/../private/test.csv", "/../../private/test.csv", f"/validate/../{rel}", "/validate/../x",
        f"/health/../../{rel}", f"/static/../../{rel}", "/static/test.csv", "/%2e%2e/private/test.csv",
        "/..%2fprivate%2ftest.csv", f"//{rel}", "/validate?file=../private/test.csv",
        "/health?file=/private/test.csv", f"/files/{rel}", "/download?path=private/test.csv",
    ]  # fmt: skip
    for method in ("GET", "POST", "HEAD", "PUT", "OPTIONS"):
        for path in paths:
            status, body = raw_get(srv.url, path, method=method)
            if path.startswith("/health?") and method == "GET":
                assert status == 200
            elif path.startswith("/validate?") and method == "POST":
                assert status == 400  # no file part
            else:  # cheroot itself answers 400 to a request-target it cannot parse ("//x")
                assert status in (400, 404, 405), (method, path, status)
                if status != 400 and method != "HEAD":
                    assert b'"error"' in body, (method, path, body)
            text = body.decode(errors="replace")
            assert "bandgap" not in text, (method, path)
            assert not [s for s in secrets if s in text], (method, path)


def test_spaceship_messages_do_not_leak(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    answers = make_spaceship(data_dir, n_rows=300, seed=3)
    srv = start_server(data_dir, tmp_path / "srv")
    try:
        one_id = answers.copy()
        one_id.loc[4, "PassengerId"] = "9999_99"
        one_value = answers.copy()
        one_value.loc[4, "Transported"] = not bool(one_value.loc[4, "Transported"])
        cases = {
            "one id wrong": (one_id, False),
            "one value wrong": (one_value, True),
            "all wrong": (answers.assign(Transported=~answers["Transported"]), True),
            "the answers themselves": (answers, True),
        }
        for case, (frame, expected_valid) in cases.items():
            body = validate(srv.url, submission_bytes(frame)).json()
            assert body["valid"] is expected_valid, (case, body)
            assert_no_leak(body["result"], set())
            if expected_valid:
                assert body["result"] == VALID_MESSAGE, case
            else:  # the one bad id is named by count, never with its answer
                assert "True" not in body["result"] and "False" not in body["result"], body
        assert COMP == "spaceship-titanic"
    finally:
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=20) == 0
