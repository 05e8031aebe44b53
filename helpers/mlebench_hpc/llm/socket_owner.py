"""Which process holds the other end of a local TCP connection, read from /proc.

A server that sets SO_REUSEPORT (vLLM, llama.cpp's server) shares its port with any later socket
of the same user that sets it too, and the kernel spreads new connections over all of them: an
agent on the node can take part of the connections meant for the server. So the LLM proxy checks
every connection it opens to its backend before sending a byte: the server side of the connection
(in /proc/net/tcp or tcp6: local = the backend's address, remote = our socket's address) has an
inode once it was accept()ed, and that inode must be an open file of a process of the backend's
own process tree (the pid the job started and its descendants, /proc/<pid>/fd).

Linux only; everything here reads the network namespace and the processes this process sees."""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TCP_TABLES = (PROC / "net" / "tcp", PROC / "net" / "tcp6")
ESTABLISHED, SYN_RECV = "01", "03"
# An honest server accepts within milliseconds; one that does not accept at all (a joiner that
# only holds the connection) must not hold ours for long either.
ACCEPT_WAIT_SECS = 5.0
# accept() makes the inode visible a moment before the descriptor is in the process's table
# (microseconds): look again a few times before calling it someone else's.
FD_RECHECKS_SECS = (0.001, 0.005, 0.02)


@dataclass(frozen=True)
class Peer:
    """What is at the other end of a connection: `inode` 0 when it was never accepted in time;
    `owned` when a process of the expected tree holds it."""

    inode: int
    owned: bool

    def describe(self) -> str:
        """Who holds it, for an error line (reads every process's descriptors: not on each call)."""
        if not self.inode:
            return "a socket that never accepted the connection"
        holder = holder_of(self.inode)
        if holder is None:
            return "a socket held by no process we can see"
        return f"process {holder} ({process_name(holder)})"


def _hex(ip: str, port: int) -> list[str]:
    """How /proc/net/tcp and tcp6 print IP:PORT (each 32-bit word in host order): an IPv4 address
    appears in tcp, and v4-mapped in tcp6 (a dual-stack server's sockets)."""
    ip = ip[len("::ffff:") :] if ip.startswith("::ffff:") and "." in ip else ip
    if "." in ip:
        raw = socket.inet_pton(socket.AF_INET, ip)
        forms = [raw, b"\0" * 10 + b"\xff\xff" + raw]
    else:
        forms = [socket.inet_pton(socket.AF_INET6, ip)]
    out = []
    for form in forms:
        words = struct.unpack(f"={len(form) // 4}I", form)
        out.append("".join(f"{w:08X}" for w in words) + f":{port:04X}")
    return out


def server_side(local: tuple[str, int], remote: tuple[str, int]) -> tuple[str, int] | None:
    """(state, inode) of the socket whose local address is REMOTE (the server's end) and remote
    address is LOCAL (our end); the inode is 0 until it is accepted. None when there is none."""
    server_ends, client_ends = _hex(*remote), _hex(*local)
    for table in TCP_TABLES:
        try:
            text = table.read_text(encoding="ascii")
        except OSError:
            continue
        for server_end, client_end in zip(server_ends, client_ends, strict=True):
            pair = f" {server_end} {client_end} "
            at = text.find(pair)
            if at >= 0:
                f = text[at : text.find("\n", at)].split()
                return f[2], int(f[8])
    return None


def process_tree(root: int) -> set[int]:
    """ROOT and all its descendants (by the parent pid of every process in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[-1].split()[1])  # the name in (...) may hold spaces
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(children.get(pid, ()))
    return tree


def holds(pid: int, inode: int) -> bool:
    """True when process PID has the socket INODE open."""
    target = f"socket:[{inode}]"
    try:
        fds = os.listdir(PROC / str(pid) / "fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(PROC / str(pid) / "fd" / fd) == target:
                return True
        except OSError:
            continue
    return False


def holder_of(inode: int) -> int | None:
    """Any process we can see that holds the socket INODE (for the error line only: it reads
    every process's descriptors)."""
    for entry in PROC.iterdir():
        if entry.name.isdigit() and holds(int(entry.name), inode):
            return int(entry.name)
    return None


def process_name(pid: int) -> str:
    try:
        return (PROC / str(pid) / "comm").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "gone"


def start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/<pid>/stat): with the pid, names it for good."""
    try:
        stat = (PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


class Tree:
    """The backend's process tree, remembering the processes it has seen holding its connections:
    a process once in the tree stays the tree's (an agent cannot make its own processes children of
    the backend), and its start time tells it from a later process with the same pid."""

    def __init__(self, root: int) -> None:
        self.root = root
        self._known: dict[int, str] = {}

    def holds(self, inode: int) -> bool:
        for pid, started in list(self._known.items()):
            if holds(pid, inode):
                if start_time(pid) == started:
                    return True
                self._known.pop(pid, None)  # gone, and its pid reused
        for pid in process_tree(self.root):
            if pid not in self._known and holds(pid, inode):
                started = start_time(pid)
                if started is not None:
                    self._known[pid] = started
                return True
        return False


def check_peer(sock: socket.socket, tree: Tree, accept_wait: float = ACCEPT_WAIT_SECS) -> Peer:
    """Who accepted SOCK's connection: owned when a process of TREE holds it."""
    local, remote = sock.getsockname()[:2], sock.getpeername()[:2]
    deadline = time.monotonic() + accept_wait
    delay = 0.0005
    while True:
        found = server_side(local, remote)
        state, inode = found if found else (SYN_RECV, 0)  # not listed yet: the handshake is finishing
        if inode and state == ESTABLISHED:
            break
        if state not in (ESTABLISHED, SYN_RECV) or time.monotonic() >= deadline:
            return Peer(0, False)  # closed by the other end at once, or never accepted
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    for pause in (0.0, *FD_RECHECKS_SECS):
        time.sleep(pause)
        if tree.holds(inode):
            return Peer(inode, True)
    return Peer(inode, False)
