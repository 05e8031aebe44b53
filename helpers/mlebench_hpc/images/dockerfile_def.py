"""An agent's Dockerfile carried out by `apptainer build --fakeroot`, in Docker's order.

`mlebench-hpc dockerfile-def DOCKERFILE --context DIR --out DIR` writes DIR/build.def: Bootstrap
from what FROM names (`--from mlebench-env=IMAGE`: a SIF path or a registry reference), and one
%post script that carries out every instruction in order, as Docker's classic builder does:

- ARG (the values given with --build-arg, else the default), ENV (kept for the image: written to
  $APPTAINER_ENVIRONMENT, apptainer's %environment of a build), `${VAR}` substituted where Docker
  substitutes (by the build's shell, so the base image's own variables such as PATH are known);
- RUN in shell form (`/bin/sh -c`) or JSON form, each in a clean environment (the base image's
  variables, the ARGs and ENVs so far, HOME) in the WORKDIR of its point; a failing RUN fails the
  build with one line naming its Dockerfile line;
- COPY/ADD of files of the context (dockerfile_context.py: .dockerignore, wildcards, a directory's
  contents, several sources into a directory, --chmod, --chown), WORKDIR (created), LABEL, USER root.

What it cannot carry out is refused before anything is built, in one line naming the instruction and
its line: a second FROM, COPY --from, ADD of a URL or an archive, USER other than root, SHELL,
ONBUILD, VOLUME, RUN --mount, unknown instructions. CMD, ENTRYPOINT, EXPOSE, HEALTHCHECK and
STOPSIGNAL change no file and our launcher does not use them: one note each, not an error.
`dockerfile-def --retarget NAME=IMAGE` instead writes a copy of the Dockerfile whose FROM NAME
names IMAGE and nothing else changed (the Docker builder's ENV_IMAGE: Docker 20.10 without buildx
cannot map an image name at build time).
"""

from __future__ import annotations

import platform
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click

from mlebench_hpc.images.dockerfile_context import Context, is_archive, write_payload
from mlebench_hpc.images.dockerfile_syntax import (
    Dockerfile,
    DockerfileError,
    Instruction,
    Tokens,
    UnknownVariable,
    expand,
    json_array,
    key_values,
    lex_word,
    parse,
    split_words,
    to_sh,
    valid_name,
)

STAGE = "/.mlebench-build"  # where the build's own files are, removed at the end of %post
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOT_USED = {"CMD", "ENTRYPOINT", "EXPOSE", "HEALTHCHECK", "STOPSIGNAL"}
REFUSED = {
    "SHELL": "SHELL changes how every later RUN is started; write the commands for /bin/sh",
    "ONBUILD": "ONBUILD runs in images built from this one; put its instructions where they are needed",
    "VOLUME": "VOLUME discards what later RUNs write below it; remove it (runs bind what they need)",
}
# The environment scripts of an image, in the order apptainer sources them: Docker's config Env
# (10-docker2singularity.sh), %environment (90-) and what builds wrote from %post (91-).
_ENV_SCRIPTS = " ".join(
    f"/.singularity.d/env/{n}.sh" for n in ("10-docker2singularity", "90-environment", "91-environment")
)

_PREAMBLE = r"""set +x
umask 022
B=@STAGE@
mh_fail() { printf 'mlebench-hpc: error: %s\n' "$*" >&2; exit 1; }
mh_step() { printf '\n### Step %s\n' "$*"; }
command -v env >/dev/null 2>&1 || mh_fail "the base image has no env command: build on mlebench-env"
command -v tar >/dev/null 2>&1 || mh_fail "the base image has no tar (COPY needs it): build on mlebench-env"
# The base image's own variables (what Docker keeps in its config): its environment scripts, read
# by a clean shell.
env -i PATH=@PATH@ /bin/sh -c 'for f in @ENVSCRIPTS@; do if [ -f "$f" ]; then . "$f"; fi; done
    unset PWD OLDPWD SHLVL _; export -p' >"$B/base.env" || mh_fail "cannot read the base image's environment"
: >"$B/state.sh"
# mh_sh CODE [ARG...]: CODE in a clean shell with the Dockerfile's state at this point (the base's
# variables, ARG and ENV so far).
mh_sh() {
    mh_code=$1; shift
    env -i /bin/sh -c '. @STAGE@/base.env; . @STAGE@/state.sh
        [ -n "${HOME+x}" ] || export HOME=/root; [ -n "${PATH+x}" ] || export PATH=@PATH@
        '"$mh_code" "$@"
}
# mh_in DIR CMD...: CMD with that state, in DIR (a RUN).
mh_in() { mh_dir=$1; shift; mh_sh 'cd "$0" && exec "$@"' "$mh_dir" "$@"; }
mh_abs() { case $1 in /*) printf %s "$1" ;; *) printf %s "${mh_wd%/}/$1" ;; esac; }
# mh_copy TAR DEST NAME: the tar's files into DEST; with NAME (one file), DEST may name the file.
mh_copy() {
    if [ -z "$3" ] || [ -d "$2" ]; then
        mkdir -p "$2" && tar -xf "$1" -C "$2"
    else
        rm -rf "$B/one" && mkdir -p "$B/one" "$(dirname "$2")" && tar -xf "$1" -C "$B/one" \
            && rm -rf "$2" && mv -f "$B/one/$3" "$2"
    fi
}
# mh_keep NAME...: what ENV set, kept in the image (not the ARGs), in the form of apptainer's own
# docker-archive conversion: PATH as is, any other a default that a run's --env may override.
mh_keep() {
    for n in "$@"; do
        v=$(mh_sh "printf %s \"\${$n-}\"") || return 1
        q=$(printf %s "$v" | sed "s/'/'\\\\''/g")
        if [ "$n" = PATH ]; then
            printf "export PATH='%s'\n" "$q"
        else
            printf "if [ -z \"\${%s:-}\" ]; then %s='%s'; fi; export %s\n" "$n" "$n" "$q" "$n"
        fi
    done >>"$APPTAINER_ENVIRONMENT"
}
"""
_PREAMBLE = (
    _PREAMBLE.replace("@STAGE@", STAGE).replace("@PATH@", DEFAULT_PATH).replace("@ENVSCRIPTS@", _ENV_SCRIPTS)
)


@dataclass
class Translation:
    bootstrap: str
    source: str
    post: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    payloads: list[Path] = field(default_factory=list)

    def definition(self, stage: Path) -> str:
        body = "\n".join(self.post)
        text = (
            f"Bootstrap: {self.bootstrap}\nFrom: {self.source}\n\n"
            f"%files\n    {stage} {STAGE}\n\n%post\n{_PREAMBLE}{body}\nrm -rf {STAGE}\n"
        )
        if "{{" in text:
            raise DockerfileError(
                "the Dockerfile holds '{{', which apptainer's definition files read as a build argument: "
                "rewrite that text"
            )
        return text


def _where(ins: Instruction) -> str:
    return f"Dockerfile line {ins.line}: {ins.shown}"


def _refuse(ins: Instruction, why: str) -> DockerfileError:
    return DockerfileError(f"{_where(ins)}: {why}")


def _flags(ins: Instruction, args: str, allowed: set[str]) -> tuple[dict[str, str], str]:
    """Leading --flag=value options of ARGS, refused unless ALLOWED; returns (flags, the rest)."""
    flags: dict[str, str] = {}
    rest = args
    while rest.startswith("--"):
        word, _, after = rest.partition(" ")
        name, _, value = word[2:].partition("=")
        if name not in allowed:
            raise _refuse(ins, f"--{name} is not carried out by the apptainer builder")
        flags[name] = value
        rest = after.lstrip()
    return flags, rest


def _bootstrap(image: str, from_map: dict[str, str]) -> tuple[str, str]:
    ref = from_map.get(image, image)
    if ref.startswith("/"):
        return "localimage", ref
    for prefix in ("docker://", "oras://", "library://"):
        if ref.startswith(prefix):
            return prefix[:-3], ref[len(prefix) :]
    return "docker", ref


class Translator:
    def __init__(
        self,
        df: Dockerfile,
        ctx: Context,
        files: Path,
        build_args: dict[str, str],
        from_map: dict[str, str],
        workdir: str,
    ) -> None:
        self.df, self.ctx, self.files = df, ctx, files
        self.build_args, self.from_map = build_args, from_map
        self.escape = df.escape
        self.workdir = workdir
        self.known: dict[str, str] = {}  # values the host can compute (COPY sources need them)
        self.env_names: list[str] = []  # what ENV set: kept in the image
        self.t: Translation | None = None

    # ------------------------------------------------------------------ helpers
    def _word(self, ins: Instruction, raw: str) -> Tokens:
        try:
            return lex_word(raw, self.escape)
        except DockerfileError as exc:
            raise _refuse(ins, str(exc)) from None

    def _host_value(self, ins: Instruction, toks: Tokens, what: str) -> str:
        try:
            return expand(toks, self.known)
        except UnknownVariable as exc:
            raise _refuse(
                ins, f"{what} uses ${{{exc.name}}}, which only the base image could define: write the path"
            ) from None

    def _emit(self, line: str) -> None:
        assert self.t is not None
        self.t.post.append(line)

    # ------------------------------------------------------------------ the walk
    def run(self) -> Translation:
        instructions = self.df.instructions
        pre: dict[str, str] = {}
        k = 0
        while k < len(instructions) and instructions[k].keyword == "ARG":
            for name, toks in self._arg_pairs(instructions[k]):
                pre[name] = self.build_args.get(name, expand(toks, pre, strict=False) if toks else "")
            k += 1
        if k == len(instructions) or instructions[k].keyword != "FROM":
            raise DockerfileError("Dockerfile: no FROM (only ARG may come before it)")
        self._from(instructions[k], pre)
        steps = [ins for ins in instructions[k + 1 :]]
        # Refusals first, so that nothing is built from a Dockerfile that cannot be carried out.
        for ins in steps:
            self._check(ins)
        total = len(steps) + 1
        for n, ins in enumerate(steps, start=2):
            self._emit(f"mh_step {shlex.quote(f'{n}/{total} : {ins.shown}')}")
            getattr(self, f"_do_{ins.keyword.lower()}")(ins)
        self._finish()
        assert self.t is not None
        return self.t

    def _check(self, ins: Instruction) -> None:
        kw = ins.keyword
        if kw == "FROM":
            raise _refuse(ins, "a second FROM (a multi-stage build) is not carried out: build one stage")
        if kw in REFUSED:
            raise _refuse(ins, REFUSED[kw])
        if kw == "USER" and ins.args.strip() not in ("root", "0", "root:root", "0:0"):
            raise _refuse(ins, "USER other than root: the agent runs as the user who submits the job anyway")
        if kw in ("COPY", "ADD"):
            flags, _ = _flags(ins, ins.args, {"chmod", "chown", "from", "link"})
            if "from" in flags:
                raise _refuse(ins, "COPY --from (another stage or image) is not carried out")
        if kw == "RUN":
            _flags(ins, ins.args, set())
            if ins.args.startswith("<<"):
                raise _refuse(ins, "a here-document RUN (BuildKit syntax) is not carried out")
        known = {"ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "LABEL", "MAINTAINER", "USER"} | NOT_USED
        if kw not in known:
            raise _refuse(ins, f"unknown instruction {kw}")

    def _from(self, ins: Instruction, pre: dict[str, str]) -> None:
        flags, rest = _flags(ins, ins.args, {"platform"})
        plat = flags.get("platform", "")
        machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        if plat and expand(lex_word(plat, self.escape), pre, strict=False) != f"linux/{machine}":
            raise _refuse(
                ins, f"--platform={plat}: the apptainer builder builds for this machine (linux/{machine})"
            )
        words = split_words(rest, self.escape)
        if not words or len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
            raise _refuse(ins, "FROM takes one image (FROM image [AS name])")
        image = expand(lex_word(words[0], self.escape), pre, strict=False)
        if image == "scratch":
            raise _refuse(ins, "FROM scratch: build on mlebench-env (or a base image)")
        bootstrap, source = _bootstrap(image, self.from_map)
        if bootstrap == "localimage" and not Path(source).exists():
            raise _refuse(ins, f"{source} (standing for {image}) does not exist: build it first")
        self.t = Translation(bootstrap, source)
        self._emit(f"mh_wd={shlex.quote(self.workdir)}")
        self._emit(f"mh_step {shlex.quote(f'1/? : FROM {image} ({bootstrap} {source})')}")

    def _arg_pairs(self, ins: Instruction) -> list[tuple[str, Tokens]]:
        out = []
        for w in split_words(ins.args, self.escape):
            name, sep, default = w.partition("=")
            if not valid_name(name):
                raise _refuse(ins, f"ARG {name}: not a variable name")
            out.append((name, self._word(ins, default) if sep else ()))
        if not out:
            raise _refuse(ins, "ARG needs a name")
        return out

    # ------------------------------------------------------------------ instructions
    def _do_arg(self, ins: Instruction) -> None:
        for name, toks in self._arg_pairs(ins):
            if name in self.env_names:
                continue  # Docker: an ENV of the same name wins over the ARG
            if name in self.build_args:
                value = self.build_args[name]
                self.known[name] = value
                self._state(f"{name}={shlex.quote(value)}; export {name}")
            elif toks:
                try:
                    self.known[name] = expand(toks, self.known)
                except UnknownVariable:
                    self.known.pop(name, None)
                self._state(f"{name}={to_sh(toks)}; export {name}")

    def _do_env(self, ins: Instruction) -> None:
        try:
            pairs = key_values(ins.args, self.escape, "ENV")
        except DockerfileError as exc:
            raise _refuse(ins, str(exc)) from None
        # Docker: every value of one ENV sees the state before it (ENV A=1 B=$A gives B the old A).
        temps, exports = [], []
        new_known = dict(self.known)
        for k, (name, toks) in enumerate(pairs):
            if not valid_name(name):
                raise _refuse(ins, f"ENV {name}: not a variable name the shell can set")
            temps.append(f"mh_{k}={to_sh(toks)}")
            exports.append(f'{name}="$mh_{k}"')
            try:
                new_known[name] = expand(toks, self.known)
            except UnknownVariable:
                new_known.pop(name, None)
            if name not in self.env_names:
                self.env_names.append(name)
        self.known = new_known
        unset = " ".join(f"mh_{k}" for k in range(len(pairs)))
        self._state(f"{'; '.join(temps)}; export {' '.join(exports)}; unset {unset}")

    def _state(self, line: str) -> None:
        self._emit(f"printf '%s\\n' {shlex.quote(line)} >>\"$B/state.sh\"")
        # a line that does not parse fails here, naming the instruction, not at the next RUN
        self._emit('mh_sh : || mh_fail "the variables of this step do not parse"')

    def _do_run(self, ins: Instruction) -> None:
        argv = json_array(ins.args)
        cmd = argv if argv is not None else ["/bin/sh", "-c", ins.args]
        if not cmd:
            raise _refuse(ins, "RUN with an empty command")
        quoted = " ".join(shlex.quote(a) for a in cmd)
        what = shlex.quote(_where(ins))
        self._emit(f'mh_in "$mh_wd" {quoted} || mh_fail {what}" failed (exit $?)"')

    def _do_workdir(self, ins: Instruction) -> None:
        toks = self._word(ins, ins.args.strip())
        code = shlex.quote(f"printf %s {to_sh(toks)}")
        where = shlex.quote(_where(ins))
        self._emit(f'mh_v=$(mh_sh {code}) || mh_fail {where}; mh_wd=$(mh_abs "$mh_v")')
        self._emit(f'mkdir -p "$mh_wd" || mh_fail {where}" cannot create the directory"')

    def _do_user(self, ins: Instruction) -> None:
        self._emit(": # USER root: the build runs as root already")

    def _do_label(self, ins: Instruction) -> None:
        try:
            pairs = key_values(ins.args, self.escape, "LABEL")
        except DockerfileError as exc:
            raise _refuse(ins, str(exc)) from None
        for name, toks in pairs:
            if not name or any(c.isspace() for c in name):
                raise _refuse(ins, f"label {name!r}: apptainer's labels cannot hold spaces in a name")
            code = shlex.quote(f"printf %s {to_sh(toks)}")
            self._emit(
                f'mh_v=$(mh_sh {code}) && printf "%s %s\\n" {shlex.quote(name)} "$mh_v" >>"$APPTAINER_LABELS"'
            )

    def _do_maintainer(self, ins: Instruction) -> None:
        self._emit(f'printf "%s %s\\n" maintainer {shlex.quote(ins.args)} >>"$APPTAINER_LABELS"')

    def _not_used(self, ins: Instruction) -> None:
        assert self.t is not None
        self.t.notes.append(
            f"{_where(ins)}: not used by mlebench-hpc's launcher (it runs bash /home/agent/start.sh): ignored"
        )
        self._emit(f": # {ins.keyword}: not used")

    _do_cmd = _do_entrypoint = _do_expose = _do_healthcheck = _do_stopsignal = _not_used

    def _do_add(self, ins: Instruction) -> None:
        self._copy(ins, add=True)

    def _do_copy(self, ins: Instruction) -> None:
        self._copy(ins, add=False)

    def _copy(self, ins: Instruction, add: bool) -> None:
        assert self.t is not None
        flags, rest = _flags(ins, ins.args, {"chmod", "chown", "link"})
        words = json_array(rest)
        raw = words if words is not None else split_words(rest, self.escape)
        if len(raw) < 2:
            raise _refuse(ins, f"{ins.keyword} needs a source and a destination")
        if words is not None:
            # the JSON form's strings, substituted as Docker substitutes them (as double-quoted words)
            toks = [self._word(ins, '"' + w.replace("\\", "\\\\").replace('"', '\\"') + '"') for w in raw]
        else:
            toks = [self._word(ins, w) for w in raw]
        dest_raw = raw[-1]
        sources: list[str] = []
        for t in toks[:-1]:
            value = self._host_value(ins, t, "the source")
            if add and value.split("://")[0] in ("http", "https", "git", "ftp") or value.startswith("git@"):
                raise _refuse(
                    ins,
                    "ADD of a URL is not carried out: download it in a RUN, or add the file to the context",
                )
            try:
                found = self.ctx.sources(value)
            except DockerfileError as exc:
                raise _refuse(ins, str(exc)) from None
            sources += found
        chmod = None
        if "chmod" in flags:
            try:
                chmod = int(flags["chmod"], 8)
            except ValueError:
                raise _refuse(ins, f"--chmod={flags['chmod']}: give an octal mode (e.g. 755)") from None
        members: list[tuple[str, str]] = []
        single = ""
        for rel in sources:
            rel = self._follow(ins, rel)
            full = self.ctx.root / rel if rel else self.ctx.root
            if self.ctx.is_dir(rel):
                base = f"{rel}/" if rel else ""
                members += [(p, p[len(base) :]) for p in self.ctx.below(rel)]
            else:
                if add and is_archive(full):
                    raise _refuse(
                        ins,
                        f"ADD of archive {rel} is not carried out (Docker unpacks it): unpack it in a RUN",
                    )
                name = Path(rel).name
                members.append((rel, name))
                single = name
        many = len(sources) > 1 or any(c in w for w in raw[:-1] for c in "*?[")
        if many and not dest_raw.endswith("/"):
            raise _refuse(ins, "with several sources the destination must be a directory ending in /")
        one_file = (
            len(sources) == 1
            and not self.ctx.is_dir(self._follow(ins, sources[0]))
            and not dest_raw.endswith("/")
        )
        n = len(self.t.payloads)
        payload = self.files / f"copy-{n}.tar"
        uid = gid = 0
        chown = flags.get("chown", "")
        numeric = chown.replace(":", "").isdigit()
        if chown and numeric:
            u, _, g = chown.partition(":")
            uid, gid = int(u), int(g or u)
        write_payload(self.ctx, members, payload, chmod, uid, gid)
        self.t.payloads.append(payload)
        where = shlex.quote(_where(ins))
        code = shlex.quote(f"printf %s {to_sh(toks[-1])}")
        self._emit(f'mh_v=$(mh_sh {code}) || mh_fail {where}; mh_dest=$(mh_abs "$mh_v")')
        name = shlex.quote(single if one_file else "")
        self._emit(f'mh_copy "$B/{payload.name}" "$mh_dest" {name} || mh_fail {where}" could not copy"')
        if chown and not numeric:
            tops = sorted({m[1].split("/")[0] for m in members})
            targets = '"$mh_dest"' if one_file else " ".join(f'"$mh_dest"/{shlex.quote(t)}' for t in tops)
            self._emit(f'chown -hR {shlex.quote(chown)} {targets} || mh_fail {where}" --chown failed"')

    def _follow(self, ins: Instruction, rel: str) -> str:
        """A source that is itself a link: Docker copies what it points to, inside the context."""
        if not rel:
            return rel
        full = self.ctx.root / rel
        if not full.is_symlink():
            return rel
        target = full.resolve()
        try:
            inside = target.relative_to(self.ctx.root)
        except ValueError:
            raise _refuse(ins, f"{rel} links outside the build context") from None
        return str(inside)

    def _finish(self) -> None:
        if self.env_names:
            names = " ".join(self.env_names)
            self._emit(f'mh_keep {names} || mh_fail "cannot write the image\'s environment"')


def translate(
    dockerfile: Path,
    context: Path,
    out: Path,
    build_args: dict[str, str],
    from_map: dict[str, str],
    workdir: str = "/",
) -> Translation:
    """Write OUT/build.def and OUT/files/ (what the COPYs copy); refuse before anything is built."""
    try:
        text = dockerfile.read_text()
    except OSError as exc:
        raise DockerfileError(f"cannot read {dockerfile} ({exc.strerror})") from None
    df = parse(text)
    ctx = Context(context)
    if out.exists():
        shutil.rmtree(out)
    files = out / "files"
    files.mkdir(parents=True)
    if any(c.isspace() for c in str(files.resolve())):
        raise DockerfileError(f"{files}: the staging directory must not hold spaces (apptainer's %files)")
    t = Translator(df, ctx, files, build_args, from_map, workdir).run()
    (out / "build.def").write_text(t.definition(files.resolve()))
    return t


def retarget_from(dockerfile: Path, name: str, image: str) -> str:
    """The Dockerfile's text with `FROM NAME` naming IMAGE; nothing else changes."""
    text = dockerfile.read_text()
    df = parse(text)
    lines = text.splitlines(keepends=True)
    for ins in df.instructions:
        if ins.keyword != "FROM":
            continue
        _, rest = _flags(ins, ins.args, {"platform"})
        words = split_words(rest, df.escape)
        if words and words[0] == name:
            line = lines[ins.line - 1]
            head, sep, tail = line.partition(" " + name)
            if not sep:
                raise DockerfileError(f"{dockerfile}:{ins.line}: FROM {name} spans lines: write it on one")
            lines[ins.line - 1] = f"{head} {image}{tail}"
    return "".join(lines)


def _pairs(items: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DockerfileError(f"{what} {item!r}: write NAME=value")
        out[key] = value
    return out


@click.command("dockerfile-def")
@click.argument("dockerfile", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--context", type=click.Path(file_okay=False, path_type=Path), help="Build context.")
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Output dir (or file with --retarget)."
)
@click.option("--build-arg", "build_args", multiple=True, help="NAME=value, as docker build's.")
@click.option(
    "--from", "from_map", multiple=True, help="NAME=IMAGE: FROM NAME builds on IMAGE (SIF or registry)."
)
@click.option("--workdir", default="/", show_default=True, help="The base image's WORKDIR.")
@click.option("--retarget", default=None, help="NAME=IMAGE: only write a copy whose FROM NAME names IMAGE.")
def dockerfile_def_cmd(
    dockerfile: Path,
    context: Path | None,
    out: Path,
    build_args: tuple[str, ...],
    from_map: tuple[str, ...],
    workdir: str,
    retarget: str | None,
) -> None:
    """Translate DOCKERFILE into an apptainer definition file carried out in Docker's order."""
    if retarget:
        name, image = next(iter(_pairs((retarget,), "--retarget").items()))
        out.write_text(retarget_from(dockerfile, name, image))
        return
    if context is None:
        raise DockerfileError("--context is required")
    t = translate(
        dockerfile, context, out, _pairs(build_args, "--build-arg"), _pairs(from_map, "--from"), workdir
    )
    for note in t.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(str(out / "build.def"))


if __name__ == "__main__":  # pragma: no cover
    dockerfile_def_cmd(sys.argv[1:])
