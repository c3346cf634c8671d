"""Text that came from a data set (item titles, ids) made safe to show: control characters
escaped before fedrec prints it to a terminal or writes it into Markdown or HTML, so a crafted
title cannot move the cursor, clear the screen or break a table."""

from __future__ import annotations

import unicodedata

# control, format, lone surrogate (unprintable: writing one raises UnicodeEncodeError), line and
# paragraph separators
_ESCAPED_CATEGORIES = ("Cc", "Cf", "Cs", "Zl", "Zp")
_MARKDOWN_SPECIAL = ("\\", "|", "`", "*", "_", "<", ">", "[", "]")  # backslash first


def printable(text: str) -> str:
    """`text` with every control or format character (C0, DEL, C1, bidi overrides, …) and lone
    surrogate shown as a Python-style escape (`\\x1b`, `\\u202e`, `\\U000e0001`); other
    characters unchanged."""
    out = []
    for ch in str(text):
        if unicodedata.category(ch) in _ESCAPED_CATEGORIES:
            out.append(_escape(ord(ch)))
        else:
            out.append(ch)
    return "".join(out)


def markdown_cell(text: str) -> str:
    """`printable(text)` made safe for one Markdown table cell (backslashes, pipes, backticks,
    emphasis, angle and square brackets escaped, so it neither splits the row nor opens markup;
    a trailing backslash cannot escape the cell's closing pipe)."""
    escaped = printable(text)
    for ch in _MARKDOWN_SPECIAL:
        escaped = escaped.replace(ch, "\\" + ch)
    return escaped


def _escape(code: int) -> str:
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
