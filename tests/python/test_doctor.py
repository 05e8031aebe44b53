"""`mlebench-hpc doctor` on real temporary files: configs, images, data dirs, leaderboards."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlebench_hpc import doctor
from mlebench_hpc.doctor import doctor_cmd
from mlebench_hpc.grading.thresholds import SHIPPED_LEADERBOARDS

SHIPPED = SHIPPED_LEADERBOARDS / "spaceship-titanic.csv"
LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 12345\n"
)


@pytest.fixture()
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A config pointing at temp images, data and an upstream checkout; nothing prepared yet."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MLEBENCH_HPC_CONFIG", raising=False)
    paths = {
        "images": tmp_path / "images",
        "data": tmp_path / "data",
        "mlebench": tmp_path / "mle-bench",
        "config": tmp_path / "config.env",
        "comps": tmp_path / "comps.txt",
    }
    paths["images"].mkdir()
    paths["data"].mkdir()
    paths["config"].write_text(
        f'DATA_DIR="{paths["data"]}"\n'
        f'IMAGE_DIR="{paths["images"]}"\n'
        f'GRADING_SIF="{paths["images"]}/mlebench-grading.sif"\n'
        f'AGENT_SIF="{paths["images"]}/agent-dummy.sif"\n'
        f'MLEBENCH_DIR="{paths["mlebench"]}"\n'
    )
    paths["comps"].write_text("# competitions of the sweep\nspaceship-titanic\n\ndemo-diabetes  # demo\n")
    return paths


def prepare(data: Path, comp: str) -> None:
    for part, name in (("public", "sample_submission.csv"), ("private", "test.csv")):
        d = data / comp / "prepared" / part
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_text("id,target\n1,0.5\n")


def leaderboard(mlebench: Path, comp: str, text: str) -> None:
    d = mlebench / "mlebench" / "competitions" / comp
    d.mkdir(parents=True, exist_ok=True)
    (d / "leaderboard.csv").write_text(text)


def invoke(site: dict[str, Path], *extra: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(
        doctor_cmd, ["--config", str(site["config"]), "--competitions", str(site["comps"]), *extra]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output.splitlines()


def lines(out: list[str], name: str) -> list[str]:
    return [line for line in out if line.split()[1:2] == [name]]


def test_missing_images_unprepared_data_and_lfs_pointers_fail_with_fixes(site: dict[str, Path]) -> None:
    leaderboard(site["mlebench"], "spaceship-titanic", LFS_POINTER)
    leaderboard(site["mlebench"], "demo-diabetes", LFS_POINTER)
    code, out = invoke(site)
    assert code == 1
    images = lines(out, "image")
    assert len(images) == 2 and all(line.startswith("FAIL") and "make sif" in line for line in images)
    data = lines(out, "data")
    assert [line.split()[2] for line in data] == ["spaceship-titanic:", "demo-diabetes:"]
    assert all(line.startswith("FAIL") and "public/ missing" in line and "fix:" in line for line in data)
    assert "mlebench prepare -c spaceship-titanic" in data[0]
    (ok,) = lines(out, "leaderboard")  # demo competitions are not upstream's: not looked up there
    # pointers are fine: the shipped copies of upstream's leaderboards serve
    assert ok.startswith("PASS") and "1 are Git LFS pointers, which is fine" in ok
    assert out[-1].startswith("doctor: ") and out[-1].endswith("fail") and " 0 fail" not in out[-1]


def test_everything_in_place_passes_with_size_and_sha256(site: dict[str, Path]) -> None:
    blobs = {"mlebench-grading.sif": os.urandom(300_000), "agent-dummy.sif": b"agent image bytes"}
    for name, blob in blobs.items():
        (site["images"] / name).write_bytes(blob)
    for comp in ("spaceship-titanic", "demo-diabetes"):
        prepare(site["data"], comp)
    leaderboard(site["mlebench"], "spaceship-titanic", SHIPPED.read_text())
    _, out = invoke(site)
    images = lines(out, "image")
    for line, (name, blob) in zip(images, blobs.items(), strict=True):
        assert line.startswith("PASS") and name in line
        assert f"sha256:{hashlib.sha256(blob).hexdigest()}" in line
    assert "293.0 KiB" in images[0] and "17 B" in images[1]
    assert all(line.startswith("PASS") for line in lines(out, "data"))
    (lb,) = lines(out, "leaderboard")
    assert lb.startswith("PASS") and "1 leaderboard.csv" in lb and "are upstream's (sha256 checked)" in lb
    # the only possible failures left are about this machine, not the config
    assert all(not line.startswith("FAIL") for line in out if line.split()[1:2] in (["config"], ["image"]))


def test_one_pointer_among_real_files_and_a_half_prepared_competition(site: dict[str, Path]) -> None:
    prepare(site["data"], "spaceship-titanic")
    shutil.rmtree(site["data"] / "spaceship-titanic" / "prepared" / "private")
    prepare(site["data"], "demo-diabetes")
    leaderboard(site["mlebench"], "spaceship-titanic", "teamId,score\n1,0.9\n")
    leaderboard(site["mlebench"], "demo-diabetes", LFS_POINTER)
    code, out = invoke(site)
    assert code == 1
    data = lines(out, "data")
    assert data[0].startswith("FAIL") and "private/ missing" in data[0] and "public/" not in data[0]
    assert data[1].startswith("PASS")
    (differ,) = lines(out, "leaderboard")
    assert differ.startswith("WARN") and "1 leaderboard.csv differ from upstream's" in differ
    assert "spaceship-titanic; the shipped copies are used instead" in differ


def test_unknown_config_key_and_missing_apptainer(site: dict[str, Path]) -> None:
    site["config"].write_text(site["config"].read_text() + "DATADIR=/typo\n")
    # a PATH without apptainer (it lives in /usr/local/bin on the test machines)
    empty = site["images"].parent / "emptybin"
    empty.mkdir()
    result = CliRunner(env={"PATH": str(empty)}).invoke(doctor_cmd, ["--config", str(site["config"])])
    assert result.exit_code == 1
    out = result.output.splitlines()
    (cfg,) = lines(out, "config")
    assert cfg.startswith("FAIL") and "unknown key DATADIR" in cfg
    (app,) = lines(out, "apptainer")
    assert app.startswith("FAIL") and "not found on PATH" in app and "module load apptainer" in app
    (slurm,) = lines(out, "slurm")
    assert slurm.startswith("WARN") and "module load slurm" in slurm


def test_no_competitions_file_checks_every_leaderboard(site: dict[str, Path]) -> None:
    leaderboard(site["mlebench"], "a", "teamId,score\n1,1\n")
    leaderboard(site["mlebench"], "b", LFS_POINTER)
    result = CliRunner().invoke(doctor_cmd, ["--config", str(site["config"])])
    ok, differ, unusable = lines(result.output.splitlines(), "leaderboard")
    assert ok.startswith("PASS") and "1 are Git LFS pointers" in ok
    assert differ.startswith("WARN") and "differ from upstream's (sha256): a;" in differ
    assert unusable.startswith("WARN") and "no usable leaderboard for a, b" in unusable


def test_namespaces_from_the_sysctl_file(tmp_path: Path) -> None:
    f = tmp_path / "max_user_namespaces"
    f.write_text("15000\n")
    assert doctor.check_namespaces(None, f).status == "PASS"
    f.write_text("0\n")
    check = doctor.check_namespaces(None, f)
    assert check.status == "FAIL" and "max_user_namespaces=0" in check.detail and "setuid" in check.fix


def test_fakeroot_needs_subuid_and_subgid(tmp_path: Path) -> None:
    import getpass

    user = getpass.getuser()
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("someoneelse:100000:65536\n")
    subgid.write_text(f"{user}:100000:65536\n")
    missing = doctor.check_fakeroot(True, subuid, subgid)
    assert missing.status == "FAIL" and "/etc/subuid" in missing.detail
    assert "/etc/subgid" not in missing.detail
    assert "usermod --add-subuids" in missing.fix
    assert doctor.check_fakeroot(False, subuid, subgid).status == "WARN"  # images exist: only a warning
    subuid.write_text(f"{os.getuid()}:200000:65536\n")  # a numeric uid entry counts too
    assert doctor.check_fakeroot(True, subuid, subgid).status == "PASS"


def test_fuse_missing_advises_unsquash(tmp_path: Path) -> None:
    check = doctor.check_fuse(tmp_path / "fuse")
    assert check.status == "WARN" and "--unsquash" in check.fix
    dev = tmp_path / "fuse-file"
    dev.write_text("")
    assert doctor.check_fuse(dev).status == "PASS"


def test_scratch_inside_output_base_fails_with_the_fix(site: dict[str, Path]) -> None:
    base = site["config"].parent / "runs"
    with site["config"].open("a") as f:
        f.write(f'OUTPUT_BASE="{base}"\nSCRATCH_DIR="{base}/scratch"\n')
    out = CliRunner().invoke(doctor_cmd, ["--config", str(site["config"])]).output
    (line,) = [ln for ln in out.splitlines() if " scratch " in ln]
    assert line.startswith("FAIL") and "inside OUTPUT_BASE" in line and "-> fix:" in line
    assert (
        doctor.check_scratch({"SCRATCH_DIR": str(base.parent / "s"), "OUTPUT_BASE": str(base)}).status
        == "PASS"
    )
    assert doctor.check_scratch({"SCRATCH_DIR": "", "OUTPUT_BASE": str(base)}).status == "PASS"


def test_check_lines_escape_what_probes_printed() -> None:
    line = doctor.Check(
        "FAIL", "apptainer", "apptainer --version failed: \x1b[2J\x1b[32mok\r", "fix \x1b[1A"
    ).line()
    assert "\x1b" not in line and "\r" not in line and "\\x1b[2J" in line and "\\x1b[1A" in line
