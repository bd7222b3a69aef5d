"""Reading files for the tools without ever dumping a binary or loading a huge file whole.

A file is binary when its first 8 KiB hold a NUL byte or are not UTF-8 (a multi-byte character cut at the edge
is fine). Lines split on "\\n" only (as grep and `cat -n` count them; str.splitlines would also split on form feeds
and U+2028 and disagree with Grep's line numbers), with a trailing "\\r" dropped for display.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from nanocode.agents.tools.base import ToolFailure

SNIFF_BYTES = 8192


def looks_binary(head: bytes) -> bool:
    if b"\x00" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start < len(head) - 3  # only a character cut by the sniff window is allowed to fail
    return False


def describe_size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def open_text(path: Path) -> BinaryIO:
    """Open an existing regular text file for reading, or fail with nanocode's messages."""
    if not path.exists():
        raise ToolFailure("file not found")
    if path.is_dir():
        raise ToolFailure("path is a directory, not a file")
    if not path.is_file():
        raise ToolFailure("not a regular file")
    f = open(path, "rb")  # noqa: SIM115 (the caller closes it)
    head = f.read(SNIFF_BYTES)
    if looks_binary(head):
        f.close()
        raise ToolFailure(f"binary file ({describe_size(os.path.getsize(path))}), not shown")
    f.seek(0)
    return f


def read_text(path: Path, max_bytes: int) -> str:
    """A whole text file (for editing), refusing binary files and files over max_bytes."""
    with open_text(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise ToolFailure(f"file too large ({describe_size(size)}; the limit is {describe_size(max_bytes)})")
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolFailure("file is not valid UTF-8 text") from None


def iter_lines(f: BinaryIO, max_line_bytes: int) -> Iterator[tuple[str, bool]]:
    """(line, was_cut) for each line, reading at most max_line_bytes of any line into memory."""
    while True:
        chunk = f.readline(max_line_bytes)
        if not chunk:
            return
        cut, rest = False, chunk
        while rest and not rest.endswith(b"\n"):  # a line longer than the bound: skip the rest of it
            rest = f.readline(max_line_bytes)
            cut = cut or bool(rest)
        yield chunk.rstrip(b"\n").rstrip(b"\r").decode("utf-8", errors="replace"), cut


def split_lines(text: str) -> list[str]:
    """Lines as Read shows them: split on \\n, no phantom empty line after a final newline, trailing \\r dropped."""
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]
