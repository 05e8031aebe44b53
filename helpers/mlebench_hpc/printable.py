"""Agent-controlled text made safe to show a person (a terminal, a log, a markdown table).

Whatever an agent printed, named a column or wrote into a file it controls may reach a user's
terminal through `status`, `grade`, `doctor` or summary.md. Escape sequences in it could move the
cursor, redraw a failed row as finished or hide a line; bidi overrides could reorder what is
shown. So every such string goes through one of these before it is printed: C0 controls, DEL,
C1 controls (U+0080-U+009F), the bidi overrides, isolates and marks, and lone surrogates are
escaped visibly (`\\x1b`, `\\u009b`, `\\u202e`, as the job scripts' mh_printable_stream does); the
one-line forms escape newline, CR, tab and the Unicode line separators too. Backslashes are left
alone, so escaping twice changes nothing.
"""

from __future__ import annotations

import re

# Always unsafe: C0 but tab and newline, DEL, C1, bidi controls (ALM, LRM, RLM, LRE..RLO,
# LRI..PDI) and lone surrogates (undecodable bytes read with surrogateescape).
_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_MULTI_LINE = re.compile(f"[{_UNSAFE}]")
_ONE_LINE = re.compile(f"[{_UNSAFE}\t\n\u2028\u2029]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_MARKDOWN = {"|": "\\|", "&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MARKDOWN_RE = re.compile("[|&<>]")


def _escape(m: re.Match[str]) -> str:
    c = m.group(0)
    if c in _NAMED:
        return _NAMED[c]
    code = ord(c)  # ASCII controls as \x1b; code points as \u009b (a raw byte shows as \xff)
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """TEXT as one safe line: every control character, newline included, escaped visibly."""
    s = text.decode("utf-8", "backslashreplace") if isinstance(text, bytes) else str(text)
    return _ONE_LINE.sub(_escape, s) if _ONE_LINE.search(s) else s


def printable_lines(text: object) -> str:
    """TEXT safe for a terminal, keeping its newlines and tabs (a traceback, a block of output)."""
    s = text.decode("utf-8", "backslashreplace") if isinstance(text, bytes) else str(text)
    return _MULTI_LINE.sub(_escape, s) if _MULTI_LINE.search(s) else s


def markdown_cell(text: object) -> str:
    """TEXT as one cell of a markdown table: one safe line, `|` escaped, no raw HTML."""
    return _MARKDOWN_RE.sub(lambda m: _MARKDOWN[m.group(0)], printable(text))
