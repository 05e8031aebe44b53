"""Finding what to grade: run directories (metadata.json) or upstream's submissions file, and
the data and upstream-checkout directories each run is graded against.

Only runs the host made are graded. An agent writes anything into its submission/, logs/, code/
and scratch, a metadata.json and its own "answers" included, so a run directory must be one the job
created: never below another run directory, an agent's scratch (SCRATCH_DIR, RUN/.scratch, or any
directory laid out as one) or a hidden directory; its metadata.json a regular file naming a plain
competition id and the job the directory is named after (`<competition>_<jobid>`); its submission/
and logs/ real directories. Anything else is skipped with one warning line naming it. And a run is
graded against the data the user names (--data-dir, else the config's DATA_DIR), never against the
`data_dir` its metadata.json records (which is only reported when it differs).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlebench_hpc.config import UPSTREAM_DEFAULT_DATA_DIR
from mlebench_hpc.grading.messages import one_line
from mlebench_hpc.printable import printable
from mlebench_hpc.run.layout import RUN_SUBDIRS
from mlebench_hpc.run.record import METADATA as METADATA_NAME
from mlebench_hpc.run.record import RecordError, RunRecord, array_task_id, run_dir_name
from mlebench_hpc.untrusted import SUBMISSION_REL

# Directories never holding runs: tools' own trees.
_SKIP_DIRS = {"__pycache__", "node_modules"}
# A run directory's agent-writable subdirectories (bound into the agent container): the ones every
# run directory has from its first moment (run/layout.py) but the host's overlays.
_AGENT_DIRS = frozenset(RUN_SUBDIRS) - {"overlay"}
# What Apptainer's --workdir makes in an agent's scratch (its /tmp and /var/tmp).
_SCRATCH_LAYOUT = {"tmp", "var_tmp"}
# Of those, what a directory must have to be graded as a run (runs made by hand may lack the rest).
_RUN_LAYOUT = tuple(d for d in RUN_SUBDIRS if d in ("submission", "logs"))
_COMPETITION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class RunSpecError(Exception):
    """A run directory or submissions file that cannot be read; one line saying what to fix."""


@dataclass(frozen=True)
class RunSpec:
    """One submission to grade and where to find its competition's data.

    The submission was written by an agent: it is only ever read through mlebench_hpc.untrusted,
    as `base / rel` (base is host-made; nothing below it may be a link). `collected` is the run's
    metadata record of the copy made when the agent ended (RUN/collected/submission.csv)."""

    competition_id: str
    submission_path: Path
    data_dir: Path
    mlebench_dir: Path | None = None
    run_dir: Path | None = None
    seed: int | str | None = None
    isolation: Any = None
    collected: Any = None
    recorded_data_dir: str | None = None  # the run's metadata.json `data_dir`: reported, never used
    agent_id: str | None = None  # its agent (grade_cli attributes runs that name none)
    # Why the infrastructure failed this attempt (its grading or LLM server died): not graded.
    failed_attempt: str | None = None


class DirResolver:
    """Data and upstream-checkout directories, in the documented order of precedence.

    data dir: --data-dir > config DATA_DIR > ~/.cache/mle-bench/data (a run's recorded data_dir is
    not trusted: an agent can plant a run naming data of its own making).
    MLEBENCH_DIR: --mlebench-dir > $MLEBENCH_DIR > config MLEBENCH_DIR > none (shipped thresholds).
    The config is read lazily: a broken config only matters when a run actually needs it.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        mlebench_dir: Path | None = None,
        config_lookup: Callable[[str], str | None] | None = None,
    ) -> None:
        self._data_dir = data_dir
        self._mlebench_dir = mlebench_dir
        self._lookup = config_lookup
        self._cache: dict[str, str | None] = {}

    def _config(self, key: str) -> str | None:
        if key not in self._cache:
            if self._lookup is None:
                from mlebench_hpc.config import config_value

                self._lookup = config_value
            self._cache[key] = self._lookup(key)
        return self._cache[key]

    def data_dir(self) -> Path:
        if self._data_dir is not None:
            return Path(self._data_dir).expanduser()
        cfg = self._config("DATA_DIR")
        if cfg:
            return Path(cfg).expanduser()
        return UPSTREAM_DEFAULT_DATA_DIR

    def mlebench_dir(self) -> Path | None:
        if self._mlebench_dir is not None:
            return Path(self._mlebench_dir).expanduser()
        value = os.environ.get("MLEBENCH_DIR") or self._config("MLEBENCH_DIR")
        return Path(value).expanduser() if value else None

    def scratch_dir(self) -> Path | None:
        """The config's SCRATCH_DIR (agents' scratch: never searched for runs), resolved. A config
        that cannot be read does not stop grading: a scratch is still known by its layout."""
        from mlebench_hpc.config import ConfigError

        try:
            value = self._config("SCRATCH_DIR")
        except ConfigError:
            return None
        return Path(os.path.realpath(Path(value).expanduser())) if value else None


def _is_below(path: Path, top: Path | None) -> bool:
    return top is not None and Path(os.path.realpath(path)).is_relative_to(top)


def _has_dirs(path: Path, names: set[str]) -> bool:
    """PATH holds each of NAMES as a real directory (links do not count)."""
    try:
        return all(stat.S_ISDIR(os.lstat(path / n).st_mode) for n in names)
    except OSError:
        return False


def agent_area_above(path: Path) -> str | None:
    """What agent-writable place PATH is or lies inside (an agent's scratch, a run directory), or
    None. PATH itself may be a run directory."""
    real = Path(os.path.realpath(path))
    if _has_dirs(real, _SCRATCH_LAYOUT):
        return f"the agent scratch {printable(real)}"
    for parent in real.parents:
        if _has_dirs(parent, _AGENT_DIRS) or (
            (parent / METADATA_NAME).is_file() and _has_dirs(parent, {"submission"})
        ):
            return f"the run directory {printable(parent)}"
        if _has_dirs(parent, _SCRATCH_LAYOUT):
            return f"the agent scratch {printable(parent)}"
    return None


def find_run_dirs(
    root: Path, scratch: Path | None = None, warn: Callable[[str], None] | None = None
) -> list[Path]:
    """Directories holding a metadata.json: root itself, or any below it, never searched below a run
    directory, an agent's scratch (SCRATCH, or any directory laid out as one) or a hidden directory.
    WARN gets one line for a root inside a run or a scratch, and for each scratch met on the way."""
    say = warn or (lambda _msg: None)
    outer = agent_area_above(root)
    if outer is not None:
        say(f"skipped {printable(root)}: it is or lies inside {outer}, not graded")
        return []
    if _is_below(root, scratch):
        say(f"skipped {printable(root)}: it lies in the agents' scratch (SCRATCH_DIR={scratch}), not graded")
        return []
    if (root / METADATA_NAME).is_file():
        return [root]
    found: list[Path] = []
    real_root = Path(os.path.realpath(root))
    for dirpath, dirnames, filenames in os.walk(root):  # symlinked dirs are not followed: no loops
        here = Path(dirpath)
        real = real_root / here.relative_to(root)
        if METADATA_NAME in filenames and here != root:
            found.append(here)
            dirnames[:] = []  # a run's code/ or logs/ may hold anything, including metadata.json
            continue
        if set(dirnames) >= _AGENT_DIRS:
            dirnames[:] = []  # a run whose metadata is gone: its agent-written dirs are not searched
            continue
        if here != root and (set(dirnames) >= _SCRATCH_LAYOUT or (scratch and real.is_relative_to(scratch))):
            say(f"skipped {printable(here)}: an agent's scratch, nothing below it is graded")
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
    return sorted(found)


def run_dir_problem(run_dir: Path, meta: RunRecord | Mapping[str, Any]) -> str | None:
    """Why RUN_DIR is not a run directory the host made, or None. META is its record (or its
    metadata.json, read as one: RecordError when it cannot be)."""
    record = meta if isinstance(meta, RunRecord) else RunRecord.from_json(run_dir, meta)
    comp = record.competition.strip()
    if not _COMPETITION_ID.fullmatch(comp):
        return "its competition_id is not a competition id"
    if record.agent_job_id:
        expected = run_dir_name(comp, record.agent_job_id)
    elif record.sweep_task_index is not None:
        # a sweep task that failed before its agent started: named after the array task
        array, index = record.array_job_id, record.sweep_task_index
        expected = run_dir_name(comp, array_task_id(array, index)) if array else ""
        if not array and run_dir.name.startswith(f"{comp}_") and run_dir.name.endswith(f"_{index}"):
            expected = run_dir.name  # a sweep without Slurm: <comp>_<local id>_<index>
    else:
        return "its metadata.json names no job (agent_job_id): not made by a job of ours"
    if run_dir.name != expected:
        return f"its name is not {expected or '<competition>_<jobid>'}, the run its metadata.json describes"
    for sub in _RUN_LAYOUT:
        try:
            st = os.lstat(run_dir / sub)
        except OSError:
            return f"it has no {sub}/ directory, which every run directory has"
        if not stat.S_ISDIR(st.st_mode):
            return f"its {sub}/ is not a directory"
    return None


def _read_record(run_dir: Path) -> RunRecord:
    """RUN_DIR's record, when RUN_DIR is a run directory the host made; RunSpecError (one line,
    saying why it is skipped) otherwise, a record that cannot be read as one included."""
    path = run_dir / METADATA_NAME
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise RunSpecError(f"{printable(path)}: not a regular file; not a run directory, skipped")
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunSpecError(
            f"{printable(path)}: not readable JSON ({one_line(exc, 120)}); fix or remove it"
        ) from None
    if not isinstance(data, dict) or not str(data.get("competition_id") or "").strip():
        raise RunSpecError(f"{printable(path)}: has no competition_id; not a run directory, skipped")
    try:
        record = RunRecord.from_json(run_dir, data)
    except RecordError as exc:
        raise RunSpecError(
            f"skipped {printable(run_dir)}: unreadable metadata.json ({printable(exc.reason)}); not graded"
        ) from None
    problem = run_dir_problem(run_dir, record)
    if problem:
        raise RunSpecError(f"skipped {printable(run_dir)}: {problem}; not graded")
    return record


def normalize_seed(seed: object) -> int | str | None:
    """A submissions file's seed as the report holds it: "" or none -> None, "3" or 3 -> 3, any other
    value as its text (upstream's file has no seed; a user's own labels are kept)."""
    if seed is None or isinstance(seed, bool):
        return None if seed is None else str(seed)
    if isinstance(seed, int):
        return seed
    text = str(seed).strip()
    if not text:
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def specs_from_dir(root: Path, dirs: DirResolver, warn: Callable[[str], None]) -> list[RunSpec]:
    """One RunSpec per run directory under root; anything not a host-made run is warned about and
    skipped."""
    specs: list[RunSpec] = []
    for run_dir in find_run_dirs(root, dirs.scratch_dir(), warn):
        try:
            record = _read_record(run_dir)
        except RunSpecError as exc:
            warn(str(exc))
            continue
        meta = record.meta
        recorded = meta.get("data_dir")
        specs.append(
            RunSpec(
                competition_id=record.competition.strip(),
                submission_path=run_dir / SUBMISSION_REL,
                data_dir=dirs.data_dir(),
                mlebench_dir=dirs.mlebench_dir(),
                run_dir=run_dir,
                seed=record.seed,
                isolation=meta.get("integrity"),
                collected=meta.get("submission") if isinstance(meta.get("submission"), dict) else None,
                recorded_data_dir=str(recorded) if recorded else None,
                agent_id=record.agent_id or None,
                failed_attempt=record.infrastructure_failure or None,
            )
        )
    return specs


def specs_from_jsonl(path: Path, dirs: DirResolver) -> list[RunSpec]:
    """Upstream's submissions file: one {"competition_id", "submission_path"} object per line.

    Blank lines and lines starting with # or // are skipped, as upstream does. Relative
    submission paths are taken relative to the file's directory.
    """
    specs: list[RunSpec] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", "//")):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise RunSpecError(
                f"{path}:{lineno}: not a JSON object; expected "
                '{"competition_id": ..., "submission_path": ...}'
            ) from None
        if not isinstance(obj, dict) or not obj.get("competition_id") or not obj.get("submission_path"):
            raise RunSpecError(f"{path}:{lineno}: needs both competition_id and submission_path")
        sub = Path(str(obj["submission_path"])).expanduser()
        if not sub.is_absolute():
            sub = path.parent / sub
        specs.append(
            RunSpec(
                competition_id=str(obj["competition_id"]),
                submission_path=sub,
                data_dir=dirs.data_dir(),
                mlebench_dir=dirs.mlebench_dir(),
                seed=normalize_seed(obj.get("seed")),
            )
        )
    return specs
