"""The Dockerfile translator without apptainer: Docker's syntax rules, the context (.dockerignore,
sources, links), refusals and notes. tests/bats/test_agent_builds.bats builds with it for real and
compares with Docker's images."""

from __future__ import annotations

import gzip
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlebench_hpc.images.dockerfile_context import Ignore
from mlebench_hpc.images.dockerfile_def import dockerfile_def_cmd, retarget_from, translate
from mlebench_hpc.images.dockerfile_syntax import (
    DockerfileError,
    UnknownVariable,
    expand,
    key_values,
    lex_word,
    parse,
    to_sh,
)


def test_continuations_skip_comment_and_empty_lines_as_docker_does() -> None:
    # docker 20.10 built this RUN as `echo "a"   b   c` (one instruction)
    df = parse('FROM x\nRUN echo "a" \\\n# a comment\n  b \\\n\n  c\nrun last\nRUN tail \\')
    assert [(i.line, i.keyword, i.args) for i in df.instructions] == [
        (1, "FROM", "x"),
        (2, "RUN", 'echo "a"   b   c'),
        (7, "RUN", "last"),
        (8, "RUN", "tail"),
    ]


def test_escape_directive_backtick() -> None:
    df = parse("# escape=`\nFROM x\nRUN a `\n  b\\c")
    assert df.escape == "`"
    assert df.instructions[1].args == "a   b\\c"
    with pytest.raises(DockerfileError, match="escape"):
        parse("# escape=x\nFROM y")


def test_env_values_as_docker_reads_them() -> None:
    pairs = key_values("A=1 B=\"two words\" C=$A D=${X:-dflt} E='$A' F=\\$A", "\\", "ENV")
    values = {"X": "given", "A": "old"}
    got = {k: expand(t, values) for k, t in pairs}
    # docker's image config for the same line (with A=old, X=given before it)
    assert got == {"A": "1", "B": "two words", "C": "old", "D": "given", "E": "$A", "F": "$A"}
    legacy = key_values("G some value $A", "\\", "ENV")
    assert legacy[0][0] == "G" and expand(legacy[0][1], {"A": "1"}) == "some value 1"


def test_substitution_forms() -> None:
    v = {"SET": "x", "EMPTY": ""}
    assert expand(lex_word("${SET:-d}-${EMPTY:-d}-${SET:+w}-${EMPTY:+w}", "\\"), v) == "x-d-w-"
    assert expand(lex_word("${EMPTY:-${SET}/in}", "\\"), v) == "x/in"
    assert expand(lex_word("$NOPE", "\\"), {}, strict=False) == ""
    with pytest.raises(UnknownVariable):
        expand(lex_word("$NOPE", "\\"), {})
    with pytest.raises(DockerfileError, match="unsupported substitution"):
        lex_word("${A#x}", "\\")


@pytest.mark.parametrize(
    "word",
    [
        "plain",
        "${A}/x",
        '"quoted $A" tail',
        "'$A literal'",
        "\\$A",
        '${B:-"d e"}$A',
        "${A:+yes}${B:+no}",
        'back`tick "and \\" quote"',
        "${B:-${A}x}",
    ],
)
def test_the_build_shell_expands_a_word_to_dockers_value(word: str) -> None:
    """to_sh is what the build's /bin/sh evaluates: it must give expand()'s value."""
    toks = lex_word(word, "\\")
    want = expand(toks, {"A": "va l'$"}, strict=False)
    out = subprocess.run(
        ["/bin/sh", "-c", f"printf %s {to_sh(toks)}"],
        env={"A": "va l'$", "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == want


def test_dockerignore_rules(tmp_path: Path) -> None:
    ig = Ignore(["# comment", "*.md", "!README.md", "**/secret*", "build/", "/tmp?", "[ab].txt"])
    assert ig.ignored("notes.md") and not ig.ignored("README.md")
    assert ig.ignored("a/b/secret.key") and ig.ignored("secret")
    assert ig.ignored("build/x/y.py")  # below an excluded directory
    assert ig.ignored("tmp1") and not ig.ignored("tmp12")
    assert ig.ignored("a.txt") and not ig.ignored("c.txt")
    assert not ig.ignored("sub/notes.md")  # * does not cross /


def _agent(tmp_path: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    ctx = tmp_path / "agent"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    return ctx


def _translate(tmp_path: Path, ctx: Path):  # noqa: ANN202 - a test helper
    env = tmp_path / "env.sif"
    env.write_bytes(b"stand-in")
    return translate(
        ctx / "Dockerfile",
        ctx,
        tmp_path / "out",
        {"AGENT_DIR": "/home/agent"},
        {"mlebench-env": str(env)},
        "/home",
    )


def test_copy_of_a_directory_honours_dockerignore_and_keeps_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside-secret"
    outside.write_text("never read")
    ctx = _agent(
        tmp_path,
        "FROM mlebench-env\nARG AGENT_DIR\nCOPY . ${AGENT_DIR}\n",
        {"start.sh": "echo hi", ".dockerignore": "*.log\n", "x.log": "no", "sub/m.py": "m"},
    )
    os.symlink(outside, ctx / "link")
    (ctx / "start.sh").chmod(0o750)
    t = _translate(tmp_path, ctx)
    assert t.bootstrap == "localimage" and t.source == str(tmp_path / "env.sif")
    with tarfile.open(t.payloads[0]) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"Dockerfile", ".dockerignore", "start.sh", "sub", "sub/m.py", "link"}
    assert members["link"].issym() and members["link"].linkname == str(outside)
    assert members["start.sh"].mode == 0o750 and members["start.sh"].uid == 0
    text = (tmp_path / "out/build.def").read_text()
    assert text.startswith(f"Bootstrap: localimage\nFrom: {tmp_path / 'env.sif'}\n")
    assert "Dockerfile line 3: COPY . ${AGENT_DIR}" in text


def test_wildcards_several_sources_and_chmod(tmp_path: Path) -> None:
    ctx = _agent(
        tmp_path,
        "FROM mlebench-env\nCOPY --chmod=700 *.txt b.py /dst/\n",
        {"a.txt": "", "c.txt": "", "b.py": ""},
    )
    t = _translate(tmp_path, ctx)
    with tarfile.open(t.payloads[0]) as tar:
        assert sorted((m.name, m.mode) for m in tar.getmembers()) == [
            ("a.txt", 0o700),
            ("b.py", 0o700),
            ("c.txt", 0o700),
        ]
    ctx2 = tmp_path / "two"
    ctx2.mkdir()
    bad = _agent(ctx2, "FROM mlebench-env\nCOPY a.txt b.txt /dst\n", {"a.txt": "", "b.txt": ""})
    with pytest.raises(DockerfileError, match="line 2: COPY a.txt b.txt /dst: .*ending in /"):
        _translate(ctx2, bad)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("FROM other", "a second FROM"),
        ("COPY --from=builder /x /y", "COPY --from"),
        ("ADD https://example.invalid/x.tgz /x", "ADD of a URL"),
        ("ADD pack.tar.gz /x/", "ADD of archive pack.tar.gz"),
        ("USER nonroot", "USER other than root"),
        ('SHELL ["/bin/bash", "-c"]', "SHELL changes"),
        ("ONBUILD RUN true", "ONBUILD"),
        ("VOLUME /data", "VOLUME"),
        ("RUN --mount=type=cache,target=/root true", "--mount"),
        ("FROBNICATE x", "unknown instruction FROBNICATE"),
        ("COPY missing.txt /x", "missing.txt: not in the build context"),
        ("COPY ../escape /x", "outside the build context"),
        ("COPY ignored.txt /x", "excluded by .dockerignore"),
        ("COPY ${FROM_BASE}/x /x", "only the base image could define"),
    ],
)
def test_refused_before_building_in_one_line_naming_line_and_instruction(
    tmp_path: Path, line: str, why: str
) -> None:
    ctx = _agent(
        tmp_path,
        f"FROM mlebench-env\nRUN true\n{line}\nRUN echo after\n",
        {"ignored.txt": "", ".dockerignore": "ignored.txt\n"},
    )
    (ctx / "pack.tar.gz").write_bytes(gzip.compress(b"x" * 600))
    result = CliRunner().invoke(
        dockerfile_def_cmd,
        [
            str(ctx / "Dockerfile"),
            "--context",
            str(ctx),
            "--out",
            str(tmp_path / "out"),
            "--from",
            f"mlebench-env={ctx / 'Dockerfile'}",
        ],
    )
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert len(message.splitlines()) == 1
    assert f"Dockerfile line 3: {line.split()[0]}" in message and why in message
    assert not (tmp_path / "out/build.def").exists()


def test_cmd_entrypoint_expose_are_noted_not_refused(tmp_path: Path) -> None:
    ctx = _agent(tmp_path, 'FROM mlebench-env\nCMD ["bash"]\nENTRYPOINT ["/x"]\nEXPOSE 80\nUSER root\n')
    t = _translate(tmp_path, ctx)
    assert len(t.notes) == 3
    assert all("not used by mlebench-hpc's launcher" in n for n in t.notes)
    assert t.notes[0].startswith("Dockerfile line 2: CMD")


def test_from_platform_and_registry_reference(tmp_path: Path) -> None:
    ctx = _agent(
        tmp_path, "ARG BASE=127.0.0.1:5000/x/base:1\nFROM --platform=linux/amd64 ${BASE} AS env\nRUN true\n"
    )
    t = translate(ctx / "Dockerfile", ctx, tmp_path / "out", {}, {}, "/")
    assert (t.bootstrap, t.source) == ("docker", "127.0.0.1:5000/x/base:1")
    (tmp_path / "arm").mkdir()
    arm = _agent(tmp_path / "arm", "FROM --platform=linux/s390x x\n")
    with pytest.raises(DockerfileError, match="--platform=linux/s390x"):
        translate(arm / "Dockerfile", arm, tmp_path / "out2", {}, {}, "/")


def test_retarget_changes_only_the_from_line(tmp_path: Path) -> None:
    text = "# c\nFROM mlebench-env\nARG X\nRUN echo FROM mlebench-env\n"
    f = tmp_path / "Dockerfile"
    f.write_text(text)
    out = retarget_from(f, "mlebench-env", "site/env:2")
    assert out == text.replace("FROM mlebench-env\nARG", "FROM site/env:2\nARG")
