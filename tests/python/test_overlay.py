"""overlay: real files laid out like an agent image (--from-dir), and the same tree as a real SIF
(built by apptainer from the directory), read without running anything of it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from mlebench_hpc.run.overlay import CURL_WITH_TOKEN
from test_server import VALID_MESSAGE, make_spaceship, start_server

REPO = Path(__file__).resolve().parents[2]
RUNNER = "from mlebench_hpc.run.overlay import overlay_cmd as c; c(prog_name='mlebench-hpc overlay')"
URL = "http://node7:43121"
BLOB = b"\x00\x01\xff\xfe binary \x80\x81 http://localhost:5000/validate \x00 tail \xc3\x28\n"

# container path -> (content, mode)
TREE: dict[str, tuple[bytes, int]] = {
    "/home/instructions.txt": (b"Validate at http://localhost:5000/validate please.\n", 0o644),
    "/home/instructions_obfuscated.txt": (b"endpoint `http://localhost:5000/validate`\n", 0o444),
    "/home/validate_submission.sh": (
        b'#!/bin/bash\nSERVER_URL="http://localhost:5000/validate"\ncurl -F "file=@$1" "$SERVER_URL"\n',
        0o755,
    ),
    "/home/agent/additional_notes.txt": (b"The grader lives at localhost:5000 (POST /validate).\n", 0o600),
    "/home/agent/tools/check.py": (b'URL = "http://127.0.0.1:5000/validate"\n', 0o750),
    "/home/agent/blob.bin": (BLOB, 0o640),
    "/home/notes.sh": (b"echo localhost:5000\n", 0o700),
    "/home/agent/unrelated.txt": (b"nothing to see: localhost:5001\n", 0o644),
    "/home/agent/__pycache__/check.cpython-311.pyc": (b"\x00\x00pyc http://127.0.0.1:5000/validate", 0o644),
    "/etc/not-scanned.conf": (b"http://localhost:5000\n", 0o644),
    "/opt/extra/conf.ini": (b"server=http://localhost:5000\n", 0o644),
}
EXPECTED = {
    "/home/instructions.txt",
    "/home/instructions_obfuscated.txt",
    "/home/validate_submission.sh",
    "/home/agent/additional_notes.txt",
    "/home/agent/tools/check.py",
    "/home/agent/blob.bin",
    "/home/notes.sh",
}


def overlay(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True, timeout=300, env=env)


def make_root(root: Path) -> Path:
    for ctr, (data, mode) in TREE.items():
        p = root / ctr.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.chmod(p, mode)
    return root


def manifest(out: Path) -> dict[str, Path]:
    lines = (out / "overlays.tsv").read_text().splitlines()
    pairs = [line.split("\t") for line in lines]
    assert all(len(p) == 2 for p in pairs)
    return {ctr: Path(host) for host, ctr in pairs}


def expected_bytes(data: bytes, url: str = URL, ctr: str = "") -> bytes:
    netloc = url.split("://", 1)[1].encode()
    for old in (b"http://localhost:5000", b"http://127.0.0.1:5000"):
        data = data.replace(old, url.encode())
    data = data.replace(b"localhost:5000", netloc)
    if ctr == "/home/validate_submission.sh":  # the token wrapper goes after the shebang
        shebang, _, body = data.partition(b"\n")
        data = shebang + b"\n" + CURL_WITH_TOKEN + body
    return data


def check_output(out: Path, url: str = URL) -> dict[str, Path]:
    found = manifest(out)
    assert set(found) == EXPECTED
    for ctr, host in found.items():
        data, mode = TREE[ctr]
        assert host.is_absolute() and host.is_relative_to(out.resolve())
        assert host.read_bytes() == expected_bytes(data, url, ctr), ctr
        assert b"localhost:5000" not in host.read_bytes() and b"127.0.0.1:5000" not in host.read_bytes()
        assert stat.S_IMODE(host.stat().st_mode) == mode | 0o400, ctr
    return found


def test_from_dir_finds_and_rewrites_every_file(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    out = tmp_path / "out"
    res = overlay("--from-dir", str(root), "--url", URL, "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode().strip() == str((out / "overlays.tsv").resolve())
    assert b"7 file(s) rewritten" in res.stderr
    assert b"__pycache__" in res.stderr  # named as skipped, not silently dropped
    found = check_output(out)
    # binary-safe: NUL bytes and invalid UTF-8 survive, the /validate suffix is kept
    assert found["/home/agent/blob.bin"].read_bytes() == BLOB.replace(
        b"http://localhost:5000/validate", URL.encode() + b"/validate"
    )
    assert os.access(found["/home/validate_submission.sh"], os.X_OK)
    assert (
        found["/home/agent/additional_notes.txt"].read_text()
        == "The grader lives at node7:43121 (POST /validate).\n"
    )


def test_idempotent_and_no_double_rewrite(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    out = tmp_path / "out"
    assert overlay("--from-dir", str(root), "--url", URL, "--out", str(out)).returncode == 0
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    res = overlay("--from-dir", str(root), "--url", URL, "--out", str(out))
    assert res.returncode == 0, res.stderr
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert after == before  # same files, same bytes, not even rewritten
    # a new URL (requeued server): rewritten from the originals, never from the previous copy
    url2 = "http://node8:40000"
    assert overlay("--from-dir", str(root), "--url", url2, "--out", str(out)).returncode == 0
    check_output(out, url2)
    assert not any(b"node7" in p.read_bytes() for p in out.rglob("*") if p.is_file())


def test_stale_overlay_removed_when_file_no_longer_matches(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    out = tmp_path / "out"
    assert overlay("--from-dir", str(root), "--url", URL, "--out", str(out)).returncode == 0
    (root / "home/notes.sh").write_bytes(b"echo nothing\n")
    assert overlay("--from-dir", str(root), "--url", URL, "--out", str(out)).returncode == 0
    assert "/home/notes.sh" not in manifest(out)
    assert not (out / "home/notes.sh").exists()


def test_extra_paths(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    out = tmp_path / "out"
    res = overlay("--from-dir", str(root), "--url", URL, "--out", str(out), "--paths", "/opt/extra")
    assert res.returncode == 0, res.stderr
    found = manifest(out)
    assert set(found) == EXPECTED | {"/opt/extra/conf.ini"}
    assert found["/opt/extra/conf.ini"].read_bytes() == f"server={URL}\n".encode()
    assert "/etc/not-scanned.conf" not in found
    assert overlay("--from-dir", str(root), "--url", URL, "--out", str(out), "--paths", "rel").returncode == 2


def test_no_file_found_is_suspicious(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "home/agent").mkdir(parents=True)
    (root / "home/agent/start.sh").write_text("echo hi\n")
    res = overlay("--from-dir", str(root), "--url", URL, "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    assert b"localhost:5000" in res.stderr and b"--allow-none" in res.stderr
    res = overlay("--from-dir", str(root), "--url", URL, "--out", str(tmp_path / "out"), "--allow-none")
    assert res.returncode == 0
    assert (tmp_path / "out/overlays.tsv").read_text() == ""


def test_bad_inputs(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    assert overlay("--from-dir", str(root), "--url", "node7:1", "--out", str(tmp_path / "o")).returncode == 2
    res = overlay("--image", str(tmp_path / "missing.sif"), "--url", URL, "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and b"make sif" in res.stderr
    sif = tmp_path / "x.sif"
    sif.write_bytes(b"not an image")
    res = overlay("--image", str(sif), "--url", URL, "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and b"is not a SIF image" in res.stderr
    assert b"Traceback" not in res.stderr


# --------------------------------------------------------------------------- real apptainer
def build_sif(root: Path, sif: Path) -> Path:
    """A SIF made by apptainer from a directory: no shell, no tools, only the tree."""
    build = subprocess.run(
        ["apptainer", "build", "--force", str(sif), str(root)], capture_output=True, text=True, timeout=600
    )
    assert build.returncode == 0, build.stderr[-2000:]
    return sif


@pytest.mark.apptainer
@pytest.mark.skipif(shutil.which("apptainer") is None, reason="needs apptainer to build a SIF")
def test_real_image_scan(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    sif = build_sif(root, tmp_path / "agent.sif")
    out = tmp_path / "out"
    res = overlay("--image", str(sif), "--url", URL, "--out", str(out))
    assert res.returncode == 0, res.stderr
    check_output(out)
    # the image has no sh, no grep, no cat: the scan read the file, it ran nothing of the image
    assert not (root / "bin").exists() and not (root / "usr").exists()
    res = overlay("--image", str(sif), "--url", URL, "--out", str(tmp_path / "out2"), "--paths", "/opt/extra")
    assert res.returncode == 0, res.stderr
    assert set(manifest(tmp_path / "out2")) == EXPECTED | {"/opt/extra/conf.ini"}


# --------------------------------------------------------------------------- the token
# upstream MLE-bench's environment/validate_submission.sh, byte for byte (no final newline)
UPSTREAM_SCRIPT = b"""#!/bin/bash

# This script is a tool for agents to submit a file to the grading server for validation.

# validate_submission.sh
# Usage: ./validate_submission.sh user_submission.csv

SUBMISSION_FILE=$1
SERVER_URL="http://localhost:5000/validate"

if [ -z "$SUBMISSION_FILE" ]; then
    echo "Usage: $0 <submission_file>"
    exit 1
fi

if [ ! -f "$SUBMISSION_FILE" ]; then
    echo "File $SUBMISSION_FILE does not exist."
    exit 1
fi

curl -X POST -F "file=@${SUBMISSION_FILE}" ${SERVER_URL}"""
OURS = (REPO / "environment" / "validate_submission.sh").read_bytes()
TOKEN = "0d5e6c7b8a9f41e2b3c4d5e6f7a8b9c0"


def overlaid_script(tmp_path: Path, name: str, original: bytes, url: str) -> Path:
    root = tmp_path / name / "root"
    (root / "home").mkdir(parents=True)
    (root / "home/validate_submission.sh").write_bytes(original)
    os.chmod(root / "home/validate_submission.sh", 0o755)
    out = tmp_path / name / "out"
    res = overlay("--from-dir", str(root), "--url", url, "--out", str(out))
    assert res.returncode == 0, res.stderr
    script = manifest(out)["/home/validate_submission.sh"]
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    return script


def test_upstream_script_gets_the_token_wrapper(tmp_path: Path) -> None:
    script = overlaid_script(tmp_path, "upstream", UPSTREAM_SCRIPT, URL).read_bytes()
    assert script.startswith(b"#!/bin/bash\n" + CURL_WITH_TOKEN)
    # the rest is upstream's text with the URL rewritten
    assert script.removeprefix(b"#!/bin/bash\n" + CURL_WITH_TOKEN) == UPSTREAM_SCRIPT.replace(
        b"#!/bin/bash\n", b"", 1
    ).replace(b"http://localhost:5000", URL.encode())


def test_our_script_is_only_rewritten(tmp_path: Path) -> None:
    # it sends the header itself; a second one would make the server see "tok, tok" and refuse
    script = overlaid_script(tmp_path, "ours", OURS, URL).read_bytes()
    assert script == OURS.replace(b"http://localhost:5000", URL.encode())
    assert CURL_WITH_TOKEN not in script


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_overlaid_scripts_send_the_token_to_a_real_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    answers = make_spaceship(data_dir, n_rows=200)
    submission = tmp_path / "submission.csv"
    answers.to_csv(submission, index=False)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    srv = start_server(data_dir, tmp_path / "srv", "--token-file", str(token_file))
    try:
        scripts = {
            "upstream": overlaid_script(tmp_path, "upstream", UPSTREAM_SCRIPT, srv.url),
            "ours": overlaid_script(tmp_path, "ours", OURS, srv.url),
        }
        base_env = {"PATH": os.environ["PATH"]}
        for name, script in scripts.items():
            for shell in ("bash", "sh"):
                with_token = subprocess.run(
                    [shell, str(script), str(submission)],
                    env={**base_env, "GRADING_SERVER_TOKEN": TOKEN},
                    capture_output=True,
                    timeout=60,
                )
                assert with_token.returncode == 0, (name, shell, with_token.stderr)
                body = json.loads(with_token.stdout)
                assert body == {"result": VALID_MESSAGE, "valid": True}, (name, shell, body)
            # the control: without the token in its environment the same script is refused
            without = subprocess.run(
                [str(script), str(submission)], env=base_env, capture_output=True, timeout=60
            )
            body = json.loads(without.stdout)
            assert body["error"].startswith("unauthorized"), (name, body)
            assert "/home/validate_submission.sh" in body["details"]
    finally:
        assert srv.stop() == 0, srv.stderr()
    assert TOKEN not in srv.stderr()
