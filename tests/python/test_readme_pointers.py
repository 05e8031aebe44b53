"""The README's pointers into the code stay true: every `helpers/mlebench_hpc/...` path it names
exists, every `mh_*` function it names is defined in scripts_hpc/, and where it says which file
holds one (`mh_x` ... in `scripts_hpc/lib/y.sh`), that file does; every `*.py`, `*.sh` and `*.bats`
file it names (and every `*.py` a module docstring of helpers/mlebench_hpc/ names) is a file git
tracks; every `mlebench-hpc X [Y]` and `run Y` it shows is a command of the CLI, every `make X` a
target of the Makefile. Each check has a control that feeds it stale pointers."""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

import click
from mlebench_hpc.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PATH = re.compile(r"helpers/mlebench_hpc/[A-Za-z0-9_./-]*")
FUNCTION = re.compile(r"\bmh_[a-z_]+\b")
# `mh_x` (in|by|from ...) `scripts_hpc/....sh`: the file the README says defines it, a few words on
FUNCTION_IN = re.compile(r"`(mh_[a-z_]+)`[^`\n]{0,40}`(scripts_hpc/[A-Za-z0-9_./-]+\.sh)`")
# a file name, with its directories and `*` wildcards (`bench/llm_*_bench.py`)
FILE = re.compile(r"[\w./*<>$~-]*[\w*]\.(?:py|sh|bats)\b")
# Upstream MLE-bench's files, named as upstream names them: they are in its checkout, not ours.
UPSTREAM_FILES = {
    "run_agent.py",  # upstream's launcher, the README's "here vs upstream" table
    "experiments/aggregate_grading_reports.py",  # upstream's per-split figures, which ours equal
    "mlebench/grade_helpers.py",  # upstream's CompetitionReport (results/report.py)
}
FENCED = re.compile(r"^```[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
CLI_CALL = re.compile(r"\bmlebench-hpc ([a-z][a-z-]*)(?: ([a-z][a-z/-]*[a-z]))?")
RUN_PHASE = re.compile(r"^run ([a-z][a-z/-]*[a-z])")
MAKE_CALL = re.compile(r"\bmake ([a-z][a-z-]*)")


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


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    return [f for f in out.stdout.split("\0") if f]


def names_a_file(token: str, files: Iterable[str]) -> bool:
    """TOKEN is a tracked file or the tail of one's path (`run/store.py`, `test_lib.bats`)."""
    return any(fnmatch.fnmatchcase(f, token) or fnmatch.fnmatchcase(f, "*/" + token) for f in files)


def missing_files(text: str, files: list[str]) -> list[str]:
    """The *.py, *.sh and *.bats files TEXT names that git does not track. An absolute path
    (`/home/agent/start.sh`, `~/...`, `$MLEBENCH_DIR/...`) is outside the checkout: not checked."""
    named = {t for t in FILE.findall(text) if not t.startswith(("/", "~", "$")) and t not in UPSTREAM_FILES}
    return sorted(t for t in named if not names_a_file(t, files))


def module_docstrings(root: Path) -> dict[str, str]:
    """Each module of helpers/mlebench_hpc/ (relative to ROOT) -> its docstring."""
    docs = {}
    for path in sorted((root / "helpers" / "mlebench_hpc").rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text()), clean=False)
        if doc:
            docs[str(path.relative_to(root))] = doc
    return docs


def missing_in_docstrings(docs: Mapping[str, str], files: list[str]) -> list[str]:
    return [f"{module}: {token}" for module, doc in docs.items() for token in missing_files(doc, files)]


def code_of(readme: str) -> list[str]:
    """What the README shows as code: its fenced blocks and its `inline` spans (never prose, where
    "make a" and "make arrays" are English)."""
    return [*FENCED.findall(readme), *re.findall(r"`([^`]+)`", FENCED.sub("", readme))]


def wrong_commands(readme: str) -> list[str]:
    """`mlebench-hpc X` whose X is not in cli.py's COMMANDS; `mlebench-hpc G Y` or `run Y` (Y may
    be `a/b`) whose group G has no sub-command Y."""
    ctx = click.Context(main)
    wrong: list[str] = []

    def check_sub(group: str, subs: str, shown: str) -> None:
        command = main.get_command(ctx, group)
        if isinstance(command, click.Group):
            known = command.list_commands(ctx)
            wrong.extend(
                f"{shown}: {group} has no sub-command {s}" for s in subs.split("/") if s not in known
            )

    for code in code_of(readme):
        for name, subs in CLI_CALL.findall(code):
            if name not in COMMANDS:
                wrong.append(f"mlebench-hpc {name}: not a command of cli.py")
            elif subs:
                check_sub(name, subs, f"mlebench-hpc {name} {subs}")
        for subs in RUN_PHASE.findall(code):
            check_sub("run", subs, f"run {subs}")
    return sorted(set(wrong))


def make_targets(makefile: str) -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)\s*:(?!=)", makefile, re.MULTILINE))


def wrong_make_targets(readme: str, targets: set[str]) -> list[str]:
    named = {t for code in code_of(readme) for t in MAKE_CALL.findall(code)}
    return sorted(f"make {t}" for t in named if t not in targets)


def test_every_helpers_path_the_readme_names_exists() -> None:
    readme = README.read_text()
    assert len(set(PATH.findall(readme))) >= 3  # the pattern finds the README's paths at all
    assert missing_paths(readme, REPO) == []


def test_every_mh_function_the_readme_names_is_where_it_says() -> None:
    readme, where = README.read_text(), shell_functions()
    assert FUNCTION.findall(readme) and FUNCTION_IN.findall(readme)  # it names some, with a file
    assert wrong_functions(readme, where) == []


def test_every_file_the_readme_names_is_tracked() -> None:
    readme = README.read_text()
    assert len(set(FILE.findall(readme))) >= 50  # the pattern finds the README's files at all
    assert missing_files(readme, tracked_files()) == []


def test_every_file_a_module_docstring_names_is_tracked() -> None:
    docs = module_docstrings(REPO)
    assert sum(len(FILE.findall(d)) for d in docs.values()) >= 10  # docstrings do name files
    assert missing_in_docstrings(docs, tracked_files()) == []


def test_every_command_the_readme_shows_exists() -> None:
    readme = README.read_text()
    shown = [c for code in code_of(readme) for c in CLI_CALL.findall(code)]
    assert any(subs for _, subs in shown) and any(RUN_PHASE.findall(c) for c in code_of(readme))
    assert wrong_commands(readme) == []


def test_every_make_target_the_readme_shows_exists() -> None:
    readme, targets = README.read_text(), make_targets((REPO / "Makefile").read_text())
    assert {"demo", "test", "grade", "sif"} <= targets  # the pattern reads the Makefile at all
    assert wrong_make_targets(readme, targets) == []


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


def test_the_new_checks_catch_stale_pointers() -> None:
    """Control: a moved module, a renamed command, a sub-command a group lacks, a run phase and a
    make target that do not exist are each reported; what exists, upstream's files and paths
    outside the checkout are not."""
    stale = (
        "Per split as upstream's `experiments/aggregate_grading_reports.py` (`grading/aggregation.py`,\n"
        "tested by `tests/bats/test_results.bats` and test_aggregation.bats), read with `sif_image.py`;\n"
        "`results/aggregation.py`, `bench/llm_*_bench.py`, `scripts_hpc/lib/*.sh`, `/home/agent/start.sh`.\n"
        "`mlebench-hpc run server-died`, `mlebench-hpc agent list/shows`, `mlebench-hpc sweep-status`,\n"
        "`mlebench-hpc run start`, `run died`, `run start/check/stops`; `make grade`, `make tests`.\n"
        "```bash\nmlebench-hpc llm-proxy serve\nmlebench-hpc llm-proxy start\nmake demo-all\n```\n"
        "Slurm cannot make arrays of heterogeneous jobs.\n"
    )
    files = tracked_files()
    assert missing_files(stale, files) == ["grading/aggregation.py", "sif_image.py", "test_aggregation.bats"]
    assert wrong_commands(stale) == [
        "mlebench-hpc agent list/shows: agent has no sub-command shows",
        "mlebench-hpc llm-proxy start: llm-proxy has no sub-command start",
        "mlebench-hpc run server-died: run has no sub-command server-died",
        "mlebench-hpc sweep-status: not a command of cli.py",
        "run start/check/stops: run has no sub-command stops",
    ]
    targets = make_targets((REPO / "Makefile").read_text())
    assert wrong_make_targets(stale, targets) == ["make demo-all", "make tests"]
    docs = {
        "helpers/mlebench_hpc/llm/x.py": "Keys (llm_keys.py), the owner (socket_owner.py), `run_agent.py`.",
        "helpers/mlebench_hpc/run/y.py": "Read from the SIF (images/sif.py, never `sif_image.py`).",
    }
    assert missing_in_docstrings(docs, files) == [
        "helpers/mlebench_hpc/llm/x.py: llm_keys.py",
        "helpers/mlebench_hpc/run/y.py: sif_image.py",
    ]
