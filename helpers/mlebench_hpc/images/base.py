"""The base image of the image builds (`BASE_IMAGE`): what kind of reference it is, and whether
its registry has it.

A base is one of: a local path (a base SIF or a root filesystem directory someone gave you,
used by `apptainer build` as `Bootstrap: localimage`), a registry reference with an explicit
registry host (`127.0.0.1:5000/mlebench-hpc/base:bookworm`), or a short name
(`debian:bookworm-slim`) that each builder resolves with its own default registry. Registries
on loopback addresses are spoken to over plain http, as Docker does. Only references with an
explicit host are probed: the project names no registry host itself.

`mlebench-hpc base-image check REF` prints one line and exits 0 when the base can be had
(present, or not checkable), 1 when it cannot (missing, unreachable); `build_images.sh` and
`doctor` use the same probe."""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import requests

PROBE_TIMEOUT = 10.0
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
THREE_WAYS = (
    "take one of three ways: (1) a registry you reach: BASE_IMAGE=<registry>/<image>:<tag> in the config "
    "(your site's; `make cluster-up` prints one); (2) a base SIF or root filesystem someone gives you: "
    "BASE_IMAGE=/path/to/base.sif; (3) Docker on another machine: `make sif BUILDER=docker` there and "
    "copy the SIFs into IMAGE_DIR (see README, Images)"
)


@dataclass(frozen=True)
class Reference:
    """A parsed image reference: host is empty for short names."""

    host: str
    repository: str
    tag: str  # a tag, or a digest (sha256:...)

    @property
    def loopback(self) -> bool:
        return is_loopback_host(self.host)

    @property
    def base_url(self) -> str:
        return f"{'http' if self.loopback else 'https'}://{self.host}"


def is_path(ref: str) -> bool:
    """A local base (SIF file or rootfs directory) rather than a registry reference."""
    return ref.startswith(("/", "./", "../", "~"))


def is_loopback_host(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]", 1)[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


def parse_reference(ref: str) -> Reference:
    """Split REF as Docker does: the first component is a registry host when it has a dot or a
    colon or is localhost. Raises ValueError on something that is no image reference."""
    ref = ref.strip()
    if ref.startswith("docker://"):
        ref = ref[len("docker://") :]
    if not ref or is_path(ref) or any(c.isspace() for c in ref):
        raise ValueError(f"not an image reference: {ref!r}")
    name, digest = (ref.split("@", 1) + [""])[:2]
    head, _, rest = name.partition("/")
    host = ""
    if rest and ("." in head or ":" in head or head == "localhost" or head.startswith("[")):
        host, name = head, rest
    tag = digest
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag_part = name.rsplit(":", 1)
        tag = tag or tag_part
    tag = tag or "latest"
    if not all(_COMPONENT.match(part) for part in name.split("/")):
        raise ValueError(f"not an image reference: {ref!r} (repository {name!r})")
    if not host and "/" not in name:
        name = f"library/{name}"  # Docker's rule for official images on its default registry
    return Reference(host, name, tag)


@dataclass(frozen=True)
class Probe:
    ok: bool  # the base can be had (or cannot be checked from here)
    status: str  # present | missing | unreachable | unchecked | local | error
    detail: str


def _bearer_token(challenge: str, repository: str) -> str | None:
    """Anonymous pull token for a `WWW-Authenticate: Bearer realm=...,service=...` challenge."""
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    realm = params.get("realm")
    if not challenge.lower().startswith("bearer") or not realm:
        return None
    query = {"scope": f"repository:{repository}:pull"}
    if "service" in params:
        query["service"] = params["service"]
    try:
        resp = requests.get(realm, params=query, timeout=PROBE_TIMEOUT)
        if resp.status_code != 200:
            return None
        body = resp.json()
    except (requests.RequestException, ValueError):
        return None
    token = body.get("token") or body.get("access_token")
    return token if isinstance(token, str) else None


def probe(ref: str) -> Probe:
    """Can a builder get REF? Paths are checked on disk, explicit registries over HTTP."""
    if is_path(ref):
        path = Path(ref).expanduser()
        if path.is_file() or (path.is_dir() and (path / "bin").exists()):
            return Probe(True, "local", "a local base on disk")
        return Probe(False, "missing", "no such SIF file or rootfs directory")
    try:
        parsed = parse_reference(ref)
    except ValueError as exc:
        return Probe(False, "error", str(exc))
    if not parsed.host:
        return Probe(True, "unchecked", "from the builder's default registry (not checked here)")
    url = f"{parsed.base_url}/v2/{parsed.repository}/manifests/{parsed.tag}"
    headers = {"Accept": MANIFEST_TYPES}
    try:
        resp = requests.head(url, headers=headers, timeout=PROBE_TIMEOUT, allow_redirects=True)
        if resp.status_code == 401:
            token = _bearer_token(resp.headers.get("WWW-Authenticate", ""), parsed.repository)
            if token:
                headers["Authorization"] = f"Bearer {token}"
                resp = requests.head(url, headers=headers, timeout=PROBE_TIMEOUT, allow_redirects=True)
    except requests.Timeout:
        return Probe(False, "unreachable", f"registry {parsed.host} silent for {PROBE_TIMEOUT:.0f} s")
    except requests.RequestException as exc:
        errno = re.search(r"\[Errno -?\d+\] [^'\")]+", str(exc))
        reason = errno.group(0) if errno else type(exc).__name__
        return Probe(False, "unreachable", f"registry {parsed.host} unreachable ({reason})")
    if resp.status_code == 200:
        return Probe(True, "present", f"in registry {parsed.host}")
    if resp.status_code == 404:
        return Probe(False, "missing", f"registry {parsed.host} answers but has no such image")
    if resp.status_code in (401, 403):
        return Probe(
            True,
            "unchecked",
            f"{parsed.host} wants credentials (HTTP {resp.status_code}): not checked",
        )
    return Probe(False, "error", f"registry {parsed.host} answered HTTP {resp.status_code}")


@click.group("base-image")
def base_image_cmd() -> None:
    """The base image of the image builds (BASE_IMAGE)."""


@base_image_cmd.command("check")
@click.argument("ref")
def check_cmd(ref: str) -> None:
    """One line: can the builders get REF? Exit 1 when not."""
    result = probe(ref)
    click.echo(f"{ref}: {result.detail}")
    sys.exit(0 if result.ok else 1)


@base_image_cmd.command("ways")
def ways_cmd() -> None:
    """The one line naming the three ways to a base image."""
    click.echo(THREE_WAYS)


@base_image_cmd.command("kind")
@click.argument("ref")
def kind_cmd(ref: str) -> None:
    """Print path, loopback (plain-http registry), registry or short, for the build script."""
    if is_path(ref):
        click.echo("path")
        return
    try:
        parsed = parse_reference(ref)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("loopback" if parsed.loopback else "registry" if parsed.host else "short")


def configured_base(cfg: dict[str, str]) -> str:
    """BASE_IMAGE of the environment, else of the config (the environment wins)."""
    return os.environ.get("BASE_IMAGE") or cfg.get("BASE_IMAGE", "")
