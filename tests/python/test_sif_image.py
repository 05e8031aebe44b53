"""images/sif.py: agent images read as files, never run. Real SIFs built by apptainer from directories
holding what a hostile image author could put there (links out of the tree, names that are control
sequences, huge and sparse files, floods of files), damaged SIFs, and the bounds on decompression."""

from __future__ import annotations

import os
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest
from mlebench_hpc.errors import HelperError
from mlebench_hpc.images.sif import ImageError, SifImage, _Bounded, check_name, check_path
from mlebench_hpc.run.overlay import Found, container_path, scan_image, select, write_overlays
from PySquashfsImage.const import Compression

NEEDS_APPTAINER = pytest.mark.skipif(
    shutil.which("apptainer") is None or shutil.which("mksquashfs") is None,
    reason="needs apptainer and mksquashfs to build SIFs",
)
URL = "http://node7:43121"
ARCH = {"x86_64": "2", "aarch64": "4", "ppc64le": "6", "s390x": "11", "riscv64": "12"}.get(
    os.uname().machine, "2"
)


def build_sif(root: Path, sif: Path) -> Path:
    """A SIF whose system partition is ROOT as mksquashfs packs it: anything a hand-made hostile image
    could hold (apptainer's own `build` refuses links that leave the tree; an attacker need not use it)."""
    squash = sif.with_suffix(".squashfs")
    run = [
        ["mksquashfs", str(root), str(squash), "-noappend", "-all-root", "-quiet"],
        ["apptainer", "sif", "new", str(sif)],
        [
            "apptainer",
            "sif",
            "add",
            "--datatype",
            "4",
            "--partfs",
            "1",
            "--parttype",
            "2",
            "--partarch",
            ARCH,
            "--groupid",
            "1",
            str(sif),
            str(squash),
        ],
    ]
    sif.unlink(missing_ok=True)
    for argv in run:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, (argv[0], res.stderr[-2000:])
    squash.unlink()
    return sif


def hostile_tree(root: Path, private: Path) -> Path:
    """What an image author could ship: every trick aimed at a host that reads the image."""
    home = root / "home"
    (home / "agent/tools").mkdir(parents=True)
    (home / "instructions.txt").write_text("Validate at http://localhost:5000/validate\n")
    (home / "validate_submission.sh").write_text(
        '#!/bin/bash\ncurl -F "file=@$1" http://localhost:5000/validate\n'
    )
    os.chmod(home / "validate_submission.sh", 0o4755)  # setuid: never copied as such
    (home / "agent/tools/ok.py").write_text('URL = "http://127.0.0.1:5000/validate"\n')
    # links that would read host files if anyone followed them
    (home / "agent/answers.csv").symlink_to(private / "test.csv")
    (home / "agent/escape").symlink_to("../../../../../../" + str(private).lstrip("/"))
    (home / "instructions_obfuscated.txt").symlink_to(private / "test.csv")
    # names that are terminal escape sequences, line breaks and bidi overrides
    (home / "agent/evil\nGRADING_SERVER_URL=http:x:1.txt").write_text("localhost:5000\n")
    (home / "agent/\x1b[2J\x1b[1;32mfinished.txt").write_text("localhost:5000\n")
    (home / "agent/gnp.\u202etxt").write_text("localhost:5000\n")
    # a sparse file of 2 GiB and a FIFO
    with (home / "agent/huge.bin").open("wb") as f:
        f.truncate(2 * 1024**3)
    os.mkfifo(home / "agent/pipe")
    return root


@pytest.fixture(scope="module")
def hostile_sif(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("hostile")
    private = base / "private"
    private.mkdir()
    (private / "test.csv").write_text("id,label\n1,SECRET-ANSWER\n")
    root = hostile_tree(base / "root", private)
    return build_sif(root, base / "hostile.sif"), private


# ------------------------------------------------------------------ names and paths
@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b".",
        b"..",
        b"a/b",
        b"a\x00b",
        b"a\nb",
        b"\x1b[31m",
        b"tab\t",
        b"del\x7f",
        b"\xff\xfe",
        b"x" * 256,
    ],
)
def test_names_that_are_not_plain_are_refused(raw: bytes) -> None:
    assert check_name(raw) is None


def test_c1_controls_and_bidi_overrides_are_refused() -> None:
    for text in ("csi\u009b", "rlo\u202etxt", "iso\u2066x"):
        assert check_name(text.encode()) is None
    assert check_name("données-été.txt".encode()) == "données-été.txt"
    assert check_name(b"start.sh") == "start.sh"


@pytest.mark.parametrize(
    "path", ["relative", "/home/../etc/passwd", "/home//agent", "/home/./x", "/home/agent/", "/a\nb", ""]
)
def test_paths_that_are_not_plain_are_refused(path: str) -> None:
    with pytest.raises(ImageError):
        check_path(path)


def test_overlay_paths_must_stay_below_their_roots() -> None:
    assert container_path("/home/agent/notes.txt", ("/home",)) == "/home/agent/notes.txt"
    assert container_path("/opt/extra/conf.ini", ("/home", "/opt/extra/conf.ini"))
    for bad in ("/etc/passwd", "/homeX/a", "/home/../etc/x", "/home/agent/../../x", "home/x"):
        with pytest.raises(HelperError):
            container_path(bad, ("/home",))


# ------------------------------------------------------------------ what reaches the host disk
def test_records_from_an_image_cannot_write_outside_the_overlay_dir(tmp_path: Path) -> None:
    out = tmp_path / "run" / "overlay"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    records = [
        Found("/home/../../victim.txt", 0o644, b"localhost:5000"),
        Found("/../victim.txt", 0o644, b"localhost:5000"),
        Found("/etc/cron.d/x", 0o644, b"localhost:5000"),
        Found("/home/agent/answers.csv", 0o644, b"id,label\n1,x localhost:5000\n"),
        Found("relative/x", 0o644, b"localhost:5000"),
    ]
    kept = select(records)
    assert [f.path for f in kept] == ["/home/agent/answers.csv"]  # a plain path below /home
    write_overlays(kept, URL, out)
    assert victim.read_text() == "precious\n"
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["run/overlay/home/agent/answers.csv", "run/overlay/overlays.tsv", "victim.txt"]


def test_a_link_inside_the_overlay_dir_is_never_written_through(tmp_path: Path) -> None:
    out = tmp_path / "overlay"
    (out / "home").mkdir(parents=True)
    victim_dir = tmp_path / "elsewhere"
    victim_dir.mkdir()
    (out / "home" / "agent").symlink_to(victim_dir)
    with pytest.raises(HelperError, match="not a plain directory"):
        write_overlays([Found("/home/agent/notes.txt", 0o644, b"localhost:5000")], URL, out)
    assert list(victim_dir.iterdir()) == []
    # the control: the same write through a real directory lands where it should
    (out / "home" / "agent").unlink()
    write_overlays([Found("/home/agent/notes.txt", 0o644, b"localhost:5000")], URL, out)
    assert (out / "home/agent/notes.txt").read_bytes() == b"node7:43121"


def test_too_many_matching_files_are_refused() -> None:
    flood = [Found(f"/home/agent/f{i}.txt", 0o644, b"localhost:5000") for i in range(1000)]
    with pytest.raises(HelperError, match="more than"):
        select(flood)


# ------------------------------------------------------------------ real images
@pytest.mark.apptainer
@NEEDS_APPTAINER
def test_a_hostile_image_is_read_without_following_or_trusting_anything(
    hostile_sif: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    sif, private = hostile_sif
    with SifImage(sif) as img:
        link = img.lookup("/home/agent/answers.csv")
        assert link is not None and link.kind == "symlink" and link.target == str(private / "test.csv")
        with pytest.raises(ImageError, match="not a regular file"):
            img.read("/home/agent/answers.csv", 1 << 20)
        # a link is never a directory to descend into, nor a file to read
        assert img.lookup("/home/agent/escape/test.csv") is None
        assert img.listdir("/home/agent/escape") == []
        huge = img.lookup("/home/agent/huge.bin")
        assert huge is not None and huge.size == 2 * 1024**3
        with pytest.raises(ImageError, match="over the"):
            img.read("/home/agent/huge.bin", 16 << 20)
        assert img.lookup("/home/agent/pipe").kind == "other"  # type: ignore[union-attr]
        names = {e.path for e in img.walk("/home/agent", 100)}
        assert "/home/agent/tools/ok.py" in names
        assert not any("\n" in n or "\x1b" in n or "\u202e" in n for n in names)
        assert len(img.refused) == 3 and all(r.isprintable() for r in img.refused)
    found = {f.path: f for f in scan_image(sif, ())}
    assert set(found) == {"/home/instructions.txt", "/home/validate_submission.sh", "/home/agent/tools/ok.py"}
    assert all(b"SECRET-ANSWER" not in f.data for f in found.values())
    assert found["/home/validate_submission.sh"].mode == 0o4755  # as in the image; select/write drop it
    err = capsys.readouterr().err
    assert err.count("not a plain file name") == 3 and "\x1b" not in err and "\u202e" not in err


@pytest.mark.apptainer
@NEEDS_APPTAINER
def test_the_scan_is_bounded_in_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    agent = root / "home/agent"
    agent.mkdir(parents=True)
    (root / "home/instructions.txt").write_text("http://localhost:5000\n")
    for i in range(300):
        (agent / f"f{i:03d}.txt").write_text("localhost:5000\n" if i % 100 == 0 else "x\n")
    sif = build_sif(root, tmp_path / "many.sif")
    monkeypatch.setattr("mlebench_hpc.run.overlay.MAX_SCAN_FILES", 100)
    found = scan_image(sif, ())
    assert {f.path for f in found} == {"/home/instructions.txt"}  # the walk stopped, said so, no crash
    monkeypatch.setattr("mlebench_hpc.run.overlay.MAX_SCAN_FILES", 1000)
    assert len(scan_image(sif, ())) == 4


def test_damaged_images_fail_in_one_line(tmp_path: Path) -> None:
    cases = {
        "empty": b"",
        "text": b"#!/bin/sh\necho not an image\n",
        "magic-only": b"\0" * 32 + b"SIF_MAGIC\x00" + b"\0" * 200,
    }
    for name, data in cases.items():
        p = tmp_path / f"{name}.sif"
        p.write_bytes(data)
        with pytest.raises(ImageError) as exc:
            SifImage(p)
        assert "\n" not in str(exc.value), name


@pytest.mark.apptainer
@NEEDS_APPTAINER
def test_a_corrupted_squashfs_fails_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "home/agent").mkdir(parents=True)
    (root / "home/instructions.txt").write_text("http://localhost:5000\n" * 100)
    sif = build_sif(root, tmp_path / "ok.sif")
    data = bytearray(sif.read_bytes())
    # the last 4 KiB hold the squashfs tables (inodes, directories): scramble them
    for i in range(len(data) - 4096, len(data)):
        data[i] ^= 0x5A
    bad = tmp_path / "bad.sif"
    bad.write_bytes(bytes(data))
    with pytest.raises(ImageError) as exc, SifImage(bad) as img:
        list(img.walk("/", 1000))
        img.read("/home/instructions.txt", 1 << 20)
    assert "\n" not in str(exc.value)


def test_a_block_that_inflates_past_the_block_size_is_refused() -> None:
    bomb = zlib.compress(b"\0" * (64 * 1024 * 1024), 9)  # 64 MiB of zeros in about 64 KiB
    assert len(bomb) < 100_000
    with pytest.raises(ImageError, match="inflates"):
        _Bounded(Compression.ZLIB).uncompress(bomb, len(bomb), 128 * 1024)
    ok = zlib.compress(b"a" * 100_000)
    assert _Bounded(Compression.ZLIB).uncompress(ok, len(ok), 128 * 1024) == b"a" * 100_000
