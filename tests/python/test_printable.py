"""printable: every class of character a terminal or a markdown viewer would act on is escaped,
everything else passes unchanged."""

from __future__ import annotations

import unicodedata

import pytest
from mlebench_hpc.printable import markdown_cell, printable, printable_lines

C0 = [chr(c) for c in range(0x20) if chr(c) not in "\t\n"]
C1 = [chr(c) for c in range(0x80, 0xA0)]
BIDI = ["\u061c", "\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))]
SURROGATES = ["\ud800", "\udc80", "\udfff"]


@pytest.mark.parametrize("c", [*C0, "\x7f", *C1, *BIDI, *SURROGATES])
def test_every_control_is_escaped_visibly(c: str) -> None:
    for fn in (printable, printable_lines, markdown_cell):
        out = fn(f"a{c}b")
        assert c not in out and out.startswith("a\\") and out.endswith("b"), (fn.__name__, out)
        assert out.isascii() and out.isprintable()
    code = ord(c)
    shown = {"\r": "\\r"}.get(c) or (f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}")
    assert printable(f"a{c}b") == f"a{shown}b"


def test_every_control_and_surrogate_code_point_is_covered() -> None:
    # every code point Unicode calls a control (Cc) or a surrogate (Cs): none passes through
    for code in range(0x110000):
        c = chr(code)
        if unicodedata.category(c) in ("Cc", "Cs"):
            assert c not in printable(c), hex(code)
            assert c not in printable_lines(c) or c in "\t\n", hex(code)


def test_one_line_forms_escape_line_breaks_and_tabs() -> None:
    assert printable("a\nb\tc\rd\u2028e\u2029f") == "a\\nb\\tc\\rd\\u2028e\\u2029f"
    assert printable_lines("a\nb\tc\rd") == "a\nb\tc\\rd"  # the multi-line form keeps lines and tabs


def test_ordinary_text_is_unchanged_and_escaping_twice_changes_nothing() -> None:
    text = "Submission column 'Transported' must hold numbers: é € 日本 🙂 C:\\path \\x1b"
    assert printable(text) == text
    evil = "col\x1b[2J\x1b[1;32mfinished\u202e\r\n"
    once = printable(evil)
    assert printable(once) == once and markdown_cell(once) == markdown_cell(evil)


def test_bytes_are_decoded_with_bad_bytes_shown() -> None:
    assert printable(b"ok\xff\x1b[2J") == "ok\\xff\\x1b[2J"
    assert printable(3) == "3" and printable(None) == "None"


def test_markdown_cell_keeps_the_table_whole() -> None:
    cell = markdown_cell("a|b\n| x | y |<img src=x onerror=alert(1)>&amp;")
    assert "\n" not in cell and "<" not in cell and ">" not in cell
    assert cell.count("|") == cell.count("\\|") == 4
    assert cell.endswith("&amp;amp;")
