"""The OpenAI-compatible stand-in (tests/llm_standin/server.py) as a real process: what it answers
to AIDE's calls, and that its solutions really solve both demo competitions (they run, print the
metric the review reads back, and write a submission our grader accepts)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from mlebench_hpc.grading import load_competition

STANDIN = Path(__file__).resolve().parents[1] / "llm_standin" / "server.py"
MODEL = "standin-sklearn"


class StandIn:
    def __init__(self, tmp: Path, *args: str) -> None:
        self.log = tmp / "requests.jsonl"
        url_file = tmp / "url"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(STANDIN),
                "--model",
                MODEL,
                "--log",
                str(self.log),
                "--url-file",
                str(url_file),
            ]
            + list(args),
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while not url_file.is_file():
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            assert time.monotonic() < deadline, "stand-in published no URL"
            time.sleep(0.05)
        self.url = url_file.read_text().strip()

    def chat(self, messages: list[dict[str, str]], **extra: object) -> requests.Response:
        return requests.post(
            f"{self.url}/chat/completions", json={"model": MODEL, "messages": messages, **extra}, timeout=10
        )

    def records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=10)


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandIn]:
    s = StandIn(tmp_path)
    yield s
    s.stop()


# What aideml 0.2.2 sends (agent.py, journal2report.py), compiled to markdown as it does.
DRAFT = "# Introduction\nYou are a Kaggle grandmaster attending a competition.\n# Task description\n..."
IMPROVE = DRAFT + "\n# Previous solution\n## Code\n```python\nprint(1)\n```\n"
DEBUG = DRAFT + "\n# Previous (buggy) implementation\n```python\nprint(1)\n```\n"
REPORT = "# Role\nYou are a research assistant\n# Goal\nThe goal is to write a technical report summarising"
REVIEW_TOOL = {
    "type": "function",
    "function": {"name": "submit_review", "description": "Submit a review", "parameters": {"type": "object"}},
}


def review_prompt(output: str) -> str:
    code = "```python\n...\n```"
    return f"# Introduction\nEvaluate.\n# Implementation\n{code}\n# Execution output\n```\n{output}\n```\n"


def code_of(content: str) -> str:
    m = re.search(r"```python\n(.*?)```", content, re.DOTALL)
    assert m, content
    return m.group(1)


def test_models_lists_the_one_model(standin: StandIn) -> None:
    body = requests.get(f"{standin.url}/models", timeout=5).json()
    assert [m["id"] for m in body["data"]] == [MODEL]
    assert standin.url.endswith("/v1")


@pytest.mark.parametrize("comp", ["demo-breast-cancer", "demo-diabetes"])
@pytest.mark.parametrize("prompt", [DRAFT, IMPROVE, DEBUG], ids=["draft", "improve", "debug"])
def test_solutions_solve_the_demo_and_the_review_reads_their_metric(
    standin: StandIn, demo_data: Path, tmp_path: Path, comp: str, prompt: str
) -> None:
    resp = standin.chat([{"role": "system", "content": prompt}])
    assert resp.status_code == 200
    content = resp.json()["choices"][0]["message"]["content"]
    plan = content.split("```")[0].strip()
    assert plan  # aideml retries when there is no text before the code
    # Run it as AIDE's interpreter does: in the workspace, data in ./input
    work = tmp_path / "ws"
    (work / "input").mkdir(parents=True)
    for f in ("train.csv", "test.csv", "sample_submission.csv"):
        (work / "input" / f).write_bytes((demo_data / comp / "prepared" / "public" / f).read_bytes())
    (work / "runfile.py").write_text(code_of(content))
    run = subprocess.run(
        [sys.executable, "runfile.py"], cwd=work, capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stderr
    submission = work / "working" / "submission.csv"
    ok, message = load_competition(comp, demo_data).validate(submission)
    assert ok, message

    review = standin.chat([{"role": "system", "content": review_prompt(run.stdout)}], tools=[REVIEW_TOOL])
    call = review.json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "submit_review"
    args = json.loads(call["function"]["arguments"])
    assert args["is_bug"] is False
    assert isinstance(args["metric"], float)  # aideml drops a metric that is not a float
    assert f"{args['metric']:.6f}" in run.stdout
    assert args["lower_is_better"] is (comp == "demo-diabetes")


def test_review_of_a_failed_run_is_a_bug(standin: StandIn) -> None:
    out = 'Traceback (most recent call last):\n  File "runfile.py", line 3\nKeyError: "target"'
    resp = standin.chat([{"role": "system", "content": review_prompt(out)}], tools=[REVIEW_TOOL])
    args = json.loads(resp.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    assert args["is_bug"] is True and args["metric"] is None


def test_report_and_usage(standin: StandIn) -> None:
    resp = standin.chat([{"role": "system", "content": REPORT}, {"role": "user", "content": "journal"}])
    body = resp.json()
    assert body["choices"][0]["message"]["content"].startswith("# Introduction")
    assert body["usage"]["prompt_tokens"] > 0  # aideml reads usage
    assert [r.get("kind") for r in standin.records()] == ["report"]


def test_wrong_model_streaming_and_unknown_paths_are_refused(standin: StandIn) -> None:
    wrong = requests.post(
        f"{standin.url}/chat/completions", json={"model": "gpt-4o", "messages": []}, timeout=5
    )
    assert wrong.status_code == 404
    assert standin.chat([{"role": "user", "content": "x"}], stream=True).status_code == 400
    assert requests.get(f"{standin.url}/files", timeout=5).status_code == 404
    assert requests.post(f"{standin.url}/completions", json={}, timeout=5).status_code == 404
    assert [r["status"] for r in standin.records()] == [404, 400, 404, 404]


def test_every_request_is_logged_with_client_and_host(standin: StandIn) -> None:
    requests.get(f"{standin.url}/models", timeout=5)
    standin.chat([{"role": "system", "content": DRAFT}])
    recs = standin.records()
    assert [(r["method"], r["path"], r.get("kind")) for r in recs] == [
        ("GET", "/v1/models", "models"),
        ("POST", "/v1/chat/completions", "draft"),
    ]
    assert all(r["client"] == "127.0.0.1" and r["host"] == standin.url.split("/")[2] for r in recs)


def test_fail_kind_answers_503(tmp_path: Path) -> None:
    s = StandIn(tmp_path, "--fail", "report")
    try:
        assert s.chat([{"role": "system", "content": REPORT}]).status_code == 503
        assert s.chat([{"role": "system", "content": DRAFT}]).status_code == 200
    finally:
        assert s.stop() == 0


def test_api_key_is_required_when_set(tmp_path: Path) -> None:
    s = StandIn(tmp_path, "--api-key", "sekrit")
    try:
        assert requests.get(f"{s.url}/models", timeout=5).status_code == 401
        ok = requests.get(f"{s.url}/models", headers={"Authorization": "Bearer sekrit"}, timeout=5)
        assert ok.status_code == 200
        assert [r["auth"] for r in s.records()] == [False, True]
    finally:
        s.stop()


def test_sigterm_stops_it_cleanly(tmp_path: Path) -> None:
    s = StandIn(tmp_path)
    assert s.stop() == 0
