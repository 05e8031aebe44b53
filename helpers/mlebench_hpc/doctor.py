"""`mlebench-hpc doctor`: check a machine before anything is submitted.

One line per check, `PASS`, `WARN` or `FAIL`, and for every failure the fix on the same line.
Exit status 1 when any check FAILs. Nothing here changes the machine: it reads files, asks
`apptainer --version`/`buildcfg` and `sinfo`, and hashes the images (cached as the runs' are)."""

from __future__ import annotations

import getpass
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import click

from mlebench_hpc.config import ConfigError, find_config_path, resolve, scratch_problem
from mlebench_hpc.git_lfs import is_lfs_pointer
from mlebench_hpc.images.base import THREE_WAYS, configured_base, probe
from mlebench_hpc.printable import printable
from mlebench_hpc.run.store import sha256_file
from mlebench_hpc.slurm.query import SlurmError, partitions

PROBE_TIMEOUT = 20.0


@dataclass(frozen=True)
class Check:
    status: str  # PASS | WARN | FAIL
    name: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        # Details quote probes' output and file contents: never a control character on the terminal.
        text = f"{self.status:<4}  {self.name:<12} {printable(self.detail)}"
        return f"{text}  -> fix: {printable(self.fix)}" if self.fix and self.status != "PASS" else text


def _run(argv: list[str]) -> tuple[int, str]:
    """Run a probe; (rc, stdout+stderr). rc 127 when the program cannot be started or hangs."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


# ------------------------------------------------------------------ apptainer


def check_apptainer() -> tuple[Check, str | None]:
    exe = shutil.which("apptainer") or shutil.which("singularity")
    if exe is None:
        return Check(
            "FAIL",
            "apptainer",
            "apptainer not found on PATH",
            "`module load apptainer` on a cluster, or (root, Debian 12) "
            "`bash scripts_hpc/provision/install_apptainer.sh`",
        ), None
    rc, out = _run([exe, "--version"])
    if rc != 0:
        return Check(
            "FAIL",
            "apptainer",
            f"{exe} --version failed: {out[:120]}",
            "reinstall apptainer or load a working module",
        ), None
    return Check("PASS", "apptainer", f"{out.splitlines()[0] if out else '?'} ({exe})"), exe


def _buildcfg(exe: str | None) -> dict[str, str]:
    if exe is None:
        return {}
    rc, out = _run([exe, "buildcfg"])
    if rc != 0:
        return {}
    pairs = (line.partition("=") for line in out.splitlines())
    return {k.strip(): v.strip() for k, sep, v in pairs if sep}


USERNS_FILE = Path("/proc/sys/user/max_user_namespaces")


def check_namespaces(exe: str | None, userns_file: Path = USERNS_FILE) -> Check:
    """Unprivileged apptainer needs user namespaces; a setuid install does not."""
    try:
        max_ns = int(userns_file.read_text().strip())
    except (OSError, ValueError):
        max_ns = -1
    if max_ns > 0:
        return Check("PASS", "userns", f"user namespaces enabled (max_user_namespaces={max_ns})")
    cfg = _buildcfg(exe)
    starter = Path(cfg.get("LIBEXECDIR", "/usr/libexec")) / "apptainer" / "bin" / "starter-suid"
    suid = cfg.get("APPTAINER_SUID_INSTALL") == "1" or (
        starter.is_file() and bool(starter.stat().st_mode & stat.S_ISUID)
    )
    if suid:
        return Check("PASS", "userns", "user namespaces off, but apptainer is installed setuid")
    what = "disabled (max_user_namespaces=0)" if max_ns == 0 else f"unknown ({userns_file} unreadable)"
    return Check(
        "FAIL",
        "userns",
        f"user namespaces {what} and no setuid apptainer",
        "ask the admins for `sysctl user.max_user_namespaces=15000` or a setuid apptainer install",
    )


def _subid_has(path: Path, user: str, uid: int) -> bool:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in (user, str(uid)) and fields[2].isdigit() and int(fields[2]) > 0:
            return True
    return False


def check_fakeroot(
    images_missing: bool, subuid: Path = Path("/etc/subuid"), subgid: Path = Path("/etc/subgid")
) -> Check:
    """`apptainer build --fakeroot` maps the user to root through /etc/subuid and /etc/subgid."""
    uid = os.getuid()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(uid)
    missing = [p.name for p in (subuid, subgid) if not _subid_has(p, user, uid)]
    if not missing:
        return Check(
            "PASS", "fakeroot", f"{user} has ranges in /etc/subuid and /etc/subgid: build --fakeroot works"
        )
    fix = (
        f"ask the admins for `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`, "
        "or `make sif BUILDER=docker` where Docker is, or copy SIFs built elsewhere"
    )
    files = " and ".join("/etc/" + m for m in missing)
    detail = f"no range for {user} in {files}: `make sif BUILDER=apptainer` fails"
    # Only needed to build images: when they exist already, running works without it.
    return Check("FAIL" if images_missing else "WARN", "fakeroot", detail, fix)


def check_fuse(dev: Path = Path("/dev/fuse")) -> Check:
    """Unprivileged apptainer mounts SIFs with squashfuse, which needs /dev/fuse read/write."""
    fix = "add --unsquash to APPTAINER_EXTRA_FLAGS in the config (SIF unpacked to a sandbox per run, slower)"
    if not dev.exists():
        return Check("WARN", "fuse", f"{dev} does not exist: SIFs cannot be mounted with squashfuse", fix)
    mode = stat.filemode(dev.stat().st_mode)
    if os.access(dev, os.R_OK | os.W_OK):
        return Check("PASS", "fuse", f"{dev} usable ({mode})")
    return Check("WARN", "fuse", f"{dev} not read/writable by you ({mode})", fix)


# ------------------------------------------------------------------ images and data


def check_base_image(cfg: dict[str, str], images_missing: bool, is_root: bool | None = None) -> Check:
    """The base `make sif` starts from (BASE_IMAGE): on disk, or in its registry."""
    ref = configured_base(cfg)
    root = os.geteuid() == 0 if is_root is None else is_root
    if not ref:
        if root:
            return Check(
                "PASS", "base", "BASE_IMAGE unset: as root `make sif` builds from a local debootstrap rootfs"
            )
        ref = "debian:bookworm-slim"
    result = probe(ref)
    detail = f"BASE_IMAGE={ref}: {result.detail}"
    if result.ok:
        return Check("WARN" if result.status == "unchecked" else "PASS", "base", detail, THREE_WAYS)
    # Only needed to build images: when they exist already, running works without it.
    return Check("FAIL" if images_missing else "WARN", "base", detail, THREE_WAYS)


def check_agent(cfg: dict[str, str]) -> tuple[Check, str]:
    """AGENT_ID resolves under AGENTS_DIR (its secrets in AGENT_ENV_FILE); and its image's path."""
    from mlebench_hpc.config import agent_problems, agent_sif

    problems = agent_problems(dict(cfg))
    if problems:
        return Check("FAIL", "agent", problems[0], "fix AGENT_ID, AGENTS_DIR or AGENT_ENV_FILE"), cfg[
            "AGENT_SIF"
        ]
    sif = agent_sif(cfg)
    return Check("PASS", "agent", f"AGENT_ID={cfg['AGENT_ID']} in {cfg['AGENTS_DIR']}"), sif


def check_checker() -> Check:
    """The static integrity checker `make install` builds (every agent run needs it)."""
    import hashlib

    from mlebench_hpc.config import checkout

    root = checkout()
    binary = root / ".venv" / "libexec" / "mlebench-hpc" / "integrity-check"
    fix = f"run `make install` in {root}"
    try:
        want = hashlib.sha256((root / "environment" / "integrity_check.c").read_bytes()).hexdigest()
        have = (binary.parent / (binary.name + ".source")).read_text().strip()
    except OSError:
        return Check("FAIL", "checker", f"integrity checker {binary} missing", fix)
    if want != have:
        return Check("FAIL", "checker", f"integrity checker {binary} built from another source", fix)
    return Check("PASS", "checker", f"integrity checker {binary} (static, from this checkout)")


def check_images(cfg: dict[str, str], agent_image: str | None = None) -> list[Check]:
    wanted = {"GRADING_SIF": cfg["GRADING_SIF"], "AGENT_SIF": agent_image or cfg["AGENT_SIF"]}
    checks = []
    for key, raw in wanted.items():
        path = Path(raw)
        if not path.is_file():
            checks.append(
                Check(
                    "FAIL",
                    "image",
                    f"{key}={path} missing",
                    "run `make sif AGENT=<name>` (the agent of AGENT_ID), or fix the path in the config",
                )
            )
            continue
        size = path.stat().st_size
        try:
            digest = sha256_file(path)
        except OSError as exc:
            checks.append(
                Check("FAIL", "image", f"{key}={path} unreadable: {exc.strerror}", "fix its permissions")
            )
            continue
        checks.append(Check("PASS", "image", f"{key}={path} {human_size(size)} sha256:{digest}"))
    return checks


def check_data(data_dir: Path, competitions: Iterable[str]) -> list[Check]:
    comps = list(competitions)
    if not data_dir.is_dir():
        return [
            Check(
                "FAIL",
                "data",
                f"DATA_DIR={data_dir} does not exist",
                "set DATA_DIR in the config, or `mlebench prepare` / `mlebench-hpc prepare-demo "
                f"--data-dir {data_dir}`",
            )
        ]
    if not comps:
        return [Check("PASS", "data", f"DATA_DIR={data_dir} exists (no --competitions file: none checked)")]
    checks = []
    for comp in comps:
        prepared = data_dir / comp / "prepared"
        missing = [part for part in ("public", "private") if not (prepared / part).is_dir()]
        empty = [
            part
            for part in ("public", "private")
            if part not in missing and not any((prepared / part).iterdir())
        ]
        if missing or empty:
            what = ", ".join([f"{p}/ missing" for p in missing] + [f"{p}/ empty" for p in empty])
            checks.append(
                Check(
                    "FAIL",
                    "data",
                    f"{comp}: {what} in {prepared}",
                    f"`mlebench prepare -c {comp} --data-dir {data_dir}` (demo competitions: "
                    f"`mlebench-hpc prepare-demo --data-dir {data_dir}`)",
                )
            )
        else:
            checks.append(Check("PASS", "data", f"{comp}: prepared (public/ and private/)"))
    return checks


def check_leaderboards(mlebench_dir: str | None, competitions: Iterable[str]) -> list[Check]:
    """Medal thresholds come from the shipped copies of upstream's leaderboards; a checkout's own
    leaderboard is used only when it is byte for byte upstream's (Git LFS pointers are fine)."""
    from mlebench_hpc.grading.thresholds import file_sha256, shipped_leaderboard, upstream_oids

    if not mlebench_dir:
        return [
            Check(
                "PASS",
                "leaderboard",
                "MLEBENCH_DIR not set: medal thresholds from the shipped copies of upstream's leaderboards",
            )
        ]
    root = Path(mlebench_dir) / "mlebench" / "competitions"
    if not root.is_dir():
        return [
            Check(
                "FAIL",
                "leaderboard",
                f"MLEBENCH_DIR={mlebench_dir} has no mlebench/competitions/",
                "point MLEBENCH_DIR at a clone of github.com/openai/mle-bench, or leave it empty",
            )
        ]
    from mlebench_hpc.grading.competitions import demo_specs

    demos = {s.competition_id for s in demo_specs()}  # their baselines live in DATA_DIR, not upstream
    comps = [c for c in competitions if c not in demos]
    files = [root / c / "leaderboard.csv" for c in comps] if comps else sorted(root.glob("*/leaderboard.csv"))
    oids = upstream_oids()
    pointers, same, differ, missing, unshipped = [], [], [], [], []
    for f in files:
        cid = f.parent.name
        if not f.is_file():
            missing.append(cid)
            continue
        if is_lfs_pointer(f):
            pointers.append(cid)
        elif file_sha256(f) == oids.get(cid):
            same.append(cid)
        else:
            differ.append(cid)
        if shipped_leaderboard(cid) is None and f.is_file() and (is_lfs_pointer(f) or cid in differ):
            unshipped.append(cid)

    def shown(names: list[str]) -> str:
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    checks = []
    if pointers or same:
        checks.append(
            Check(
                "PASS",
                "leaderboard",
                f"{len(same)} leaderboard.csv in {root} are upstream's (sha256 checked); {len(pointers)} are "
                "Git LFS pointers, which is fine: the shipped copies of upstream's leaderboards serve",
            )
        )
    if differ:
        checks.append(
            Check(
                "WARN",
                "leaderboard",
                f"{len(differ)} leaderboard.csv differ from upstream's (sha256): {shown(differ)}; "
                "the shipped copies are used instead",
                "restore upstream's files (`git checkout`, `git lfs pull`) or leave them as they are",
            )
        )
    if unshipped:
        checks.append(
            Check(
                "WARN",
                "leaderboard",
                f"no usable leaderboard for {shown(unshipped)}: medals will be reported as unknown",
                f"`git -C {mlebench_dir} lfs pull` (install git-lfs first)",
            )
        )
    if missing:
        checks.append(
            Check(
                "WARN",
                "leaderboard",
                f"no leaderboard.csv for {', '.join(missing)} in {root}",
                "check the competition ids, or update the MLE-bench checkout",
            )
        )
    return checks or [Check("PASS", "leaderboard", f"no leaderboard.csv in {root} to check")]


# ------------------------------------------------------------------ scratch


def check_scratch(cfg: dict[str, str]) -> Check:
    problem = scratch_problem(cfg)
    if problem:
        return Check("FAIL", "scratch", problem, "set SCRATCH_DIR outside OUTPUT_BASE, or leave it empty")
    where = cfg.get("SCRATCH_DIR") or "RUN/.scratch (SCRATCH_DIR empty)"
    return Check("PASS", "scratch", f"agent scratch in {where}, apart from the run directories")


# ------------------------------------------------------------------ slurm


def check_slurm() -> Check:
    sbatch = shutil.which("sbatch")
    if sbatch is None or shutil.which("sinfo") is None:
        return Check(
            "WARN",
            "slurm",
            "sbatch/sinfo not on PATH: only the local path (`bash scripts_hpc/slurm_hetjob.sh C`) works here",
            "`module load slurm` on a cluster login node",
        )
    try:
        parts = partitions(PROBE_TIMEOUT)
    except SlurmError as exc:
        return Check("FAIL", "slurm", str(exc), "check SLURM_CONF and that slurmctld is up (`scontrol ping`)")
    return Check("PASS", "slurm", f"sbatch at {sbatch}; partitions: {' '.join(parts) or '(none)'}")


# ------------------------------------------------------------------ all together


def read_competitions(path: Path | None) -> list[str]:
    if path is None:
        return []
    comps = []
    for line in path.read_text().splitlines():
        word = line.split("#", 1)[0].strip()
        if word:
            comps.append(word)
    return comps


def run_checks(config_path: str | None, competitions: list[str]) -> list[Check]:
    checks: list[Check] = []
    cfg = resolve(None)  # the defaults, until a config file says otherwise
    path = find_config_path(config_path)
    if path is None:
        checks.append(
            Check(
                "WARN",
                "config",
                "no config file: using the defaults",
                "cp scripts_hpc/config.example.env ~/.config/mlebench-hpc/config.env; edit it",
            )
        )
    else:
        try:
            cfg = resolve(path)
            checks.append(Check("PASS", "config", f"{path.resolve()}"))
        except ConfigError as exc:
            checks.append(Check("FAIL", "config", str(exc), "fix the line named above"))
    app, exe = check_apptainer()
    checks.append(app)
    checks.append(check_namespaces(exe))
    agent, agent_image = check_agent(cfg)
    images = check_images(cfg, agent_image)
    images_missing = any(c.status == "FAIL" for c in images)
    checks.append(check_fakeroot(images_missing=images_missing))
    checks.append(check_base_image(cfg, images_missing=images_missing))
    checks.append(check_fuse())
    checks.append(agent)
    checks.append(check_checker())
    checks.extend(images)
    checks.extend(check_data(Path(cfg["DATA_DIR"]), competitions))
    checks.append(check_scratch(cfg))
    checks.extend(check_leaderboards(cfg.get("MLEBENCH_DIR"), competitions))
    checks.append(check_slurm())
    return checks


@click.command("doctor")
@click.option(
    "--competitions",
    "competitions_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File of competition ids (one a line, # comments) whose data must be prepared.",
)
@click.option("--config", "config_path", help="Config file (default: the one in force).")
def doctor_cmd(competitions_file: Path | None, config_path: str | None) -> None:
    """Check this machine: apptainer, userns, fakeroot, base, fuse, images, data, leaderboards, Slurm."""
    checks = run_checks(config_path, read_competitions(competitions_file))
    for c in checks:
        click.echo(c.line())
    fails = sum(c.status == "FAIL" for c in checks)
    warns = sum(c.status == "WARN" for c in checks)
    click.echo(f"doctor: {len(checks) - fails - warns} pass, {warns} warn, {fails} fail")
    if fails:
        sys.exit(1)
