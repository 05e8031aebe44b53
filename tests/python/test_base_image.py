"""BASE_IMAGE: references parsed as Docker does, loopback registries over plain http, and the probe
against the real site registry of `make cluster-up` (127.0.0.1:5000) when it runs here."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import requests
from mlebench_hpc.doctor import check_base_image
from mlebench_hpc.images.base import THREE_WAYS, is_loopback_host, parse_reference, probe

SITE_BASE = "127.0.0.1:5000/mlebench-hpc/base:bookworm"


@pytest.mark.parametrize(
    ("ref", "host", "repo", "tag"),
    [
        ("127.0.0.1:5000/mlebench-hpc/base:bookworm", "127.0.0.1:5000", "mlebench-hpc/base", "bookworm"),
        ("localhost:5000/a/b", "localhost:5000", "a/b", "latest"),
        ("debian:bookworm-slim", "", "library/debian", "bookworm-slim"),
        ("debian", "", "library/debian", "latest"),
        ("org/image:1.2", "", "org/image", "1.2"),
        ("registry.example.org/x/y@sha256:abc", "registry.example.org", "x/y", "sha256:abc"),
        ("docker://registry.example.org:8443/x:2", "registry.example.org:8443", "x", "2"),
    ],
)
def test_parse_reference_like_docker(ref: str, host: str, repo: str, tag: str) -> None:
    parsed = parse_reference(ref)
    assert (parsed.host, parsed.repository, parsed.tag) == (host, repo, tag)


@pytest.mark.parametrize("ref", ["", "Bad Ref", "UPPER/case", "/a/path.sif"])
def test_parse_reference_refuses_non_references(ref: str) -> None:
    with pytest.raises(ValueError):
        parse_reference(ref)


def test_loopback_registries_use_plain_http() -> None:
    assert is_loopback_host("127.0.0.1:5000") and is_loopback_host("localhost:5000")
    assert is_loopback_host("[::1]:5000") and is_loopback_host("127.8.9.1")
    assert not is_loopback_host("registry.example.org:5000") and not is_loopback_host("10.0.0.1:5000")
    assert parse_reference(SITE_BASE).base_url == "http://127.0.0.1:5000"
    assert parse_reference("registry.example.org/x").base_url == "https://registry.example.org"


def test_probe_of_a_local_base(tmp_path: Path) -> None:
    sif = tmp_path / "base.sif"
    sif.write_bytes(b"x")
    (tmp_path / "rootfs" / "bin").mkdir(parents=True)
    assert probe(str(sif)).ok and probe(str(tmp_path / "rootfs")).ok
    missing = probe(str(tmp_path / "nope.sif"))
    assert not missing.ok and missing.status == "missing"


def test_probe_of_a_closed_port_is_unreachable() -> None:
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        result = probe(f"127.0.0.1:{port}/x/y:1")
    assert not result.ok and result.status == "unreachable"
    assert "Connection refused" in result.detail


def test_short_names_are_left_to_the_builder() -> None:
    result = probe("debian:bookworm-slim")
    assert result.ok and result.status == "unchecked"


def _site_registry_up() -> bool:
    try:
        return requests.get("http://127.0.0.1:5000/v2/", timeout=3).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.skipif(
    not _site_registry_up() and os.environ.get("MLEBENCH_REQUIRE_SLURM") != "1",
    reason="no registry on 127.0.0.1:5000 (as root: make cluster-up)",
)
def test_probe_against_the_site_registry() -> None:
    present = probe(SITE_BASE)
    assert present.ok and present.status == "present", present.detail
    missing = probe("127.0.0.1:5000/mlebench-hpc/no-such-image:bookworm")
    assert not missing.ok and missing.status == "missing"
    assert check_base_image({"BASE_IMAGE": SITE_BASE}, images_missing=True, is_root=False).status == "PASS"


def test_doctor_names_the_three_ways_when_no_base_can_be_had(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BASE_IMAGE", raising=False)
    check = check_base_image({"BASE_IMAGE": str(tmp_path / "nope.sif")}, images_missing=True, is_root=False)
    assert check.status == "FAIL" and check.fix == THREE_WAYS
    assert "(1)" in check.line() and "(2)" in check.line() and "(3)" in check.line()
    # with the images built already, a missing base only matters for the next build
    assert check_base_image({"BASE_IMAGE": str(tmp_path / "nope.sif")}, images_missing=False).status == "WARN"
    # the environment wins over the config
    monkeypatch.setenv("BASE_IMAGE", str(tmp_path))
    (tmp_path / "bin").mkdir()
    assert check_base_image({"BASE_IMAGE": "/nope"}, images_missing=True).status == "PASS"
    assert check_base_image({}, images_missing=True, is_root=True).status == "PASS"
