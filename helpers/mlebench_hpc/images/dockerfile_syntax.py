"""Dockerfile syntax as Docker's classic builder (20.10) reads it: instructions, words, variables.

Not dockerfile-parse: version 2.0.1 ends an instruction at a comment or an
empty line inside a continuation, where Docker goes on (`RUN a \\`, `# note`, `  b` is one RUN), and
drops a continuation at the end of the file; its arguments would need parsing here all the same
(flags, JSON form, quotes, `${VAR:-word}`). spython's writer puts COPY into %files, ahead of every
RUN, which breaks Docker's order. So the ~150 lines below follow Docker's own rules instead:

- parser directives (`# escape=`, `# syntax=`) before anything else; `\\` or a backtick as escape;
- a line ending in the escape character continues; comment and empty lines inside a continuation
  are skipped; lines are joined without the escape and the newline;
- words: whitespace separates, 'single quotes' are literal, "double quotes" keep `\\"`, `\\\\` and
  `\\$` escapes, the escape character outside quotes takes the next character literally;
- variables: `$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME:+word}` (word may hold variables).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from mlebench_hpc.errors import HelperError

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class DockerfileError(HelperError):
    """A Dockerfile this project cannot carry out, or one Docker would refuse: one line."""


@dataclass(frozen=True)
class Instruction:
    line: int  # 1-based line of the keyword
    keyword: str  # upper case
    args: str  # the rest, continuation lines joined

    @property
    def shown(self) -> str:
        """The instruction as a user reads it, on one line and bounded."""
        text = f"{self.keyword} {self.args}".strip()
        return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class Dockerfile:
    instructions: tuple[Instruction, ...]
    escape: str
    directives: tuple[tuple[str, str], ...]


def parse(text: str) -> Dockerfile:
    lines = text.splitlines()
    escape, directives, i = "\\", [], 0
    while i < len(lines):  # directives: only before the first comment, blank line or instruction
        m = _DIRECTIVE.match(lines[i].strip())
        if not m:
            break
        key, value = m.group(1).lower(), m.group(2)
        if key == "escape":
            if value not in ("\\", "`"):
                raise DockerfileError(
                    f"Dockerfile line {i + 1}: escape={value}: only \\ or ` can be the escape"
                )
            escape = value
        directives.append((key, value))
        i += 1
    out: list[Instruction] = []
    cont = re.compile(re.escape(escape) + r"[ \t]*$")
    buf: str | None = None
    start = 0
    for n in range(i, len(lines)):
        raw = lines[n]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments and empty lines, also inside a continuation
        if buf is None:
            buf, start, raw = "", n + 1, raw.lstrip()
        m = cont.search(raw)
        if m:
            buf += raw[: m.start()]
            continue
        out.append(_instruction(buf + raw, start))
        buf = None
    if buf is not None and buf.strip():
        out.append(_instruction(buf, start))
    return Dockerfile(tuple(out), escape, tuple(directives))


def _instruction(text: str, line: int) -> Instruction:
    keyword, _, args = text.strip().partition(" ")
    if "\t" in keyword:
        keyword, _, rest = keyword.partition("\t")
        args = f"{rest} {args}".strip()
    return Instruction(line, keyword.upper(), args.strip())


# ------------------------------------------------------------------ words
def split_words(text: str, escape: str) -> list[str]:
    """Whitespace-separated words, quotes and escapes kept (lex_word reads them)."""
    words: list[str] = []
    cur, quote, i, started = "", "", 0, False
    while i < len(text):
        c = text[i]
        if quote:
            cur += c
            if c == escape and quote == '"' and i + 1 < len(text):
                cur += text[i + 1]
                i += 1
            elif c == quote:
                quote = ""
        elif c == escape and i + 1 < len(text):
            cur += c + text[i + 1]
            started = True
            i += 1
        elif c in "'\"":
            quote, started = c, True
            cur += c
        elif c.isspace():
            if started:
                words.append(cur)
            cur, started = "", False
        else:
            cur += c
            started = True
        i += 1
    if quote:
        raise DockerfileError(f"unmatched {quote} in: {text[:60]}")
    if started:
        words.append(cur)
    return words


def json_array(text: str) -> list[str] | None:
    """The JSON (exec) form `["a", "b"]`, or None when TEXT is not one (then it is the shell form)."""
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


@dataclass(frozen=True)
class Var:
    name: str
    op: str  # "" | ":-" | ":+"
    word: tuple[Lit | Var, ...]


@dataclass(frozen=True)
class Lit:
    text: str


Tokens = tuple["Lit | Var", ...]


def lex_word(word: str, escape: str) -> Tokens:
    """One word as literal text and variable references, quotes removed as Docker removes them."""
    toks, _ = _lex(word, 0, escape, stop="")
    return toks


def _lex(s: str, i: int, escape: str, stop: str) -> tuple[Tokens, int]:
    toks: list[Lit | Var] = []
    lit = ""
    quote = ""
    while i < len(s):
        c = s[i]
        if not quote and stop and c == stop:
            break
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                lit += c
            i += 1
            continue
        if c == escape and i + 1 < len(s):
            nxt = s[i + 1]
            if quote == '"' and nxt not in ('"', escape, "$"):
                lit += c + nxt  # inside double quotes only \" \\ \$ are escapes
            else:
                lit += nxt
            i += 2
            continue
        if c == '"':
            quote = "" if quote else '"'
            i += 1
            continue
        if c == "'" and not quote:
            quote = "'"
            i += 1
            continue
        if c == "$":
            var, i2 = _var(s, i, escape)
            if var is not None:
                if lit:
                    toks.append(Lit(lit))
                    lit = ""
                toks.append(var)
                i = i2
                continue
        lit += c
        i += 1
    if quote:
        raise DockerfileError(f"unmatched {quote} in: {s[:60]}")
    if lit:
        toks.append(Lit(lit))
    return tuple(toks), i


def _var(s: str, i: int, escape: str) -> tuple[Var | None, int]:
    if i + 1 < len(s) and s[i + 1] == "{":
        m = _NAME.match(s, i + 2)
        if not m:
            raise DockerfileError(f"bad substitution in: {s[:60]}")
        j = m.end()
        if j < len(s) and s[j] == "}":
            return Var(m.group(0), "", ()), j + 1
        op = s[j : j + 2]
        if op not in (":-", ":+"):
            raise DockerfileError(
                f"unsupported substitution ${{{m.group(0)}{s[j : j + 2]}...}}: use ${{A}}, ${{A:-x}}"
            )
        word, k = _lex(s, j + 2, escape, stop="}")
        if k >= len(s):
            raise DockerfileError(f"missing }} in: {s[:60]}")
        return Var(m.group(0), op, word), k + 1
    m = _NAME.match(s, i + 1)
    if not m:
        return None, i  # a lone $ is literal
    return Var(m.group(0), "", ()), m.end()


def word_vars(toks: Tokens) -> set[str]:
    out: set[str] = set()
    for t in toks:
        if isinstance(t, Var):
            out.add(t.name)
            out |= word_vars(t.word)
    return out


class UnknownVariable(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def expand(toks: Tokens, values: dict[str, str], strict: bool = True) -> str:
    """TOKS with VALUES substituted; a name missing from VALUES raises UnknownVariable when STRICT
    (it might come from the base image, which only the build knows), else is empty as in Docker."""
    out = ""
    for t in toks:
        if isinstance(t, Lit):
            out += t.text
            continue
        if t.name not in values and strict:
            raise UnknownVariable(t.name)
        value = values.get(t.name, "")
        if t.op == ":-":
            out += value if value else expand(t.word, values, strict)
        elif t.op == ":+":
            out += expand(t.word, values, strict) if value else ""
        else:
            out += value
    return out


def to_sh(toks: Tokens) -> str:
    """TOKS as one double-quoted POSIX sh word that the build's shell expands to Docker's value."""
    return '"' + _sh_inner(toks) + '"'


def _sh_inner(toks: Tokens) -> str:
    out = ""
    for t in toks:
        if isinstance(t, Lit):
            out += re.sub(r'([\\"$`])', r"\\\1", t.text)
        elif t.op:
            out += "${" + t.name + t.op + _sh_inner(t.word) + "}"
        else:
            out += "${" + t.name + "}"
    return out


def key_values(text: str, escape: str, what: str) -> list[tuple[str, Tokens]]:
    """`K=V K2="v 2"` (or the old `K some value` form) as (name, value tokens) pairs."""
    words = split_words(text, escape)
    if not words:
        raise DockerfileError(f"{what} needs at least one NAME=value")
    if "=" not in words[0]:
        if len(words) < 2:
            raise DockerfileError(f"{what} {words[0]} needs a value: {what} {words[0]}=value")
        rest = text.strip()[len(words[0]) :].strip()
        return [(_unquote_key(words[0], escape), lex_word(rest, escape))]
    pairs = []
    for w in words:
        key, sep, value = w.partition("=")
        if not sep:
            raise DockerfileError(f"{what}: '{w}' is not NAME=value (write every pair as NAME=value)")
        pairs.append((_unquote_key(key, escape), lex_word(value, escape)))
    return pairs


def _unquote_key(key: str, escape: str) -> str:
    return "".join(t.text if isinstance(t, Lit) else f"${t.name}" for t in lex_word(key, escape))


def valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None
