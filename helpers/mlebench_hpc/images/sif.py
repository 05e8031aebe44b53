"""Reading an agent image without running it.

An agent image comes from the agent's author and is as hostile as the agent: nothing of it may run
outside the agent's own isolation. So the host never runs an agent image to look inside
(the overlay scan, the per-run copy of /home/agent): it reads the SIF file itself. A SIF holds a
squashfs system partition (found from the SIF header); the squashfs is read with PySquashfsImage,
lazily (one directory at a time, never the whole tree), with every decompressed block bounded by
the size the format allows, no symbolic link followed and every name checked before it becomes a
path. Everything read is data from the image, never a host file.
"""

from __future__ import annotations

import io
import lzma
import stat
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from PySquashfsImage import SquashFsImage
from PySquashfsImage.const import SQUASHFS_METADATA_SIZE, Compression, Type
from PySquashfsImage.macro import SQUASHFS_INODE_BLK, SQUASHFS_INODE_OFFSET

from mlebench_hpc.errors import HelperError

SIF_MAGIC = b"SIF_MAGIC\x00"
# SIF global header (Go's encoding/binary, little endian, no padding): launch[32] magic[10]
# version[3] arch[3] uuid[16], then created, modified, descr free, descr total, descr offset,
# descr size, data offset, data size (int64 each).
_HEADER = struct.Struct("<32s10s3s3s16s8q")
# One descriptor: type int32, used bool, id, group, link (uint32), offset, size, size with
# padding, created, modified, uid, gid (int64), name[128], extra[384].
_DESCR = struct.Struct("<i?IIIqqqqqqq128s384s")
_DATA_PARTITION = 0x4004
_FS_SQUASH = 1
_PART_PRIMSYS = 2
_MAX_DESCRIPTORS = 4096

MAX_DEPTH = 64
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_LINK_BYTES = 4096

_KINDS = {
    Type.DIR: "dir",
    Type.LDIR: "dir",
    Type.FILE: "file",
    Type.LREG: "file",
    Type.SYMLINK: "symlink",
    Type.LSYMLINK: "symlink",
}


def _kind(dtype: int) -> str:
    try:
        return _KINDS.get(Type(dtype), "other")
    except ValueError:
        return "other"


class ImageError(HelperError):
    """An agent image that cannot be read as a SIF, or that breaks a bound: one line."""


@dataclass(frozen=True)
class Entry:
    """One file of the image. `path` is absolute and normalized, every component checked."""

    path: str
    kind: str  # "file", "dir", "symlink" or "other" (device, FIFO, socket)
    mode: int  # permission bits
    size: int  # bytes for a file
    target: str | None = None  # a symlink's target, as text (never followed)


def check_name(raw: bytes) -> str | None:
    """A directory entry's name as text, or None when it could not be a single, printable path
    component (empty, `.`, `..`, a slash, NUL or another control character, not UTF-8, too long)."""
    if not raw or len(raw) > MAX_NAME_BYTES or raw in (b".", b".."):
        return None
    if any(b < 0x20 or b == 0x7F or b == 0x2F for b in raw):
        return None
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    # C1 controls and bidi overrides/isolates: text that would lie on a terminal
    if any("\x80" <= c <= "\x9f" or "\u202a" <= c <= "\u202e" or "\u2066" <= c <= "\u2069" for c in name):
        return None
    return name


def check_path(path: str) -> str:
    """PATH if it is absolute and normalized with every component a valid name; else ImageError."""
    if not path.startswith("/") or len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise ImageError(f"{path!r} is not an absolute path inside the image")
    if path == "/":
        return path
    parts = path[1:].split("/")
    if len(parts) > MAX_DEPTH or any(check_name(p.encode("utf-8", "surrogateescape")) != p for p in parts):
        raise ImageError(f"{path!r} is not a plain absolute path (empty, '.', '..' or control characters)")
    return path


def system_partition(fh: BinaryIO, where: str) -> tuple[int, int]:
    """(offset, size) of the SIF's squashfs system partition."""
    head = fh.read(_HEADER.size)
    if len(head) < _HEADER.size or head[32:42] != SIF_MAGIC:
        raise ImageError(f"{where} is not a SIF image (no SIF header): build it with `make sif`")
    fields = _HEADER.unpack(head)
    total, offset, size = fields[8], fields[9], fields[10]
    if not 0 < total <= _MAX_DESCRIPTORS or size != total * _DESCR.size or offset < _HEADER.size:
        raise ImageError(f"{where}: its SIF descriptor table is damaged: rebuild the image")
    fh.seek(offset)
    table = fh.read(size)
    if len(table) != size:
        raise ImageError(f"{where}: truncated SIF descriptor table: rebuild or copy the image again")
    for i in range(total):
        dtype, used, _id, _group, _link, off, length, *_rest, extra = _DESCR.unpack_from(
            table, i * _DESCR.size
        )
        if not used or dtype != _DATA_PARTITION:
            continue
        fstype, parttype = struct.unpack_from("<ii", extra)
        if parttype == _PART_PRIMSYS:
            if fstype != _FS_SQUASH:
                raise ImageError(
                    f"{where}: its system partition is not squashfs (type {fstype}; an encrypted or "
                    "ext3 image?): build a plain SIF with `make sif`"
                )
            if off <= 0 or length <= 0:
                raise ImageError(f"{where}: its system partition is empty: rebuild the image")
            return off, length
    raise ImageError(f"{where}: no system partition in the SIF: rebuild the image with `make sif`")


class _Bounded:
    """A squashfs decompressor whose output cannot exceed what the format allows for the block
    (an image's block could otherwise inflate a thousandfold in memory)."""

    def __init__(self, compression: int) -> None:
        self.compression = compression
        if compression == Compression.ZSTD:
            try:
                import zstandard
            except ImportError:
                raise ImageError(
                    "the agent image is zstd-compressed and the Python package zstandard is missing: "
                    "pip install zstandard (or rebuild the image with the default gzip)"
                ) from None
            self._zstd = zstandard.ZstdDecompressor()
        elif compression not in (Compression.NO, Compression.ZLIB, Compression.XZ, Compression.LZMA):
            name = Compression(compression).name if compression in set(Compression) else str(compression)
            raise ImageError(
                f"the agent image's squashfs uses compression {name}, which is not read here: rebuild "
                "it with apptainer's default (gzip), xz or zstd"
            )

    def uncompress(self, src: bytes, size: int, outsize: int) -> bytes:
        limit = max(int(outsize), SQUASHFS_METADATA_SIZE)
        try:
            if self.compression == Compression.ZLIB:
                d = zlib.decompressobj()
                out = d.decompress(src, limit + 1)
            elif self.compression in (Compression.XZ, Compression.LZMA):
                fmt = lzma.FORMAT_XZ if self.compression == Compression.XZ else lzma.FORMAT_ALONE
                out = lzma.LZMADecompressor(format=fmt).decompress(src, limit + 1)
            elif self.compression == Compression.ZSTD:
                out = self._zstd.stream_reader(io.BytesIO(src)).read(limit + 1)
            else:
                out = src
        except (zlib.error, lzma.LZMAError, ValueError, OSError) as exc:
            raise ImageError(f"a damaged block in the agent image ({exc}): rebuild the image") from None
        if len(out) > limit:
            raise ImageError("a block of the agent image inflates beyond the squashfs block size: refused")
        return out


class _LazySquashFs(SquashFsImage):
    """PySquashfsImage without the eager scan of the whole tree at open, and with bounded blocks."""

    def _get_compressor(self, compression_id: int) -> _Bounded:  # type: ignore[override]
        return _Bounded(compression_id)

    def _initialize(self) -> None:
        self._fd.seek(self._offset)
        self._read_super()
        self._read_uids_guids()
        self._read_fragment_table()
        self._read_xattrs_from_disk()
        self._root_ref = (
            SQUASHFS_INODE_BLK(self._sblk.root_inode),
            SQUASHFS_INODE_OFFSET(self._sblk.root_inode),
        )
        self._root = None


class _Window(io.RawIOBase):
    """The partition's bytes of the SIF file as a file of their own (reads never leave it)."""

    def __init__(self, fh: BinaryIO, offset: int, size: int) -> None:
        self._fh, self._base, self._size, self._pos = fh, offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        left = max(0, self._size - self._pos)
        n = left if n is None or n < 0 else min(n, left)
        self._fh.seek(self._base + self._pos)
        data = self._fh.read(n)
        self._pos += len(data)
        return data

    def close(self) -> None:
        self._fh.close()
        super().close()


class SifImage:
    """An agent SIF opened for reading: look up, list, walk and read its files, never running it.

    `refused` collects one line per name that was skipped because it could not be a plain path
    component (shown by the caller; the image's names are not trusted to be printable)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.refused: list[str] = []
        try:
            fh = path.open("rb")
        except OSError as exc:
            raise ImageError(f"cannot read the agent image {path} ({exc.strerror}): fix AGENT_SIF") from None
        try:
            offset, size = system_partition(fh, str(path))
            self._fs = _LazySquashFs(_Window(fh, offset, size), 0)
        except ImageError:
            fh.close()
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a damaged image makes the parser raise
            fh.close()
            raise ImageError(
                f"{path}: not a readable squashfs image ({type(exc).__name__}): rebuild it"
            ) from None

    def __enter__(self) -> SifImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._fs.close()
        finally:
            # the library caches decompressed blocks per method, across images
            self._fs._read_data_block.cache_clear()

    # ------------------------------------------------------------------ nodes
    def _guard(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except ImageError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged or hostile image: one line, never a traceback
            raise ImageError(
                f"{self.path}: cannot read {what} ({type(exc).__name__}): the image is damaged"
            ) from None

    def _children(self, ref: tuple[int, int], where: str) -> list[tuple[str, int, tuple[int, int]]]:
        """(name, type, inode ref) of the directory at REF; names that are not plain are refused."""
        directory = self._guard(where, self._fs._opendir, *ref)
        out = []
        for e in directory.entries:
            name = check_name(e["name"])
            if name is None:
                shown = ascii(bytes(e["name"][:80]).decode("latin-1"))[1:-1]  # every byte visible
                note = f"{where.rstrip('/')}/{shown}: not a plain file name, skipped"
                if note not in self.refused:
                    self.refused.append(note)
                continue
            out.append((name, int(e["type"]), (int(e["start_block"]), int(e["offset"]))))
        return out

    def _entry(self, path: str, dtype: int, ref: tuple[int, int]) -> Entry:
        inode = self._guard(path, self._fs._read_inode, *ref)
        kind = _kind(dtype)
        mode = stat.S_IMODE(int(inode.mode))
        if kind == "file":
            return Entry(path, kind, mode, int(inode.data))
        if kind == "symlink":
            raw = getattr(inode, "_symlink", b"")[: MAX_LINK_BYTES + 1]
            try:
                target = raw.decode("utf-8") if len(raw) <= MAX_LINK_BYTES else None
            except UnicodeDecodeError:
                target = None
            return Entry(path, kind, mode, 0, target)
        return Entry(path, kind, mode, 0)

    def _resolve(self, path: str) -> tuple[Entry, tuple[int, int]] | None:
        """The entry at PATH and its inode ref, following no link; None when absent."""
        path = check_path(path)
        ref = self._fs._root_ref
        if path == "/":
            return Entry("/", "dir", 0o755, 0), ref
        cur, dtype = "", int(Type.DIR)
        for part in path[1:].split("/"):
            if _kind(dtype) != "dir":
                return None  # a component that is a file or a link: not followed
            found = [c for c in self._children(ref, cur or "/") if c[0] == part]
            if not found:
                return None
            _, dtype, ref = found[0]
            cur = f"{cur}/{part}"
        return self._entry(cur, dtype, ref), ref

    # ------------------------------------------------------------------ public
    def lookup(self, path: str) -> Entry | None:
        found = self._resolve(path)
        return found[0] if found else None

    def listdir(self, path: str) -> list[Entry]:
        found = self._resolve(path)
        if found is None or found[0].kind != "dir":
            return []
        base = "" if path == "/" else path
        return [self._entry(f"{base}/{n}", t, r) for n, t, r in self._children(found[1], path)]

    def walk(self, top: str, max_entries: int) -> Iterator[Entry]:
        """Every entry below TOP (TOP included), depth first, at most MAX_ENTRIES of them (ImageError
        beyond), never through a link."""
        found = self._resolve(top)
        if found is None:
            return
        count = 0
        stack = [(found[0], found[1], 0)]
        while stack:
            entry, ref, depth = stack.pop()
            count += 1
            if count > max_entries:
                raise ImageError(f"{self.path}: more than {max_entries} files below {top}: refused")
            yield entry
            if entry.kind == "dir":
                if depth >= MAX_DEPTH:
                    raise ImageError(f"{self.path}: {top} is nested deeper than {MAX_DEPTH} levels: refused")
                base = "" if entry.path == "/" else entry.path
                children = self._children(ref, entry.path)
                for name, dtype, cref in sorted(children, reverse=True):
                    stack.append((self._entry(f"{base}/{name}", dtype, cref), cref, depth + 1))

    def iter_bytes(self, path: str, max_bytes: int) -> Iterator[bytes]:
        """The bytes of the regular file at PATH, in blocks; ImageError when it is larger than
        MAX_BYTES or not a regular file."""
        found = self._resolve(path)
        if found is None or found[0].kind != "file":
            raise ImageError(f"{path} is not a regular file in {self.path}")
        entry, ref = found
        if entry.size > max_bytes:
            raise ImageError(f"{path} in {self.path} is {entry.size} bytes, over the {max_bytes}-byte bound")
        inode = self._guard(path, self._fs._read_inode, *ref)
        got = 0
        blocks = self._guard(path, lambda: iter(self._fs.iter_file(inode)))
        while True:
            block = self._guard(path, next, blocks, None)
            if block is None:
                break
            got += len(block)
            if got > entry.size:
                raise ImageError(f"{path} in {self.path} holds more bytes than its size says: refused")
            yield block
        if got != entry.size:
            raise ImageError(
                f"{path} in {self.path}: {got} of {entry.size} bytes readable: the image is damaged"
            )

    def read(self, path: str, max_bytes: int) -> bytes:
        return b"".join(self.iter_bytes(path, max_bytes))
