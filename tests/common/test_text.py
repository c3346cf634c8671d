import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedrec.common.text import markdown_cell, printable

ESCAPED = {
    "\x00": "\\x00",
    "\t": "\\x09",
    "\n": "\\x0a",
    "\x1b[2J": "\\x1b[2J",  # clear screen
    "\x7f": "\\x7f",
    "\x9b": "\\x9b",  # C1 CSI
    "\u202e": "\\u202e",  # right-to-left override
    "\u2028": "\\u2028",  # line separator
    "\ud800": "\\ud800",  # lone surrogate: printing it would raise UnicodeEncodeError
    "\U000e0001": "\\U000e0001",  # language tag (format, beyond the BMP)
}


@pytest.mark.parametrize(("raw", "shown"), ESCAPED.items())
def test_printable_escapes(raw, shown):
    assert printable(f"a{raw}b") == f"a{shown}b"


def test_printable_keeps_ordinary_text():
    text = "Amélie (2001) — 千と千尋 🎬 a\\b 'q' \"q\" | * _"
    assert printable(text) == text
    assert printable(3) == "3"


def test_markdown_cell_escapes_markup_and_a_trailing_backslash():
    assert markdown_cell("a|b") == "a\\|b"
    assert markdown_cell("<img src=x>") == "\\<img src=x\\>"
    assert markdown_cell("[x](javascript:y)") == "\\[x\\](javascript:y)"
    # a trailing backslash must not escape the pipe that closes the cell
    assert markdown_cell("ends with \\") == "ends with \\\\"
    assert markdown_cell("tab\there") == "tab\\\\x09here"  # shown as \x09


UNSAFE = ("Cc", "Cf", "Cs", "Zl", "Zp")


@given(st.text())
def test_printable_output_is_safe_and_stable(text):
    shown = printable(text)
    assert not any(unicodedata.category(ch) in UNSAFE for ch in shown)
    shown.encode("utf-8")  # never raises
    assert printable(shown) == shown


@given(st.text())
def test_markdown_cell_never_splits_a_row(text):
    cell = markdown_cell(text)
    assert "\n" not in cell and "\r" not in cell
    # every pipe, and every markup character, is preceded by an odd number of backslashes
    for position, ch in enumerate(cell):
        if ch in "|`*_<>[]":
            run = len(cell[:position]) - len(cell[:position].rstrip("\\"))
            assert run % 2 == 1, (text, cell)
    assert (len(cell) - len(cell.rstrip("\\"))) % 2 == 0  # no dangling escape at the end
