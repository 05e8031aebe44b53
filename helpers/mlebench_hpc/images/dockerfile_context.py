"""A Docker build context read as Docker reads it, for COPY and ADD of local files.

`.dockerignore` at the context's root is honoured (Docker's pattern rules: `*`, `?`, `[...]`,
`**`, `!` exceptions, the last matching line wins, a pattern that matches a directory excludes
what is below it). Nothing outside the context is read: every path is walked with lstat, a
symbolic link is kept as a link, never followed, and `..` cannot leave the root. What one COPY
copies becomes one tar (uid 0, sorted, the files' modes and times), which the build extracts.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from mlebench_hpc.images.dockerfile_syntax import DockerfileError


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's (moby patternmatcher) translation of one pattern into a regular expression."""
    out, i = "^", 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern[i : i + 2] == "**":
                i += 1
                if pattern[i + 1 : i + 2] == "/":
                    i += 1
                    out += "(.*/)?"  # **/ : zero or more directories
                else:
                    out += ".*"
            else:
                out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                raise DockerfileError(f".dockerignore: bad pattern {pattern!r} (unclosed [)")
            body = pattern[i + 1 : j]
            if body.startswith("^"):
                body = "^" + re.escape(body[1:]).replace("\\-", "-")
            else:
                body = re.escape(body).replace("\\-", "-")
            out += f"[{body}]"
            i = j
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$")


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    exclusion: bool  # a `!` line: brings files back


class Ignore:
    def __init__(self, lines: list[str]) -> None:
        self.rules: list[_Rule] = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = line.startswith("!")
            if exclusion:
                line = line[1:].strip()
            line = os.path.normpath(line).lstrip("/")
            if line in ("", "."):
                continue
            self.rules.append(_Rule(_pattern_regex(line), exclusion))

    @classmethod
    def of(cls, context: Path) -> Ignore:
        f = context / ".dockerignore"
        if f.is_symlink() or not f.is_file():
            return cls([])
        return cls(f.read_text(errors="replace").splitlines())

    def ignored(self, rel: str) -> bool:
        """rel: a path relative to the context, '/'-separated."""
        parts = rel.split("/")
        parents = ["/".join(parts[: k + 1]) for k in range(len(parts) - 1)]
        matched = False
        for rule in self.rules:
            if rule.regex.match(rel) or any(rule.regex.match(p) for p in parents):
                matched = not rule.exclusion
        return matched


class Context:
    """The files of a build context that a COPY may name (lstat only, never through a link)."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise DockerfileError(f"build context {root} is not a directory")
        self.root = root.resolve()
        self.ignore = Ignore.of(self.root)
        self._entries: dict[str, os.stat_result] | None = None

    @property
    def entries(self) -> dict[str, os.stat_result]:
        """Every path below the root that .dockerignore lets through, relative, with its lstat."""
        if self._entries is None:
            found: dict[str, os.stat_result] = {}
            stack = [""]
            while stack:
                rel = stack.pop()
                with os.scandir(self.root / rel if rel else self.root) as it:
                    for e in it:
                        sub = f"{rel}/{e.name}" if rel else e.name
                        st = e.stat(follow_symlinks=False)
                        if stat.S_ISDIR(st.st_mode):
                            stack.append(sub)  # walked even when ignored: `!` may bring a child back
                        if not self.ignore.ignored(sub):
                            found[sub] = st
            self._entries = found
        return self._entries

    def clean(self, source: str) -> str:
        """SOURCE as a path relative to the root ('' = the root); never outside it."""
        norm = os.path.normpath("/" + source.replace("\\", "/")).lstrip("/")
        parts = [p for p in source.replace("\\", "/").split("/") if p]
        depth = 0
        for p in parts:
            depth += -1 if p == ".." else (0 if p == "." else 1)
            if depth < 0:
                raise DockerfileError(f"{source}: outside the build context ({self.root})")
        return "" if norm in (".", "") else norm

    def sources(self, source: str) -> list[str]:
        """What SOURCE names: itself, or every entry its wildcard matches; DockerfileError when
        nothing (missing, or excluded by .dockerignore)."""
        rel = self.clean(source)
        if any(c in rel for c in "*?["):
            rx = _pattern_regex(rel)
            hits = sorted(p for p in self.entries if rx.match(p))
            if not hits:
                raise DockerfileError(f"{source}: no file of the build context matches")
            return hits
        if rel and rel not in self.entries:
            raise DockerfileError(
                f"{source}: not in the build context (missing or excluded by .dockerignore)"
            )
        return [rel]

    def lstat(self, rel: str) -> os.stat_result:
        return os.lstat(self.root / rel) if rel else os.lstat(self.root)

    def is_dir(self, rel: str) -> bool:
        return stat.S_ISDIR(self.lstat(rel).st_mode)

    def below(self, rel: str) -> list[str]:
        """Entries strictly below directory REL, sorted."""
        prefix = f"{rel}/" if rel else ""
        return sorted(p for p in self.entries if p.startswith(prefix) and p != rel)


_ARCHIVE_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")


def is_archive(path: Path) -> bool:
    """What ADD would unpack: a (compressed) tar."""
    with path.open("rb") as fh:
        head = fh.read(512)
    if any(head.startswith(m) for m in _ARCHIVE_MAGIC):
        return True
    return len(head) >= 262 and head[257:262] == b"ustar"


def write_payload(
    ctx: Context, members: list[tuple[str, str]], out: Path, chmod: int | None, uid: int = 0, gid: int = 0
) -> None:
    """A tar of MEMBERS ((context path, name in the tar) pairs), as root, links kept as links."""
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        for rel, name in members:
            full = ctx.root / rel
            st = os.lstat(full)
            info = tarfile.TarInfo(name)
            info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
            info.mtime = int(st.st_mtime)
            info.mode = stat.S_IMODE(st.st_mode) if chmod is None else chmod
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(full)
                info.mode = 0o777
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                info.size = st.st_size
                fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
                with os.fdopen(fd, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                raise DockerfileError(
                    f"{rel}: not a file, directory or link (a FIFO or device): remove it from the context"
                )
