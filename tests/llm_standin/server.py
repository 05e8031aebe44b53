"""An OpenAI-compatible stand-in for a local LLM server (vLLM, llama.cpp, SGLang), for the tests.

It answers what AIDE (aideml 0.2.2) asks over the chat-completions API, deterministically:
  - drafts, improvements and bug fixes: a short plan and a scikit-learn solution for the demo
    competitions (train.csv / test.csv with `id` and `target` in ./input, as AIDE lays them out),
    cross-validated, printing its metric and writing ./working/submission.csv (AIDE's convention);
  - the review (a `submit_review` tool call): the metric the solution printed, read from the
    execution output in the prompt; a missing metric or a traceback is reported as a bug;
  - the final report: a short markdown text.
GET /v1/models lists its one model. Every request is logged as one JSON line (--log, and
stderr), so a test can show what was asked and that nothing else was contacted.

Standard library only: it must run under any python3, inside an image as well as on the host.

usage: server.py --model NAME [--host H] [--port P (0: a free one)] [--log FILE] [--url-file F]
                 [--api-key KEY] [--reuse-port] [--fail KIND]...
--fail KIND answers HTTP 503 to requests of that kind (draft, improve, debug, review, report),
which clients retry forever: for testing that the agent bounds its waits. The key defaults to
STANDIN_API_KEY, else LLM_API_KEY from the environment (what the LLM server job gives LLM_CMD).
--reuse-port sets SO_REUSEPORT on its socket, as vLLM and llama.cpp's server do: then any process
of the same user can bind the same port and receive part of the connections."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KINDS = ("draft", "improve", "debug", "review", "report")
MAX_BODY = 16 * 1024 * 1024
# What the solutions print; the review reads it back from the execution output.
METRIC_LINE = re.compile(
    r"Validation metric \((?P<name>[a-z_]+), lower is better: (?P<lower>True|False)\): (?P<value>[-+0-9.eE]+)"
)

_SOLUTION = """\
import os

import pandas as pd
from sklearn.metrics import mean_squared_error, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict

{imports}

train = pd.read_csv("./input/train.csv")
test = pd.read_csv("./input/test.csv")
features = [c for c in train.columns if c not in ("id", "target")]
X, y = train[features], train["target"]
binary = set(y.unique()) <= {{0, 1}}
if binary:
    model = {classifier}
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    oof = cross_val_predict(model, X, y, cv=cv, method="predict_proba")[:, 1]
    score, name = roc_auc_score(y, oof), "roc_auc"
else:
    model = {regressor}
    cv = KFold(n_splits=5, shuffle=True, random_state=0)
    oof = cross_val_predict(model, X, y, cv=cv)
    score, name = mean_squared_error(y, oof) ** 0.5, "rmse"
model.fit(X, y)
pred = model.predict_proba(test[features])[:, 1] if binary else model.predict(test[features])
os.makedirs("./working", exist_ok=True)
pd.DataFrame({{"id": test["id"], "target": pred}}).to_csv("./working/submission.csv", index=False)
print(f"Validation metric ({{name}}, lower is better: {{not binary}}): {{score:.6f}}")
"""

_LINEAR = (
    "from sklearn.linear_model import LogisticRegression, Ridge\n"
    "from sklearn.pipeline import make_pipeline\n"
    "from sklearn.preprocessing import StandardScaler",
    "make_pipeline(StandardScaler(), LogisticRegression(C={c}, max_iter=5000))",
    "make_pipeline(StandardScaler(), Ridge(alpha={a}))",
)
_FOREST = (
    "from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor",
    "RandomForestClassifier(n_estimators={n}, random_state=0, n_jobs=1)",
    "RandomForestRegressor(n_estimators={n}, min_samples_leaf=5, random_state=0, n_jobs=1)",
)


def solution(kind: str, n: int) -> tuple[str, str]:
    """(plan, code) for the n-th coding request; linear models first, then forests."""
    if kind == "draft":
        c, a = (1.0, 0.1, 10.0)[n % 3], (1.0, 10.0, 0.1)[n % 3]
        imports, clf, reg = _LINEAR
        plan = (
            f"Standardize the numeric features and fit a regularized linear model (logistic regression C={c} "
            f"for a binary target, ridge alpha={a} for a numeric one). Evaluate with 5-fold cross-validation "
            "(ROC AUC or RMSE), refit on all training rows and write the test predictions."
        )
        code = _SOLUTION.format(imports=imports, classifier=clf.format(c=c), regressor=reg.format(a=a))
    else:
        trees = 100 + 50 * (n % 4)
        imports, clf, reg = _FOREST
        plan = (
            f"Replace the linear model by a random forest with {trees} trees, which captures interactions "
            "between the features; keep the same 5-fold cross-validation so the metric stays comparable, "
            "then refit on all rows and write the test predictions."
        )
        if kind == "debug":
            plan = "The previous script failed; rewrite it as a plain, self-contained pipeline. " + plan
        code = _SOLUTION.format(
            imports=imports, classifier=clf.format(n=trees), regressor=reg.format(n=trees)
        )
    return plan, code


def _section(text: str, title: str) -> str:
    """The body of a markdown section `# title` (AIDE compiles its prompts to markdown)."""
    m = re.search(rf"^#+ {re.escape(title)}\s*$(.*?)(?=^# |\Z)", text, re.MULTILINE | re.DOTALL)
    return m.group(1) if m else ""


def review(prompt: str) -> dict[str, Any]:
    """The `submit_review` arguments for the execution output in the prompt."""
    output = _section(prompt, "Execution output") or prompt
    found = list(METRIC_LINE.finditer(output))
    if not found or "Traceback (most recent call last)" in output:
        return {
            "is_bug": True,
            "summary": "The script failed or printed no validation metric; fix the error in the output.",
            "metric": None,
            "lower_is_better": False,
        }
    last = found[-1]
    return {
        "is_bug": False,
        "summary": f"The script ran and reached a cross-validated {last['name']} of {last['value']}.",
        "metric": float(last["value"]),
        "lower_is_better": last["lower"] == "True",
    }


def classify(body: dict[str, Any]) -> str:
    """Which of AIDE's calls this is."""
    if body.get("tools"):
        return "review"
    text = prompt_text(body)
    if "research journal" in text or "technical report" in text:
        return "report"
    if "Previous (buggy) implementation" in text:
        return "debug"
    if "Previous solution" in text:
        return "improve"
    return "draft"


def prompt_text(body: dict[str, Any]) -> str:
    parts = []
    for msg in body.get("messages") or []:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):  # [{"type": "text", "text": ...}]
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts)


class StandIn:
    """State shared by the request handlers: the model, counters, the request log."""

    def __init__(self, model: str, log_path: str | None, api_key: str | None, fail: set[str]) -> None:
        self.model = model
        self.api_key = api_key
        self.fail = fail
        self.counts: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.lock = threading.Lock()
        self.log_file = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115

    def next_index(self, kind: str) -> int:
        with self.lock:
            n = self.counts[kind]
            self.counts[kind] = n + 1
            return n

    def log(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True)
        with self.lock:
            print(f"[llm-standin] {line}", file=sys.stderr, flush=True)
            if self.log_file:
                self.log_file.write(line + "\n")
                self.log_file.flush()

    def completion(self, body: dict[str, Any], kind: str) -> dict[str, Any]:
        prompt = prompt_text(body)
        message: dict[str, Any] = {"role": "assistant", "content": None}
        finish = "stop"
        if kind == "review":
            tool = body["tools"][0].get("function", {})
            message["tool_calls"] = [
                {
                    "id": f"call_{self.next_index('review')}",
                    "type": "function",
                    "function": {
                        "name": tool.get("name", "submit_review"),
                        "arguments": json.dumps(review(prompt)),
                    },
                }
            ]
            finish = "tool_calls"
            out_text = message["tool_calls"][0]["function"]["arguments"]
        elif kind == "report":
            self.next_index("report")
            out_text = (
                "# Introduction\nA stand-in report.\n\n# Preprocessing\nStandardized numeric features.\n\n"
                "# Modelling Methods\nLinear models, then random forests.\n\n# Results Discussion\n"
                "See the journal.\n\n# Future Work\nNone: this is a test stand-in.\n"
            )
            message["content"] = out_text
        else:
            plan, code = solution(kind, self.next_index(kind))
            out_text = f"{plan}\n\n```python\n{code}```\n"
            message["content"] = out_text
        return {
            "id": f"chatcmpl-standin-{time.monotonic_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {
                "prompt_tokens": len(prompt) // 4,
                "completion_tokens": len(out_text) // 4,
                "total_tokens": (len(prompt) + len(out_text)) // 4,
            },
        }


def make_handler(state: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "mlebench-hpc-llm-standin/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass  # one JSON line per request instead (state.log)

        def _reply(self, status: int, payload: dict[str, Any], **extra: Any) -> None:
            """Log the request, then answer: a client that has its answer finds it in the log."""
            state.log(
                {
                    "time": round(time.time(), 3),
                    "client": self.client_address[0],
                    "method": self.command,
                    "path": self.path,
                    "host": self.headers.get("Host", ""),
                    "auth": bool(self.headers.get("Authorization")),
                    "status": status,
                    **extra,
                }
            )
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, **extra: Any) -> None:
            error = {"message": message, "type": HTTPStatus(status).phrase, "code": status}
            self._reply(status, {"error": error}, **extra)

        def _authorized(self) -> bool:
            if state.api_key and self.headers.get("Authorization") != f"Bearer {state.api_key}":
                self._error(401, "missing or wrong API key")
                return False
            return True

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if not self._authorized():
                return
            if self.path.rstrip("/") == "/v1/models":
                model = {"id": state.model, "object": "model", "created": 0, "owned_by": "llm-standin"}
                self._reply(200, {"object": "list", "data": [model]}, kind="models")
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self) -> None:  # noqa: N802
            if not self._authorized():
                return
            length = int(self.headers.get("Content-Length") or 0)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self.rfile.read(min(length, MAX_BODY))
                self._error(404, f"no route {self.path}")
                return
            if length <= 0 or length > MAX_BODY:
                self._error(400, "a JSON body (Content-Length) is required")
                return
            try:
                body = json.loads(self.rfile.read(length))
                if not isinstance(body, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                self._error(400, f"body is not JSON: {exc}")
                return
            model = body.get("model")
            if model != state.model:
                self._error(404, f"The model `{model}` does not exist.", model=model)
                return
            if body.get("stream"):
                self._error(400, "streaming is not supported by the stand-in", model=model)
                return
            kind = classify(body)
            if kind in state.fail:
                self._error(503, f"the stand-in was told to fail {kind} requests", model=model, kind=kind)
                return
            answer = state.completion(body, kind)
            self._reply(200, answer, model=model, kind=kind, tools=bool(body.get("tools")))

    return Handler


class ReusePortServer(ThreadingHTTPServer):
    """Binds with SO_REUSEPORT (uvicorn under vLLM and llama.cpp's server do the same)."""

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="OpenAI-compatible stand-in for the tests")
    parser.add_argument("--model", required=True, help="the one model it serves")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=0, help="port (0: a free one)")
    parser.add_argument("--log", help="append one JSON line per request to this file")
    parser.add_argument("--url-file", help="write http://<host>:<port>/v1 here once listening")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("STANDIN_API_KEY") or os.environ.get("LLM_API_KEY"),
        help="require this Bearer key",
    )
    parser.add_argument("--reuse-port", action="store_true", help="set SO_REUSEPORT, as vLLM does")
    parser.add_argument("--fail", action="append", default=[], choices=KINDS, help="answer 503 to this kind")
    args = parser.parse_args(argv)

    state = StandIn(args.model, args.log, args.api_key, set(args.fail))
    server_class = ReusePortServer if args.reuse_port else ThreadingHTTPServer
    server = server_class((args.host, args.port), make_handler(state))
    server.daemon_threads = True
    port = server.server_address[1]
    shown = socket.gethostname().split(".")[0] if args.host in ("0.0.0.0", "") else args.host
    url = f"http://{shown}:{port}/v1"
    if args.url_file:
        write_atomic(args.url_file, url + "\n")
    print(f"[llm-standin] serving {args.model} at {url} (pid {os.getpid()})", file=sys.stderr, flush=True)

    def stop(signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if state.log_file:
            state.log_file.close()
    print("[llm-standin] stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
