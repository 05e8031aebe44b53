"""`mlebench-hpc overlay`: rewritten copies of the agent image's files that hard-code the
upstream grading server (`http://localhost:5000`), to bind read-only over the originals.

Files are found in the image by reading the SIF file itself (images/sif.py: nothing of the image
runs, on the host or anywhere else), or, with --from-dir, in a host directory laid out like the
image's root: the known upstream paths plus /home/*.txt, /home/*.sh and everything below
/home/agent. What the image holds is data: every path is checked (absolute, normalized, printable,
below /home or a --paths root), the scan is bounded in files and bytes, and nothing is written
outside --out. Contents are handled as bytes (NUL bytes and non-UTF-8 survive), mode bits are kept
(minus setuid/setgid), and the output is a mirrored tree under --out plus `overlays.tsv` (host_file
TAB container_path), which the bash library turns into `--bind host:container:ro`. The originals
are always the source, so a re-run writes identical files; files are only replaced when their
content or mode changes.

/home/validate_submission.sh also learns to send the run's grading token: upstream's script calls
curl without it and the server answers 401 (see `add_token`).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import click

from mlebench_hpc.atomic import write_atomic
from mlebench_hpc.errors import HelperError
from mlebench_hpc.images.sif import Entry, ImageError, SifImage, check_path
from mlebench_hpc.net import normalize_url
from mlebench_hpc.server.tokens import TOKEN_ENV

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
# Bounds of a scan: the files that mention the address are instructions and scripts, small ones.
MAX_SCAN_FILES = 50_000
MAX_SCAN_BYTES = 512 * 1024 * 1024
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_FOUND = 200
MAX_NOTES = 20
# Container paths an overlay may sit at: below /home (where upstream's files are) or a --paths root.
ALLOWED_ROOTS: tuple[str, ...] = ("/home",)
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


def scan_image(image: Path, extra: tuple[str, ...]) -> list[Found]:
    """Find the files in the agent SIF by the same rules as scan_dir, read from the image file itself
    (images/sif.py), never by running anything of the image; bounded in files and bytes."""
    found: dict[str, Found] = {}
    notes: list[str] = []
    with SifImage(image) as img:
        candidates: list[Entry] = []
        for path in KNOWN_PATHS:
            entry = img.lookup(path)
            if entry is not None:
                candidates.append(entry)
        for entry in img.listdir("/home"):
            if entry.kind == "file" and any(fnmatch.fnmatchcase(entry.path, g) for g in SCAN_GLOBS):
                candidates.append(entry)
        for top in (*SCAN_DIRS, *extra):
            try:
                candidates += list(img.walk(top, MAX_SCAN_FILES))
            except ImageError as exc:
                notes.append(f"{exc}: the files beyond are not rewritten")
        read_bytes = 0
        for entry in candidates:
            if entry.kind != "file" or entry.path in found:
                continue
            if entry.size > MAX_FILE_BYTES:
                continue  # instructions and scripts are small; a big file is not one of them
            if read_bytes + entry.size > MAX_SCAN_BYTES:
                notes.append(
                    f"stopped after {read_bytes} bytes ({MAX_SCAN_BYTES} at most): the rest not scanned"
                )
                break
            data = img.read(entry.path, MAX_FILE_BYTES)
            read_bytes += len(data)
            if _mentions(data):
                found[entry.path] = Found(entry.path, entry.mode, data)
        notes += img.refused
    for note in notes[:MAX_NOTES]:
        click.echo(f"overlay: {note}", err=True)
    if len(notes) > MAX_NOTES:
        click.echo(f"overlay: ... and {len(notes) - MAX_NOTES} more notes like these", err=True)
    return list(found.values())


def container_path(path: str, roots: tuple[str, ...]) -> str:
    """PATH if it is a plain absolute path (images.sif.check_path) at or below one of ROOTS; else
    HelperError. What an image holds decides where an overlay is written and bound: never trusted."""
    check_path(path)
    if not any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots):
        raise HelperError(f"{path!r} is not below {', '.join(roots)}: refused")
    return path


# ------------------------------------------------------------------------------- writing
def _write_if_changed(path: Path, data: bytes, mode: int) -> None:
    try:
        st = path.stat()
        if stat.S_IMODE(st.st_mode) == mode and path.read_bytes() == data:
            return
    except OSError:
        pass
    write_atomic(path, data, mode)


def select(found: list[Found], roots: tuple[str, ...] = ALLOWED_ROOTS) -> list[Found]:
    """The files to overlay, in a stable order; the others are named on stderr."""
    keep: list[Found] = []
    if len(found) > MAX_FOUND:
        raise HelperError(
            f"{len(found)} files of the image mention localhost:5000, more than {MAX_FOUND}: refused "
            "(an MLE-bench agent has a handful)"
        )
    for item in sorted(found, key=lambda f: f.path):
        try:
            container_path(item.path, roots)
        except HelperError as exc:
            click.echo(f"overlay: not rewriting {ascii(item.path)}: {exc}", err=True)
            continue
        reason = _skip_reason(item.path, item.data)
        if reason is None and not _bindable(item.path):
            reason = "its path cannot be bound (contains ':', ',', TAB or newline)"
        if reason:
            click.echo(f"overlay: not rewriting {item.path}: {reason}", err=True)
        else:
            keep.append(item)
    return keep


def _confined(out: Path, ctr: str) -> Path:
    """OUT/<ctr without its leading />, its directories made below OUT; no component of it may be a
    link or anything but a directory, so no write can land outside OUT."""
    parts = check_path(ctr)[1:].split("/")
    cur = out
    for part in parts[:-1]:
        cur = cur / part
        try:
            st = cur.lstat()
        except FileNotFoundError:
            cur.mkdir(mode=0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise HelperError(f"{cur} is not a plain directory: refusing to write an overlay through it")
    target = cur / parts[-1]
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise HelperError(f"{target} is not a plain file: refusing to write an overlay over it")
    return target


def write_overlays(found: list[Found], url: str, out: Path) -> tuple[Path, list[tuple[Path, str]]]:
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    manifest = out / MANIFEST
    entries: list[tuple[Path, str]] = []
    for item in found:
        host = _confined(out, item.path)
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
            if old and old not in keep and Path(old).is_relative_to(out) and not Path(old).is_symlink():
                Path(old).unlink(missing_ok=True)
    text = "".join(f"{h}\t{c}\n" for h, c in entries)
    _write_if_changed(manifest, text.encode(), 0o644)
    return manifest, entries


def make_overlays(
    image: Path | None,
    from_dir: Path | None,
    url: str,
    out: Path,
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
        found = scan_image(image, paths)
        source = str(image)
    else:
        raise HelperError("nothing to scan: pass --image SIF (or --from-dir DIR)")
    found = select(found, (*ALLOWED_ROOTS, *paths))
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
    help="Agent SIF to scan (read as a file: nothing of it runs).",
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
    "--paths", "paths", multiple=True, help="Extra container path (file or directory) to scan; repeatable."
)
@click.option("--allow-none", is_flag=True, help="Do not fail when no file mentions localhost:5000.")
def overlay_cmd(
    image: Path | None,
    from_dir: Path | None,
    url: str,
    out: Path,
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
    manifest, _ = make_overlays(image, from_dir, url, out, paths, allow_none)
    click.echo(str(manifest))
