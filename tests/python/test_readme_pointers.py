"""The README's pointers into the code stay true: every `helpers/mlebench_hpc/...` path it names
exists, every `mh_*` function it names is defined in scripts_hpc/, and where it says which file
holds one (`mh_x` ... in `scripts_hpc/lib/y.sh`), that file does."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PATH = re.compile(r"helpers/mlebench_hpc/[A-Za-z0-9_./-]*")
FUNCTION = re.compile(r"\bmh_[a-z_]+\b")
# `mh_x` (in|by|from ...) `scripts_hpc/....sh`: the file the README says defines it, a few words on
FUNCTION_IN = re.compile(r"`(mh_[a-z_]+)`[^`\n]{0,40}`(scripts_hpc/[A-Za-z0-9_./-]+\.sh)`")


def defined_in(text: str) -> set[str]:
    return set(re.findall(r"^\s*(?:function\s+)?(mh_[a-z_]+)\s*\(\)", text, re.MULTILINE))


def shell_functions() -> dict[str, set[str]]:
    """Each mh_* function of scripts_hpc/ -> the files (relative to the checkout) defining it."""
    where: dict[str, set[str]] = {}
    for path in sorted((REPO / "scripts_hpc").rglob("*.sh")):
        for name in defined_in(path.read_text()):
            where.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return where


def missing_paths(readme: str, root: Path) -> list[str]:
    named = {m.rstrip(".,;:)") for m in PATH.findall(readme)}
    return sorted(p for p in named if not (root / p).exists())


def wrong_functions(readme: str, where: dict[str, set[str]]) -> list[str]:
    wrong = [
        f"{name} is not defined in scripts_hpc/"
        for name in sorted(set(FUNCTION.findall(readme)))
        if name not in where
    ]
    for name, file in FUNCTION_IN.findall(readme):
        if name in where and file not in where[name]:
            wrong.append(f"{name} is in {', '.join(sorted(where[name]))}, not {file}")
    return wrong


def test_every_helpers_path_the_readme_names_exists() -> None:
    readme = README.read_text()
    assert len(set(PATH.findall(readme))) >= 3  # the pattern finds the README's paths at all
    assert missing_paths(readme, REPO) == []


def test_every_mh_function_the_readme_names_is_where_it_says() -> None:
    readme, where = README.read_text(), shell_functions()
    assert FUNCTION.findall(readme) and FUNCTION_IN.findall(readme)  # it names some, with a file
    assert wrong_functions(readme, where) == []


def test_the_checks_catch_stale_pointers() -> None:
    """Control: stale pointers (a function said to be in the wrong file, one that does not exist, a
    module path that does not) are caught."""
    stale = (
        "The agent container is started (by `mh_agent_cmd` in `scripts_hpc/lib.sh`, the only place).\n"
        "`mh_discover_url` resolves it; see `helpers/mlebench_hpc/discovery.py` and "
        "`helpers/mlebench_hpc/run/discovery.py`.\n"
    )
    where = shell_functions()
    assert wrong_functions(stale, where) == [
        "mh_discover_url is not defined in scripts_hpc/",
        "mh_agent_cmd is in scripts_hpc/lib/containers.sh, not scripts_hpc/lib.sh",
    ]
    assert missing_paths(stale, REPO) == ["helpers/mlebench_hpc/discovery.py"]
