"""Competition sets: a file of one competition id per line, or a split of upstream MLE-bench by name.

Upstream keeps its sets as `experiments/splits/<name>.txt` (split75, low, medium, high, dev,
spaceship-titanic, ...; `all.txt` was renamed `split75.txt`) and publishes its numbers per split.
`--competitions X` (alias `--competition-set`, upstream run_agent.py's flag) is X when such a file
exists here, else `$MLEBENCH_DIR/experiments/splits/X.txt` (X with or without `.txt`), else the copy
of upstream's split shipped in data/splits/ (PROVENANCE.md there); `all` is `all.txt` of the
checkout when it exists, else `split75.txt`, said in one note line. Blank lines and `#` comments are
ignored (upstream's files have neither, so they read the same)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlebench_hpc.errors import HelperError

SPLITS_DIR = Path("experiments") / "splits"
SHIPPED_SPLITS = Path(__file__).resolve().parent / "data" / "splits"
UPSTREAM_SPLITS: tuple[str, ...] = (
    "low",
    "medium",
    "high",
    "split75",
    "dev",
    "spaceship-titanic",
    "systemcard",
)
OLD_ALL = "all"  # upstream's name for split75 before it was renamed
ALL_NOW = "split75"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class CompetitionSet:
    path: Path
    name: str  # the split's name, or the file's name
    split: bool  # one of upstream's experiments/splits/ files

    def describe(self) -> str:
        return f"upstream's split {self.name}" if self.split else f"the list {self.path.name}"


def is_split_file(path: Path) -> bool:
    """PATH lies in an `experiments/splits/` directory (upstream's layout) or is a shipped split."""
    if path.parent.resolve() == SHIPPED_SPLITS:
        return True
    return path.parent.name == SPLITS_DIR.name and path.parent.parent.name == SPLITS_DIR.parent.name


def split_name(value: str) -> str:
    """A split's name as upstream has it now: `all` is split75."""
    name = value.removesuffix(".txt")
    return ALL_NOW if name == OLD_ALL else name


def competition_set(path: Path) -> CompetitionSet:
    split = is_split_file(path)
    return CompetitionSet(path, path.stem if split else path.name, split)


def _split_names(splits: Path) -> str:
    names = sorted(p.stem for p in splits.glob("*.txt")) if splits.is_dir() else []
    return ", ".join(names) if names else "none"


def resolve_competition_set(
    value: str, mlebench_dir: str | None, cwd: Path | None = None
) -> tuple[Path, str]:
    """(the file VALUE names, a note line or ''). HelperError (one line) when there is none."""
    here = Path(value).expanduser()
    if not here.is_absolute() and cwd is not None:
        here = cwd / here
    if here.is_file():
        return here.resolve(), ""
    name = value.removesuffix(".txt")
    shipped = ", ".join(UPSTREAM_SPLITS)
    if "/" in value or not _SPLIT_NAME.match(name):
        raise HelperError(
            f"competition list {value} not found: give a file with one competition id per line, "
            f"or a split name ({shipped}, or one of $MLEBENCH_DIR/experiments/splits/)"
        )
    splits = Path(mlebench_dir).expanduser() / SPLITS_DIR if mlebench_dir else None
    if splits is not None:
        path = splits / f"{name}.txt"
        if path.is_file():
            return path.resolve(), ""
        now = splits / f"{ALL_NOW}.txt"
        if name == OLD_ALL and now.is_file():
            return now.resolve(), f"note: upstream renamed {OLD_ALL}.txt to {ALL_NOW}.txt: using {now}"
    mine = SHIPPED_SPLITS / f"{split_name(name)}.txt"
    if mine.is_file():
        note = (
            f"note: upstream renamed {OLD_ALL}.txt to {ALL_NOW}.txt: using {mine}" if name == OLD_ALL else ""
        )
        return mine, note
    where = f"{splits} ({_split_names(splits)}) or " if splits is not None else ""
    raise HelperError(
        f"competition list {value} not found here: give a file with one competition id per line, "
        f"or a split name of {where}upstream's ({shipped})"
    )


def read_competition_list(path: Path) -> tuple[list[str], list[str]]:
    """One id per line; blanks and `#` comments ignored (upstream split files work as they are).
    Returns (ids without duplicates, problems)."""
    if not path.is_file():
        return [], [f"competition list {path} not found"]
    ids: list[str] = []
    problems: list[str] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not _ID.match(line):
            problems.append(f"{path}:{lineno}: {line!r} is not one competition id (one id per line)")
        elif line not in ids:
            ids.append(line)
    if not ids and not problems:
        problems.append(f"competition list {path} holds no competition id")
    return ids, problems


@dataclass(frozen=True)
class AskedSet:
    """The competition set(s) an agent's sweep submissions asked for (sweep.json `asked`)."""

    names: tuple[str, ...]  # split names, or list file names
    split: bool  # every one of them a split of upstream's
    ids: tuple[str, ...]  # their competitions, in order, each once

    def describe(self) -> str:
        names = " + ".join(self.names)
        kind = "upstream's split" if self.split else "competition set"
        if len(self.names) > 1:
            kind += "s"
        return f"{kind} {names} ({len(self.ids)} competitions)"


def asked_set(asked: list[dict[str, Any]]) -> AskedSet | None:
    """The union of what ASKED (sweep.json `asked` records) named, or None when none names its
    competitions (a group not made by sweeps)."""
    names: list[str] = []
    ids: list[str] = []
    splits: list[bool] = []
    for record in asked:
        comps = record.get("competitions")
        if not isinstance(comps, list):
            continue
        path = Path(str(record.get("competitions_file") or ""))
        split = bool(record["split"]) if "split" in record else is_split_file(path)
        name = str(record.get("competition_set") or (path.stem if split else path.name) or "?")
        if name not in names:
            names.append(name)
            splits.append(split)
        ids += [str(c) for c in comps if str(c) not in ids]
    if not ids:
        return None
    return AskedSet(tuple(names), all(splits), tuple(ids))
