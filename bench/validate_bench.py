"""Benchmark of the grading server: prints figures, asserts nothing.

1. /validate p50 latency at 10k, 100k and 1M rows (synthetic spaceship-titanic) next to a bare
   `pandas.read_csv` of submission + answers on the same files; the ratio is the figure. With it,
   the peak RSS of the server process and of the validation worker that handled the requests.
2. 64 requests from 32 threads with distinct valid and invalid files: errors and wrong verdicts.
3. Junk bodies much bigger than the upload limit (declared Content-Length, and chunked): time to
   refusal, server memory (RSS from /proc) before/after/peak, temporary files left behind.
4. Oversized submissions (a CSV within the upload limit whose parse needs far more memory than a
   validation's budget), two at once: the answers, and the peak RSS of the server, of each of its
   processes and of all of them together; then the same against a server that validates in its own
   process (--validate-workers 0), the control.

    .venv/bin/python bench/validate_bench.py [--sizes 10000,100000,1000000] [--reps 5]
        [--sections latency,concurrency,junk,oversized] [--checkout DIR]

--checkout DIR runs the grading server of another checkout (e.g. `git worktree add` of an older
commit) with this bench, for before/after figures on the same machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pandas as pd
import requests

REPO = Path(__file__).resolve().parents[1]
COMP = "spaceship-titanic"
MIB = 1024 * 1024
SECTIONS = ("latency", "concurrency", "junk", "oversized")
CHECKOUT = [REPO]  # --checkout: whose grading server runs


def make_competition(root: Path, n_rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = [f"{i:07d}_{m:02d}" for i, m in zip(range(n_rows), rng.integers(1, 9, n_rows), strict=True)]
    answers = pd.DataFrame({"PassengerId": ids, "Transported": rng.random(n_rows) < 0.5})
    prepared = root / COMP / "prepared"
    (prepared / "private").mkdir(parents=True)
    (prepared / "public").mkdir(parents=True)
    answers.to_csv(prepared / "private" / "test.csv", index=False)
    answers.assign(Transported=False).to_csv(prepared / "public" / "sample_submission.csv", index=False)
    return answers


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    startup_s: float
    tmp_root: Path

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def memory_kib(self, pid: int | None = None) -> dict[str, int]:
        """VmRSS (now) and VmHWM (peak) of the server process (or of PID)."""
        out = {"VmRSS": 0, "VmHWM": 0}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid or self.proc.pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0])
        return out

    def processes(self) -> list[int]:
        """The server and every process below it (the validation zygote and its workers)."""
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            with contextlib.suppress(OSError):
                todo += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        return found

    def workers(self) -> list[int]:
        """The validation workers: the children of the server's children (none in-process)."""
        kids = self.processes()
        return [p for p in kids if p != self.proc.pid and _parent(p) != self.proc.pid]

    def leftover_files(self) -> int:
        """Upload files still on disk (the server's own lock file does not count)."""
        return sum(1 for p in self.tmp_root.rglob("upload-*") if p.is_file())


def _parent(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return 0


def start_server(data_dir: Path, workdir: Path, *extra: str) -> Server:
    tmp_root = workdir / "tmp"
    tmp_root.mkdir(parents=True)
    checkout = CHECKOUT[0]
    env = {**os.environ, "TMPDIR": str(tmp_root), "PYTHONPATH": str(checkout / "helpers")}
    cmd = [
        sys.executable, str(checkout / "environment" / "run_grading_server.py"), "--competition-id", COMP,
        "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", "0", *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    with open(workdir / "server.err", "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("GRADING_SERVER_URL="):
        raise click.ClickException(f"server did not start: {(workdir / 'server.err').read_text()[-500:]}")
    return Server(proc, line.strip().split("=", 1)[1], time.perf_counter() - started, tmp_root)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def post(url: str, content: bytes, session: requests.Session | None = None) -> requests.Response:
    sender = session or requests
    return sender.post(f"{url}/validate", files={"file": ("submission.csv", content)}, timeout=300)


# -- 1. latency ------------------------------------------------------------------------------------
def bench_latency(root: Path, sizes: list[int], reps: int) -> None:
    click.echo("== /validate latency vs bare read_csv(submission) + read_csv(answers)")
    click.echo(
        f"{'rows':>9} {'order':>9} {'start s':>8} {'cold ms':>8} {'p50 ms':>8} {'read_csv p50 ms':>16} "
        f"{'ratio':>6} {'verdict':>8} {'server MiB':>11} {'worker MiB':>11}"
    )
    for n in sizes:
        data_dir = root / f"data-{n}"
        answers = make_competition(data_dir, n)
        ans_path = data_dir / COMP / "prepared" / "private" / "test.csv"
        rng = np.random.default_rng(1)
        submission = answers.assign(Transported=rng.random(n) < 0.5)
        server = start_server(data_dir, root / f"srv-{n}")
        try:
            # rows in the answers' (sample submission's) order, then shuffled: ids must be matched
            shuffled = submission.sample(frac=1, random_state=2)
            for order, table in (("answers", submission), ("shuffled", shuffled)):
                sub_path = root / f"sub-{n}-{order}.csv"
                table.to_csv(sub_path, index=False)
                content = sub_path.read_bytes()
                with requests.Session() as session:
                    cold = timed(lambda: post(server.url, content, session)) * 1000  # noqa: B023
                    verdicts = set()
                    lat = []
                    for _ in range(reps):
                        started = time.perf_counter()
                        verdicts.add(post(server.url, content, session).json()["valid"])
                        lat.append(time.perf_counter() - started)
                bare = [timed(lambda: (pd.read_csv(sub_path), pd.read_csv(ans_path))) for _ in range(reps)]  # noqa: B023
                p50, bare_p50 = statistics.median(lat) * 1000, statistics.median(bare) * 1000
                # peak RSS so far: of the server process, and of the busiest validation worker
                peaks = [server.memory_kib(w)["VmHWM"] for w in server.workers()]
                worker = f"{max(peaks) / 1024:.0f}" if peaks else "-"
                click.echo(
                    f"{n:>9} {order:>9} {server.startup_s:>8.2f} {cold:>8.1f} {p50:>8.1f} {bare_p50:>16.1f} "
                    f"{p50 / bare_p50:>6.2f} {'/'.join(str(v) for v in sorted(verdicts)):>8} "
                    f"{server.memory_kib()['VmHWM'] / 1024:>11.0f} {worker:>11}"
                )
        finally:
            server.stop()


# -- 2. concurrency --------------------------------------------------------------------------------
def bench_concurrency(root: Path, n_requests: int, n_threads: int, rows: int) -> None:
    click.echo(f"== {n_requests} requests from {n_threads} threads, distinct files of {rows} rows")
    data_dir = root / "data-conc"
    answers = make_competition(data_dir, rows, seed=7)
    cases: list[tuple[bytes, bool]] = []
    for i in range(n_requests):
        frame = answers.assign(Transported=answers.index % (i + 2) == 0)
        kind = i % 4
        if kind == 1:
            frame = frame.iloc[i:]  # rows missing
        elif kind == 3:
            frame = frame.copy()
            frame.loc[frame.index[: i + 1], "PassengerId"] = [
                f"X{j}_{i}" for j in range(i + 1)
            ]  # unknown ids
        cases.append((frame.to_csv(index=False).encode(), kind in (0, 2)))
    server = start_server(data_dir, root / "srv-conc")
    try:

        def one(i: int) -> tuple[float, str]:
            started = time.perf_counter()
            try:
                response = post(server.url, cases[i][0])
            except requests.RequestException as exc:
                return time.perf_counter() - started, f"error {type(exc).__name__}"
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                return elapsed, f"error HTTP {response.status_code}"
            return elapsed, "ok" if response.json()["valid"] is cases[i][1] else "wrong"

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            results = list(pool.map(one, range(n_requests)))
        wall = time.perf_counter() - started
        time.sleep(0.2)
        outcomes = [r[1] for r in results]
        lat = sorted(r[0] * 1000 for r in results)
        click.echo(
            f"requests {len(results)}  errors {sum(o.startswith('error') for o in outcomes)}  "
            f"wrong verdicts {outcomes.count('wrong')}  valid sent {sum(c[1] for c in cases)}  "
            f"wall {wall:.2f}s  p50 {statistics.median(lat):.0f} ms  max {lat[-1]:.0f} ms  "
            f"temp files left {server.leftover_files()}"
        )
    finally:
        server.stop()


# -- 3. junk bigger than the limit -----------------------------------------------------------------
def send_junk(url: str, total: int, chunked: bool) -> tuple[str, float, int]:
    """Stream `total` junk bytes as the `file` part until the server answers; returns
    (status line, seconds to the answer, bytes sent)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=120)
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % total
    preamble = b'--JUNKBOUNDARY\r\nContent-Disposition: form-data; name="file"; filename="j.csv"\r\n\r\n'
    block = np.random.default_rng(0).integers(0, 256, MIB, dtype=np.uint8).tobytes()
    answered = threading.Event()
    sent = [0]

    def sender() -> None:
        payload = preamble + block
        try:
            while sent[0] < total and not answered.is_set():
                sock.sendall(b"%x\r\n%s\r\n" % (len(payload), payload) if chunked else payload)
                sent[0] += len(payload)
                payload = block
        except OSError:  # the server closed on us: expected once it has refused
            pass

    started = time.perf_counter()
    sock.sendall(
        b"POST /validate HTTP/1.1\r\nHost: bench\r\n"
        b"Content-Type: multipart/form-data; boundary=JUNKBOUNDARY\r\n" + framing + b"\r\n\r\n"
    )
    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    try:
        reply = sock.recv(4096)
    except OSError as exc:
        reply = f"(no reply: {type(exc).__name__})".encode()
    elapsed = time.perf_counter() - started
    answered.set()
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    thread.join(timeout=30)
    return reply.split(b"\r\n", 1)[0].decode(errors="replace") or "(connection closed)", elapsed, sent[0]


def bench_junk(root: Path, junk_mib: int, limit_mib: int) -> None:
    click.echo(f"== junk upload of {junk_mib} MiB against a limit of {limit_mib} MiB")
    data_dir = root / "data-junk"
    make_competition(data_dir, 10_000, seed=3)
    server = start_server(data_dir, root / "srv-junk", "--max-upload-mb", str(limit_mib))
    try:
        requests.get(f"{server.url}/health", timeout=10)
        before = server.memory_kib()
        click.echo(f"server RSS before: {before['VmRSS'] / 1024:.0f} MiB")
        for chunked in (False, True):
            status, seconds, sent = send_junk(server.url, junk_mib * MIB, chunked)
            time.sleep(0.3)
            after = server.memory_kib()
            health = requests.get(f"{server.url}/health", timeout=10).status_code
            click.echo(
                f"{'chunked' if chunked else 'Content-Length'}: {status!r} after {seconds:.2f}s, "
                f"{sent / MIB:.0f} MiB sent; RSS after {after['VmRSS'] / 1024:.0f} MiB, "
                f"peak {after['VmHWM'] / 1024:.0f} MiB; temp files left {server.leftover_files()}; "
                f"health {health}"
            )
    finally:
        server.stop()


# -- 4. oversized submissions ---------------------------------------------------------------------
def bench_oversized(root: Path, rows: int, parallel: int) -> None:
    click.echo(f"== {parallel} oversized submissions at once ({rows} rows of text ids) against 10k answers")
    data_dir = root / "data-over"
    make_competition(data_dir, 10_000, seed=5)
    big = root / "oversized.csv"
    with big.open("w") as f:
        f.write("PassengerId,Transported\n")
        for start in range(0, rows, 100_000):
            f.write("".join(f"x{i:09d}_01,True\n" for i in range(start, min(rows, start + 100_000))))
    content = big.read_bytes()
    click.echo(f"upload {len(content) / MIB:.0f} MiB")
    for label, extra in (("workers", ()), ("in-process (--validate-workers 0)", ("--validate-workers", "0"))):
        server = start_server(data_dir, root / f"srv-over-{len(extra)}", *extra)
        try:
            click.echo(f"{label}: {oversized_once(server, content, parallel)}")
        finally:
            server.stop()


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages split between the processes that map them, so the sum
    over the server's processes is what they hold together (RSS would count the answers N times)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def oversized_once(server: Server, content: bytes, parallel: int) -> str:
    requests.get(f"{server.url}/health", timeout=10)
    time.sleep(0.5)
    before = sum(pss_kib(p) for p in server.processes())
    peak_total = [before]
    peak_rss: dict[int, int] = {}
    done = threading.Event()

    def sample() -> None:  # every process's RSS and their PSS together, while they work
        while not done.wait(0.02):
            procs = server.processes()
            for p in procs:
                peak_rss[p] = max(peak_rss.get(p, 0), server.memory_kib(p)["VmRSS"])
            peak_total[0] = max(peak_total[0], sum(pss_kib(p) for p in procs))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        answers = list(pool.map(lambda _: post(server.url, content), range(parallel)))
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    said = {
        "budget" if "allows one validation" in r.text else ("invalid" if r.ok else f"HTTP {r.status_code}")
        for r in answers
    }
    main = max(server.memory_kib()["VmHWM"], peak_rss.get(server.proc.pid, 0))
    others = sorted((v for p, v in peak_rss.items() if p != server.proc.pid), reverse=True)
    alive = requests.get(f"{server.url}/health", timeout=10).status_code
    return (
        f"answered {'/'.join(sorted(said))} in {elapsed:.2f}s; peak RSS: server {main / 1024:.0f} MiB, "
        f"largest other process {others[0] / 1024 if others else 0:.0f} MiB; all processes together "
        f"(PSS) peak {peak_total[0] / 1024:.0f} MiB, before {before / 1024:.0f} MiB; health {alive}"
    )


@click.command()
@click.option(
    "--sizes", default="10000,100000,1000000", show_default=True, help="Row counts, comma-separated."
)
@click.option("--reps", default=5, show_default=True, type=click.IntRange(1), help="Repetitions per size.")
@click.option("--requests", "n_requests", default=64, show_default=True, type=click.IntRange(1))
@click.option("--threads", "n_threads", default=32, show_default=True, type=click.IntRange(1))
@click.option("--concurrent-rows", default=10_000, show_default=True, type=click.IntRange(10))
@click.option("--junk-mib", default=2048, show_default=True, type=click.IntRange(1))
@click.option("--limit-mib", default=1024, show_default=True, type=click.IntRange(1))
@click.option("--oversized-rows", default=14_000_000, show_default=True, type=click.IntRange(1000))
@click.option("--oversized-parallel", default=2, show_default=True, type=click.IntRange(1))
@click.option("--sections", default=",".join(SECTIONS), show_default=True, help="Which parts to run.")
@click.option(
    "--checkout",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=REPO,
    help="Run this checkout's grading server (default: the bench's own).",
)
def main(
    sizes: str,
    reps: int,
    n_requests: int,
    n_threads: int,
    concurrent_rows: int,
    junk_mib: int,
    limit_mib: int,
    oversized_rows: int,
    oversized_parallel: int,
    sections: str,
    checkout: Path,
) -> None:
    """Benchmark the grading server (prints figures)."""
    started = time.perf_counter()
    chosen = {s.strip() for s in sections.split(",") if s.strip()}
    if chosen - set(SECTIONS):
        raise click.BadParameter(
            f"unknown: {', '.join(sorted(chosen - set(SECTIONS)))}", param_hint="--sections"
        )
    CHECKOUT[0] = checkout.resolve()
    click.echo(
        f"python {sys.version.split()[0]}, pandas {pd.__version__}, {os.cpu_count()} cpus, "
        f"server of {CHECKOUT[0]}, load {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="mlebench-hpc-bench-") as tmp:
        root = Path(tmp)
        if "latency" in chosen:
            bench_latency(root, [int(s) for s in sizes.split(",") if s.strip()], reps)
        if "concurrency" in chosen:
            bench_concurrency(root, n_requests, n_threads, concurrent_rows)
        if "junk" in chosen:
            bench_junk(root, junk_mib, limit_mib)
        if "oversized" in chosen:
            bench_oversized(root, oversized_rows, oversized_parallel)
    click.echo(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
