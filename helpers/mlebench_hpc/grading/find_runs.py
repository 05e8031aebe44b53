"""Finding what to grade: run directories (metadata.json) or upstream's submissions file, and
the data and upstream-checkout directories each run is graded against."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlebench_hpc.config import UPSTREAM_DEFAULT_DATA_DIR
from mlebench_hpc.grading.messages import one_line
from mlebench_hpc.runs import METADATA as METADATA_NAME
from mlebench_hpc.untrusted import SUBMISSION_REL

# Directories never holding runs: agent scratch and the run's own bind mounts hold arbitrary files.
_SKIP_DIRS = {".git", "__pycache__", "node_modules", ".venv"}
# A run directory's agent-writable subdirectories (bound into the agent container).
_AGENT_DIRS = {"submission", "logs", "code"}


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
    seed: Any = None
    isolation: Any = None
    collected: Any = None


class DirResolver:
    """Data and upstream-checkout directories, in the documented order of precedence.

    data dir: --data-dir > run metadata.json `data_dir` > config DATA_DIR > ~/.cache/mle-bench/data.
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

    def data_dir(self, metadata: dict[str, Any] | None = None) -> Path:
        if self._data_dir is not None:
            return Path(self._data_dir).expanduser()
        meta_dir = (metadata or {}).get("data_dir")
        if meta_dir:
            return Path(str(meta_dir)).expanduser()
        cfg = self._config("DATA_DIR")
        if cfg:
            return Path(cfg).expanduser()
        return UPSTREAM_DEFAULT_DATA_DIR

    def mlebench_dir(self) -> Path | None:
        if self._mlebench_dir is not None:
            return Path(self._mlebench_dir).expanduser()
        value = os.environ.get("MLEBENCH_DIR") or self._config("MLEBENCH_DIR")
        return Path(value).expanduser() if value else None


def find_run_dirs(root: Path) -> list[Path]:
    """Directories holding a metadata.json: root itself, or any below it (not below a run)."""
    if (root / METADATA_NAME).is_file():
        return [root]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):  # symlinked dirs are not followed: no loops
        if METADATA_NAME in filenames and Path(dirpath) != root:
            found.append(Path(dirpath))
            dirnames[:] = []  # a run's code/ or logs/ may hold anything, including metadata.json
            continue
        if set(dirnames) >= _AGENT_DIRS:
            dirnames[:] = []  # a run whose metadata is gone: its agent-written dirs are not searched
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
    return sorted(found)


def _read_metadata(run_dir: Path) -> dict[str, Any]:
    path = run_dir / METADATA_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunSpecError(f"{path}: not readable JSON ({one_line(exc, 120)}); fix or remove it") from None
    if not isinstance(data, dict) or not str(data.get("competition_id") or "").strip():
        raise RunSpecError(f"{path}: has no competition_id; not a run directory, skipped")
    return data


def normalize_seed(seed: Any) -> Any:
    """The scripts record seeds as strings ("" outside a sweep): "" -> None, "3" -> 3."""
    if isinstance(seed, str):
        seed = seed.strip()
        if not seed:
            return None
        if seed.lstrip("-").isdigit():
            return int(seed)
    return seed


def specs_from_dir(root: Path, dirs: DirResolver, warn: Callable[[str], None]) -> list[RunSpec]:
    """One RunSpec per run directory under root; unreadable metadata is warned about and skipped."""
    specs: list[RunSpec] = []
    for run_dir in find_run_dirs(root):
        try:
            meta = _read_metadata(run_dir)
        except RunSpecError as exc:
            warn(str(exc))
            continue
        specs.append(
            RunSpec(
                competition_id=str(meta["competition_id"]).strip(),
                submission_path=run_dir / SUBMISSION_REL,
                data_dir=dirs.data_dir(meta),
                mlebench_dir=dirs.mlebench_dir(),
                run_dir=run_dir,
                seed=normalize_seed(meta.get("seed")),
                isolation=meta.get("integrity"),
                collected=meta.get("submission") if isinstance(meta.get("submission"), dict) else None,
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
                data_dir=dirs.data_dir(obj),
                mlebench_dir=dirs.mlebench_dir(),
                seed=normalize_seed(obj.get("seed")),
            )
        )
    return specs
