"""Showing untrusted text on a terminal: every control character made visible, long text wrapped into rows.

The model's words, its tool calls and the tools' output can hold anything, and a terminal obeys what it is sent:
`\\r\\x1b[2K` erases the line already shown (so an approval question can show `ls` for another command), `\\x1b[2J`
clears the screen, OSC 52 (`\\x1b]52;c;...\\x07`) writes the clipboard, and bidi overrides (U+202E) reorder what is
read. So nothing the model controls reaches the screen raw: C0 and C1 controls, DEL, Unicode format characters
(bidi overrides and isolates, zero-width characters) and line/paragraph separators are written as visible escapes
(`\\r`, `\\x1b`, `\\u202e`); a newline and a tab stay as they are (they only move the cursor forward).

Only the display is escaped: the model and the transcript keep the exact text (a file holding an escape byte must
still be editable by quoting it).
"""

from __future__ import annotations

import unicodedata

KEPT = "\n\t"  # the only controls written raw
_NAMED = {"\r": "\\r"}  # the one control shown by name; the rest as \xNN, which every reader can look up
_UNSAFE_CATEGORIES = ("Cc", "Cf", "Cs", "Zl", "Zp")


def is_unsafe(char: str) -> bool:
    """True for a character a terminal might act on or not show: controls, format characters, line separators."""
    return char not in KEPT and unicodedata.category(char) in _UNSAFE_CATEGORIES


def visible(char: str) -> str:
    """The escape shown for an unsafe character: `\\r`, `\\x1b`, `\\x9b`, `\\u202e`, `\\U000e0001` (Python's
    own notation, so the shown text reads back with the `unicode_escape` codec)."""
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def has_unsafe(text: str) -> bool:
    return any(is_unsafe(c) for c in text)


def escape(text: str) -> str:
    """`text` with every unsafe character replaced by its visible escape (newlines and tabs kept)."""
    if not has_unsafe(text):
        return text
    return "".join(visible(c) if is_unsafe(c) else c for c in text)


def escape_exactly(text: str) -> str:
    """Like escape, but one-to-one: when anything is escaped, a real backslash is shown as `\\\\` too, so a shown
    `\\x1b` can only be an escape byte and never the four characters the text might also hold. Text with nothing to
    escape is returned unchanged. Used where the user approves what is shown."""
    if not has_unsafe(text):
        return text
    return "".join(visible(c) if is_unsafe(c) else ("\\\\" if c == "\\" else c) for c in text)


def for_display(text: str) -> str:
    """Tool output or model text made safe for the screen: CRLF line ends as newlines, everything else escaped."""
    return escape(text.replace("\r\n", "\n"))


def columns(char: str) -> int:
    """Terminal cells a character takes: 2 for wide East Asian characters, 0 for combining marks, else 1."""
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def rows(text: str, width: int) -> list[str]:
    """`text` (already escaped) cut into rows of at most `width` cells, as the terminal would wrap it; every
    character is kept, so joining a line's rows gives the line back."""
    width = max(width, 8)
    out: list[str] = []
    for line in text.split("\n"):
        row, used = [], 0
        for char in line:
            cells = 8 - used % 8 if char == "\t" else columns(char)
            if used + cells > width and row:
                out.append("".join(row))
                row, used = [], 0
                cells = 8 if char == "\t" else cells
            row.append(char)
            used += cells
        out.append("".join(row))
    return out
