"""The hand-made `docker save` archive: its layout is what containers/image (Apptainer's
docker-archive:// transport) reads, digests are real, and (where apptainer is installed) the
archive converts to a SIF that runs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlebench_hpc.images.docker_archive import ImageSpec, docker_archive_cmd, write_docker_archive


def _make_rootfs(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "usr/lib").mkdir(parents=True)
    (root / "etc/hello.txt").write_text("hello\n")
    (root / "bin/tool").write_bytes(b"#!/bin/sh\necho tool\n")
    (root / "bin/tool").chmod(0o755)
    os.symlink("../etc/hello.txt", root / "bin/hello-link")
    os.symlink("usr/lib", root / "lib")  # a symlinked directory (as in merged-/usr rootfs)
    os.link(root / "etc/hello.txt", root / "etc/hello-hard.txt")
    return root


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_layout_and_digests(tmp_path: Path) -> None:
    rootfs = _make_rootfs(tmp_path / "rootfs")
    spec = ImageSpec(tag="local/test:7", env=("PATH=/bin", "A=b"))
    info = write_docker_archive(rootfs, tmp_path / "img.tar", spec)
    files = _members(info.path)
    manifest = json.loads(files["manifest.json"])
    assert len(manifest) == 1 and manifest[0]["RepoTags"] == ["local/test:7"]
    config_name, (layer_name,) = manifest[0]["Config"], manifest[0]["Layers"]
    config_bytes, layer = files[config_name], files[layer_name]
    # the config file is named by its own sha256, the layer's sha256 is the diff_id
    assert config_name == hashlib.sha256(config_bytes).hexdigest() + ".json"
    config = json.loads(config_bytes)
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()] == [info.diff_id]
    assert config["config"]["Env"] == ["PATH=/bin", "A=b"]
    assert config["os"] == "linux" and config["architecture"] == "amd64"
    assert json.loads(files["repositories"]) == {"local/test": {"7": layer_name.split("/")[0]}}
    assert files[layer_name.replace("layer.tar", "VERSION")] == b"1.0"
    assert info.layer_bytes == len(layer)


def test_layer_holds_the_tree(tmp_path: Path) -> None:
    rootfs = _make_rootfs(tmp_path / "rootfs")
    info = write_docker_archive(rootfs, tmp_path / "img.tar")
    files = _members(info.path)
    layer_name = json.loads(files["manifest.json"])[0]["Layers"][0]
    with tarfile.open(fileobj=io.BytesIO(files[layer_name])) as layer:
        members = {m.name: m for m in layer.getmembers()}
        assert layer.extractfile(members["etc/hello.txt"]).read() == b"hello\n"  # type: ignore[union-attr]
        assert members["bin/hello-link"].issym() and members["bin/hello-link"].linkname == "../etc/hello.txt"
        assert members["lib"].issym() and members["lib"].linkname == "usr/lib"
        assert members["bin/tool"].mode & 0o111
        assert members["usr/lib"].isdir()
        hard = [members[n] for n in ("etc/hello.txt", "etc/hello-hard.txt")]
        assert sum(m.islnk() for m in hard) == 1  # the second name is a hard link, not a copy
        if os.getuid() != 0:  # the builder's own files become root's, as after a docker build
            assert members["etc/hello.txt"].uid == 0


def test_same_tree_same_layer(tmp_path: Path) -> None:
    rootfs = _make_rootfs(tmp_path / "rootfs")
    a = write_docker_archive(rootfs, tmp_path / "a.tar")
    b = write_docker_archive(rootfs, tmp_path / "b.tar")
    assert a.diff_id == b.diff_id


@pytest.mark.skipif(os.getuid() != 0, reason="creating a device node needs root")
def test_device_nodes_are_skipped(tmp_path: Path) -> None:
    rootfs = _make_rootfs(tmp_path / "rootfs")
    (rootfs / "dev").mkdir()
    os.mknod(rootfs / "dev/null", 0o666 | 0o020000, os.makedev(1, 3))
    info = write_docker_archive(rootfs, tmp_path / "img.tar")
    assert info.skipped_devices == ("dev/null",)
    files = _members(info.path)
    layer_name = json.loads(files["manifest.json"])[0]["Layers"][0]
    with tarfile.open(fileobj=io.BytesIO(files[layer_name])) as layer:
        names = layer.getnames()
    assert "dev" in names and "dev/null" not in names


def test_cli_errors_and_output(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(docker_archive_cmd, [str(tmp_path / "nope"), str(tmp_path / "x.tar")])
    assert missing.exit_code != 0 and "not a directory" in missing.output
    rootfs = _make_rootfs(tmp_path / "rootfs")
    bad_env = runner.invoke(docker_archive_cmd, [str(rootfs), str(tmp_path / "x.tar"), "--env", "NOEQUALS"])
    assert bad_env.exit_code != 0 and "KEY=value" in bad_env.output
    assert not (tmp_path / "x.tar").exists()
    ok = runner.invoke(docker_archive_cmd, [str(rootfs), str(tmp_path / "x.tar"), "--env", "A=1"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "x.tar").is_file() and "sha256:" in ok.output
    config = next(
        json.loads(v)
        for k, v in _members(tmp_path / "x.tar").items()
        if k.endswith(".json") and k != "manifest.json" and "/" not in k
    )
    assert config["config"]["Env"][0].startswith("PATH=") and "A=1" in config["config"]["Env"]


@pytest.mark.apptainer
@pytest.mark.skipif(shutil.which("apptainer") is None, reason="apptainer not installed")
def test_apptainer_converts_and_runs_it(tmp_path: Path) -> None:
    # a runnable rootfs from the host's own dash and its libraries
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    shutil.copy("/bin/dash", rootfs / "bin/sh")
    ldd = subprocess.run(["ldd", "/bin/dash"], capture_output=True, text=True, check=True).stdout
    for lib in {tok for tok in ldd.split() if tok.startswith("/")}:
        dest = rootfs / lib.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(lib, dest)
    (rootfs / "etc/marker").write_text("converted\n")
    spec = ImageSpec(env=("PATH=/bin", "FROM_CONFIG=yes"))
    archive = write_docker_archive(rootfs, tmp_path / "x.tar", spec).path
    sif = tmp_path / "x.sif"
    subprocess.run(
        ["apptainer", "build", "--force", str(sif), f"docker-archive://{archive}"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    out = subprocess.run(
        [
            "apptainer",
            "exec",
            "--contain",
            "--no-home",
            str(sif),
            "sh",
            "-c",
            'read -r m </etc/marker; echo "$m $FROM_CONFIG"',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "converted yes"
