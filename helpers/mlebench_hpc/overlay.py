"""`mlebench-hpc overlay`: rewritten copies of the agent image's files that hard-code the
upstream grading server (`http://localhost:5000`), to bind read-only over the originals.

Files are found in the image (one `apptainer exec --contain --cleanenv --no-home` running sh:
the known upstream paths plus a grep of /home/agent and /home/*.txt, /home/*.sh) or, with
--from-dir, in a host directory laid out like the image's root. Contents are handled as bytes
(NUL bytes and non-UTF-8 survive), mode bits are kept (minus setuid/setgid), and the output is
a mirrored tree under --out plus `overlays.tsv` (host_file TAB container_path), which the bash
library turns into `--bind host:container:ro`. The originals are always the source, so a re-run
writes identical files; files are only replaced when their content or mode changes.

/home/validate_submission.sh also learns to send the run's grading token: upstream's script calls
curl without it and the server answers 401 (see `add_token`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import click

from mlebench_hpc.atomic import write_atomic
from mlebench_hpc.discovery import normalize_url
from mlebench_hpc.errors import HelperError
from mlebench_hpc.grading_token import TOKEN_ENV

KNOWN_PATHS: tuple[str, ...] = (
    "/home/instructions.txt",
    "/home/instructions_obfuscated.txt",
    "/home/validate_submission.sh",
    "/home/agent/additional_notes.txt",
)
SCAN_DIRS: tuple[str, ...] = ("/home/agent",)
SCAN_GLOBS: tuple[str, ...] = ("/home/*.txt", "/home/*.sh")
NEEDLES: tuple[bytes, ...] = (b"localhost:5000", b"127.0.0.1:5000")
MANIFEST = "overlays.tsv"
VALIDATE_SCRIPT = "/home/validate_submission.sh"
# Put after the script's first line: every curl call in it (however written) sends the token when
# the agent has one. A shell function, so bash and POSIX sh scripts both take it.
CURL_WITH_TOKEN = (
    b"# mlebench-hpc: send this run's grading token (GRADING_SERVER_TOKEN) with every curl call\n"
    b'curl() { if [ -n "${GRADING_SERVER_TOKEN:-}" ]; then '
    b'command curl -H "X-Grading-Token: ${GRADING_SERVER_TOKEN}" "$@"; else command curl "$@"; fi; }\n'
)
EXEC_TIMEOUT = 600.0
# Compiled files break when a string changes length; Python recompiles .pyc from the rewritten
# .py (its mtime and size change), so those are skipped with a note instead of corrupted.
_BINARY_MAGIC: tuple[bytes, ...] = (b"\x7fELF",)


@dataclass(frozen=True)
class Found:
    path: str  # absolute path inside the container
    mode: int
    data: bytes


def rewrite(data: bytes, url: str) -> bytes:
    """Replace every upstream server address with URL (paths such as /validate are kept)."""
    netloc_path = url.split("://", 1)[1].encode()
    out = data
    for needle in NEEDLES:
        out = out.replace(b"http://" + needle, url.encode())
        out = out.replace(needle, netloc_path)
    return out


def add_token(data: bytes) -> bytes:
    """Upstream's validate_submission.sh with the token added to its curl calls. A script that
    already handles GRADING_SERVER_TOKEN (this project's) is left as it is: a second header would
    make the server see two values and refuse."""
    if TOKEN_ENV.encode() in data:
        return data
    if data.startswith(b"#!"):
        shebang, _, body = data.partition(b"\n")
        return shebang + b"\n" + CURL_WITH_TOKEN + body
    return CURL_WITH_TOKEN + data


def _mentions(data: bytes) -> bool:
    return any(n in data for n in NEEDLES)


def _skip_reason(path: str, data: bytes) -> str | None:
    if path.endswith((".pyc", ".pyo")) or "/__pycache__/" in path:
        return "compiled Python (recompiled from the rewritten source)"
    if data.startswith(_BINARY_MAGIC):
        return "executable binary (a changed string length would corrupt it)"
    return None


def _bindable(path: str) -> bool:
    # apptainer's --bind uses ':' and ',' as separators; the manifest uses TAB and newline.
    return not any(c in path for c in ":,\t\n")


# ------------------------------------------------------------------------------- scanning
def scan_dir(root: Path, extra: tuple[str, ...]) -> list[Found]:
    """Find the files under ROOT (laid out like the image's /) that mention the address."""
    candidates: list[str] = list(KNOWN_PATHS)
    home = root / "home"
    for pattern in SCAN_GLOBS:
        candidates += sorted("/home/" + p.name for p in home.glob(Path(pattern).name))
    for top in (*SCAN_DIRS, *extra):
        host = root / top.lstrip("/")
        if host.is_file():
            candidates.append(top)
        elif host.is_dir():
            for dirpath, dirnames, filenames in os.walk(host):
                dirnames.sort()
                rel = "/" + os.path.relpath(dirpath, root)
                candidates += [f"{rel}/{name}" for name in sorted(filenames)]
    found: dict[str, Found] = {}
    for ctr in candidates:
        host = root / ctr.lstrip("/")
        if ctr in found or not host.is_file():
            continue
        try:
            data = host.read_bytes()
        except OSError as exc:
            click.echo(f"overlay: cannot read {host}: {exc.strerror}; skipped", err=True)
            continue
        if _mentions(data):
            found[ctr] = Found(ctr, stat.S_IMODE(host.stat().st_mode), data)
    return list(found.values())


# One exec: list the candidates, keep those that mention the address, then stream
# "mode size path\0" + the bytes of each. GNU grep matches past NUL bytes in one bulk call;
# other greps (busybox) stop a line at a NUL, so there each file goes through tr first.
_SCAN_SCRIPT = r"""
set -u
cands() {
  for p in "$@" @GLOBS@; do
    if [ -f "$p" ]; then printf '%s\n' "$p"
    elif [ -d "$p" ]; then find "$p" -type f 2>/dev/null
    fi
  done
}
E1=localhost:5000 E2=127.0.0.1:5000
if grep --version 2>/dev/null | grep -q GNU; then
  matches() { cands "$@" | tr '\n' '\000' | xargs -0 -r grep -lF -e "$E1" -e "$E2" -- 2>/dev/null; }
else
  matches() {
    cands "$@" | while IFS= read -r f; do
      tr '\000' '\n' < "$f" 2>/dev/null | grep -qF -e "$E1" -e "$E2" && printf '%s\n' "$f"
    done
  }
fi
matches "$@" | while IFS= read -r f; do
  printf '%s %s %s\0' "$(stat -L -c %a -- "$f")" "$(wc -c < "$f" | tr -d ' ')" "$f"
  cat -- "$f"
done
"""


def scan_image(apptainer: str, image: Path, extra: tuple[str, ...]) -> list[Found]:
    """Find the files in the image: the same rules as scan_dir, run inside the container."""
    # the globs are expanded by the container's sh: unquoted on purpose
    script = _SCAN_SCRIPT.replace("@GLOBS@", " ".join(SCAN_GLOBS))
    argv = [
        apptainer,
        "exec",
        "--contain",
        "--cleanenv",
        "--no-home",
        str(image),
        "sh",
        "-c",
        script,
        "overlay-scan",
        *KNOWN_PATHS,
        *SCAN_DIRS,
        *extra,
    ]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=EXEC_TIMEOUT, check=False)
    except FileNotFoundError:
        raise HelperError(
            f"apptainer not found ({apptainer}): install it, pass --apptainer BIN, "
            "or scan a directory with --from-dir"
        ) from None
    except subprocess.TimeoutExpired:
        raise HelperError(f"scanning {image} took over {EXEC_TIMEOUT:.0f}s: {shlex.join(argv[:6])}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise HelperError(f"scanning {image} failed (exit {proc.returncode}): {err[-1] if err else ''}")
    return parse_stream(proc.stdout)


def parse_stream(buf: bytes) -> list[Found]:
    found: dict[str, Found] = {}
    pos = 0
    while pos < len(buf):
        nul = buf.index(b"\0", pos)
        mode_s, size_s, path_b = buf[pos:nul].split(b" ", 2)
        size = int(size_s)
        data = buf[nul + 1 : nul + 1 + size]
        if len(data) != size:
            raise HelperError(f"truncated scan output for {path_b.decode(errors='replace')}")
        path = os.path.normpath(path_b.decode("utf-8", "surrogateescape"))
        found.setdefault(path, Found(path, int(mode_s, 8) & 0o7777, data))
        pos = nul + 1 + size
    return list(found.values())


# ------------------------------------------------------------------------------- writing
def _write_if_changed(path: Path, data: bytes, mode: int) -> None:
    try:
        st = path.stat()
        if stat.S_IMODE(st.st_mode) == mode and path.read_bytes() == data:
            return
    except OSError:
        pass
    write_atomic(path, data, mode)


def select(found: list[Found]) -> list[Found]:
    """The files to overlay, in a stable order; the others are named on stderr."""
    keep: list[Found] = []
    for item in sorted(found, key=lambda f: f.path):
        reason = _skip_reason(item.path, item.data)
        if reason is None and not _bindable(item.path):
            reason = "its path cannot be bound (contains ':', ',', TAB or newline)"
        if reason:
            click.echo(f"overlay: not rewriting {item.path}: {reason}", err=True)
        else:
            keep.append(item)
    return keep


def write_overlays(found: list[Found], url: str, out: Path) -> tuple[Path, list[tuple[Path, str]]]:
    out = out.resolve()
    manifest = out / MANIFEST
    entries: list[tuple[Path, str]] = []
    for item in found:
        host = out / item.path.lstrip("/")
        data = rewrite(item.data, url)
        if item.path == VALIDATE_SCRIPT:
            data = add_token(data)
            if b"curl" not in data:
                click.echo(f"overlay: {item.path} does not call curl: the token cannot be added", err=True)
        # no setuid/setgid copies; the owner must be able to read it inside the container
        _write_if_changed(host, data, (item.mode & 0o777) | 0o400)
        entries.append((host, item.path))
    # forget files a previous run wrote that are no longer needed
    if manifest.is_file():
        keep = {str(h) for h, _ in entries}
        for line in manifest.read_text().splitlines():
            old = line.split("\t", 1)[0]
            if old and old not in keep and Path(old).is_relative_to(out):
                Path(old).unlink(missing_ok=True)
    text = "".join(f"{h}\t{c}\n" for h, c in entries)
    _write_if_changed(manifest, text.encode(), 0o644)
    return manifest, entries


def make_overlays(
    image: Path | None,
    from_dir: Path | None,
    url: str,
    out: Path,
    apptainer: str | None = None,
    paths: tuple[str, ...] = (),
    allow_none: bool = False,
) -> tuple[Path, list[tuple[Path, str]]]:
    """Scan the agent image (or an unpacked DIR) for localhost:5000 files, write them rewritten to
    URL under OUT and say which on stderr. Returns the manifest path and its entries."""
    if from_dir is not None:
        found = scan_dir(from_dir, paths)
        source = str(from_dir)
    elif image is not None:
        if not image.is_file():
            raise HelperError(f"agent image {image} not found: build it with `make sif` or fix AGENT_SIF")
        binary = apptainer or os.environ.get("APPTAINER") or shutil.which("apptainer") or "apptainer"
        found = scan_image(binary, image, paths)
        source = str(image)
    else:
        raise HelperError("nothing to scan: pass --image SIF (or --from-dir DIR)")
    found = select(found)
    if not found and not allow_none:
        raise HelperError(
            f"no file in {source} mentions localhost:5000: an MLE-bench agent image normally "
            "does (instructions.txt, validate_submission.sh); check the image, or pass "
            "--allow-none if it really needs no rewrite"
        )
    manifest, entries = write_overlays(found, url, out)
    names = ", ".join(c for _, c in entries) or "none"
    click.echo(f"overlay: {len(entries)} file(s) rewritten to {url}: {names}", err=True)
    return manifest, entries


@click.command("overlay")
@click.option(
    "--image",
    "image",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Agent SIF to scan (through apptainer exec).",
)
@click.option(
    "--from-dir",
    "from_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Scan this host directory, laid out like the image's root, instead.",
)
@click.option("--url", required=True, help="The real grading server URL (http://host:port).")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (mirrored tree + overlays.tsv).",
)
@click.option(
    "--apptainer",
    "apptainer",
    default=None,
    help="apptainer binary (default: $APPTAINER, else apptainer on PATH).",
)
@click.option(
    "--paths", "paths", multiple=True, help="Extra container path (file or directory) to scan; repeatable."
)
@click.option("--allow-none", is_flag=True, help="Do not fail when no file mentions localhost:5000.")
def overlay_cmd(
    image: Path | None,
    from_dir: Path | None,
    url: str,
    out: Path,
    apptainer: str | None,
    paths: tuple[str, ...],
    allow_none: bool,
) -> None:
    """Rewrite the agent image's localhost:5000 files to URL; print the manifest path."""
    try:
        url = normalize_url(url)
    except ValueError as exc:
        raise HelperError(str(exc)) from None
    for p in paths:
        if not p.startswith("/"):
            raise HelperError(f"--paths {p}: give an absolute path inside the container")
    manifest, _ = make_overlays(image, from_dir, url, out, apptainer, paths, allow_none)
    click.echo(str(manifest))
