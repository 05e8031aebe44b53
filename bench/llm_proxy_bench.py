"""Benchmark of what the LLM proxy (`mlebench-hpc llm-proxy`) costs per request: prints figures,
asserts nothing.

The stand-in (tests/llm_standin/server.py, SO_REUSEPORT set as vLLM does) on 127.0.0.1, asked
--requests times per case, one request at a time over a fresh connection (as AIDE's client does
between its long calls):
  direct         the stand-in itself, with the server's key (what agents did before the proxy)
  proxy          through the proxy, with a run's key (every backend connection checked in /proc)
  proxy+joiner   the same with a joiner on the backend's port (half the connections land on it,
                 are refused and retried)
For each: p50 and p95 of GET /v1/models and POST /v1/chat/completions, in ms, and for the proxy
the added p50; and what one check of a connection reads (/proc/net/tcp lines, processes).

    .venv/bin/python bench/llm_proxy_bench.py [--requests 200]
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import requests

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "mlebench-hpc"
STANDIN = REPO / "tests" / "llm_standin" / "server.py"
JOINER = REPO / "tests" / "llm_standin" / "joiner.py"
MODEL = "standin-sklearn"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "# Task description\nsolve it"}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def timed(n: int, url: str, key: str) -> tuple[list[float], list[float]]:
    headers = {"Authorization": f"Bearer {key}", "Connection": "close"}
    gets, posts = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        assert requests.get(f"{url}/models", headers=headers, timeout=30).status_code == 200
        gets.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        assert (
            requests.post(f"{url}/chat/completions", json=CHAT, headers=headers, timeout=30).status_code
            == 200
        )
        posts.append((time.perf_counter() - t0) * 1000)
    return gets, posts


def pct(xs: list[float], p: float) -> float:
    return statistics.quantiles(xs, n=100)[int(p) - 1] if len(xs) > 1 else xs[0]


@click.command()
@click.option("--requests", "n", default=200, show_default=True, help="Requests of each kind per case.")
def main(n: int) -> None:
    from mlebench_hpc.llm.keys import read_api_key, register_run_key

    tmp = Path(tempfile.mkdtemp(prefix="mh-proxy-bench-"))
    subprocess.run(
        [CLI, "llm-proxy", "backend-env", tmp / "b.env", "--key-out", tmp / "server.key"], check=True
    )
    server_key = read_api_key(tmp / "server.key")
    port = free_port()
    env = {**os.environ, "LLM_API_KEY": server_key}
    backend = subprocess.Popen(
        [sys.executable, STANDIN, "--model", MODEL, "--port", str(port), "--reuse-port"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    procs = [backend]
    try:
        wait_port(port)
        state = tmp / "state"
        proxy = subprocess.Popen(
            [CLI, "llm-proxy", "serve", "--model", MODEL, "--backend-port", str(port), "--backend-pid",
             str(backend.pid), "--server-key-file", tmp / "server.key", "--state-dir", state],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(proxy)
        while not (state / "url").is_file():
            time.sleep(0.05)
        url = (state / "url").read_text().strip()
        run_key = register_run_key(state, "bench_1")[0]
        direct = f"http://127.0.0.1:{port}/v1"
        results = {"direct": timed(n, direct, server_key), "proxy": timed(n, url, run_key)}
        joiner = subprocess.Popen(
            [sys.executable, JOINER, "join", "--port", str(port), "--counts", tmp / "j.json"],
            stderr=subprocess.DEVNULL,
        )
        procs.append(joiner)
        while not (tmp / "j.json").is_file():
            time.sleep(0.05)
        results["proxy+joiner"] = timed(n, url, run_key)
        tcp_lines = sum(
            len(Path(t).read_text().splitlines()) - 1 for t in ("/proc/net/tcp", "/proc/net/tcp6")
        )
        nprocs = sum(1 for e in Path("/proc").iterdir() if e.name.isdigit())
        print(f"{n} requests of each kind per case, one connection each; /proc/net/tcp[6]: {tcp_lines} "
              f"sockets, {nprocs} processes on this machine")  # fmt: skip
        print("| case | GET /v1/models p50 | p95 | POST chat p50 | p95 | added p50 (GET, POST) |")
        print("|---|---|---|---|---|---|")
        base_get, base_post = (statistics.median(x) for x in results["direct"])
        for case, (gets, posts) in results.items():
            get50, post50 = statistics.median(gets), statistics.median(posts)
            added = "-" if case == "direct" else f"{get50 - base_get:.1f}, {post50 - base_post:.1f} ms"
            print(
                f"| {case} | {get50:.1f} ms | {pct(gets, 95):.1f} ms | "
                f"{post50:.1f} ms | {pct(posts, 95):.1f} ms | {added} |"
            )
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=15)


if __name__ == "__main__":
    main()
