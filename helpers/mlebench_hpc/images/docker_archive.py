"""Write a `docker save` archive (manifest.json + image config + one layer) from a root
filesystem directory, without Docker.

Why: the Docker build path converts `docker save` output with
`apptainer build x.sif docker-archive://x.tar`. Machines without Docker (CI, most clusters)
can still exercise that exact conversion with an archive made here.

The layout is Docker's legacy `docker save` format, which `containers/image` (used by
Apptainer) reads: `manifest.json`, `<config sha256>.json`, `<layer id>/layer.tar`,
`<layer id>/VERSION`, `<layer id>/json` and `repositories`. The layer is an uncompressed tar
whose sha256 is the image's diff_id. Device nodes are skipped: unprivileged and
`--fakeroot` builds cannot create them, and Apptainer supplies /dev at run time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import click

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ImageSpec:
    """What goes into the image config besides the layer."""

    tag: str = "local/rootfs:latest"
    env: tuple[str, ...] = (f"PATH={DEFAULT_PATH}",)
    cmd: tuple[str, ...] = ("/bin/sh",)
    workdir: str = "/"
    labels: dict[str, str] = field(default_factory=dict)
    created: str = ""

    def repo_and_version(self) -> tuple[str, str]:
        name, sep, version = self.tag.rpartition(":")
        if not sep or "/" in version:  # "host:5000/img" has a port, not a tag
            return self.tag, "latest"
        return name, version


@dataclass(frozen=True)
class ArchiveInfo:
    path: Path
    diff_id: str  # "sha256:<hex>" of the uncompressed layer tar
    config_digest: str
    layer_bytes: int
    skipped_devices: tuple[str, ...]


class _HashingWriter:
    """Write-only file object that hashes what passes through (the layer's diff_id) while it
    streams to disk, so a large rootfs never sits in memory."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, b: bytes) -> int:
        self.sha.update(b)
        self.size += len(b)
        return self._fh.write(b)

    def tell(self) -> int:
        return self.size


def _layer_filter(own_uid: int, own_gid: int, skipped: list[str]):
    """Skip device nodes; files owned by the (non-root) builder become root's, as in a docker build."""

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if info.ischr() or info.isblk():
            skipped.append(info.name)
            return None
        if own_uid != 0 and info.uid == own_uid:
            info.uid, info.uname = 0, "root"
        if own_gid != 0 and info.gid == own_gid:
            info.gid, info.gname = 0, "root"
        return info

    return keep


def _write_layer(rootfs: Path, dest: Path) -> tuple[str, int, list[str]]:
    skipped: list[str] = []
    keep = _layer_filter(os.getuid(), os.getgid(), skipped)
    with dest.open("wb") as raw:
        hw = _HashingWriter(raw)
        with tarfile.open(fileobj=hw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            # Sorted walk: the same tree gives the same layer bytes (apart from mtimes in it).
            for dirpath, dirnames, filenames in os.walk(rootfs):
                dirnames.sort()
                base = Path(dirpath)
                rel = base.relative_to(rootfs)
                if rel != Path("."):
                    tar.add(base, arcname=str(rel), recursive=False, filter=keep)
                for name in sorted(filenames) + [d for d in dirnames if (base / d).is_symlink()]:
                    tar.add(base / name, arcname=str(rel / name), recursive=False, filter=keep)
                # os.walk does not descend into symlinked dirs (followlinks=False): they were added above.
                dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]
        return hw.sha.hexdigest(), hw.size, skipped


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    tar.addfile(info, io.BytesIO(data))


def image_config(spec: ImageSpec, diff_id_hex: str) -> dict:
    created = spec.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "Env": list(spec.env),
            "Cmd": list(spec.cmd),
            "WorkingDir": spec.workdir,
            "Labels": dict(spec.labels),
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id_hex}"]},
        "history": [{"created": created, "created_by": "mlebench-hpc docker_archive"}],
    }


def write_docker_archive(rootfs: Path, out: Path, spec: ImageSpec | None = None) -> ArchiveInfo:
    """Write `out` (a `docker save` tar) holding `rootfs` as its single layer."""
    spec = spec or ImageSpec()
    rootfs = Path(rootfs)
    if not rootfs.is_dir():
        raise click.ClickException(f"root filesystem {rootfs} is not a directory: pass a rootfs tree")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    with tempfile.TemporaryDirectory(prefix=".docker-archive-", dir=out.parent) as tmp:
        layer_path = Path(tmp) / "layer.tar"
        diff_hex, layer_size, skipped = _write_layer(rootfs, layer_path)
        config = json.dumps(image_config(spec, diff_hex), sort_keys=True).encode()
        config_hex = hashlib.sha256(config).hexdigest()
        layer_id = diff_hex  # any 64-hex id works; the diff_id keeps it stable
        repo, version = spec.repo_and_version()
        manifest = [
            {"Config": f"{config_hex}.json", "RepoTags": [spec.tag], "Layers": [f"{layer_id}/layer.tar"]}
        ]
        layer_json = {"id": layer_id, "created": image_config(spec, diff_hex)["created"], "os": "linux"}
        partial = Path(tmp) / "archive.tar"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            d = tarfile.TarInfo(layer_id)
            d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, now
            tar.addfile(d)
            linfo = tarfile.TarInfo(f"{layer_id}/layer.tar")
            linfo.size, linfo.mtime, linfo.mode = layer_size, now, 0o644
            with layer_path.open("rb") as fh:
                tar.addfile(linfo, fh)
            _add_bytes(tar, f"{layer_id}/VERSION", b"1.0", now)
            _add_bytes(tar, f"{layer_id}/json", json.dumps(layer_json).encode(), now)
            _add_bytes(tar, f"{config_hex}.json", config, now)
            _add_bytes(tar, "manifest.json", json.dumps(manifest).encode(), now)
            _add_bytes(tar, "repositories", json.dumps({repo: {version: layer_id}}).encode(), now)
        shutil.move(str(partial), out)  # complete archives only: never a half-written tar at `out`
    return ArchiveInfo(out, f"sha256:{diff_hex}", f"sha256:{config_hex}", layer_size, tuple(skipped))


@click.command("docker-archive")
@click.argument("rootfs", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tag", default="local/rootfs:latest", show_default=True, help="Name recorded in RepoTags.")
@click.option("--env", "env", multiple=True, help="KEY=value for the image config (repeatable).")
@click.option("--cmd", default="/bin/sh", show_default=True, help="Default command (split on spaces).")
def docker_archive_cmd(rootfs: Path, out: Path, tag: str, env: tuple[str, ...], cmd: str) -> None:
    """Write a `docker save` archive of ROOTFS to OUT, for `apptainer build x.sif docker-archive://OUT`."""
    for item in env:
        if "=" not in item:
            raise click.ClickException(f"--env {item!r} is not KEY=value")
    envs = tuple(env) if any(e.startswith("PATH=") for e in env) else (f"PATH={DEFAULT_PATH}", *env)
    info = write_docker_archive(rootfs, out, ImageSpec(tag=tag, env=envs, cmd=tuple(cmd.split())))
    if info.skipped_devices:
        click.echo(f"skipped {len(info.skipped_devices)} device node(s)", err=True)
    click.echo(f"{info.path} {info.path.stat().st_size} {info.diff_id}")


if __name__ == "__main__":
    sys.exit(docker_archive_cmd())
