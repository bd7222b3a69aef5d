"""Reading files for the tools without ever dumping a binary, loading a huge file whole, or blocking on a FIFO.

Files are opened through nanocode.agents.tools.paths (relative to a directory fd of the workspace, never following
a symlink out of it); only regular files are read: a directory, FIFO, device or socket is refused by its type.
A file is binary when its first 8 KiB hold a NUL byte or are not UTF-8 (a multi-byte character cut at the edge
is fine). Lines split on "\\n" only (as grep and `cat -n` count them; str.splitlines would also split on form feeds
and U+2028 and disagree with Grep's line numbers), with a trailing "\\r" dropped for display.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from nanocode.agents.tools.base import ToolFailure
from nanocode.agents.tools.paths import SpecialFile, open_beneath

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


def check_regular(info: os.stat_result) -> None:
    """Refuse anything but a regular file, with nanocode's messages."""
    if stat.S_ISDIR(info.st_mode):
        raise ToolFailure("path is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise ToolFailure("not a regular file")


def open_text(root: Path, path: str) -> BinaryIO:
    """Open the existing regular text file `path` of the workspace `root` for reading, or fail with nanocode's
    messages."""
    try:
        fd, info = open_beneath(root, path)
    except (FileNotFoundError, NotADirectoryError):
        raise ToolFailure("file not found") from None
    except SpecialFile:
        raise ToolFailure("not a regular file") from None
    return text_file(fd, info)


def text_file(fd: int, info: os.stat_result) -> BinaryIO:
    """The open fd as a binary file, when it is a regular text file (else it is closed and ToolFailure says why)."""
    try:
        check_regular(info)  # before fdopen, which refuses a directory with an exception of its own
    except ToolFailure:
        os.close(fd)
        raise
    f = os.fdopen(fd, "rb")
    try:
        os.set_blocking(fd, True)
        if looks_binary(f.read(SNIFF_BYTES)):
            raise ToolFailure(f"binary file ({describe_size(info.st_size)}), not shown")
        f.seek(0)
    except BaseException:
        f.close()
        raise
    return f


def read_bounded(f: BinaryIO, max_bytes: int) -> str:
    """The whole of an open text file (for editing), refusing files over max_bytes (checked on what is read, not
    only on the size the file had when opened) and files that are not UTF-8."""
    size = os.fstat(f.fileno()).st_size
    data = f.read(max_bytes + 1) if size <= max_bytes else b""
    if size > max_bytes or len(data) > max_bytes:
        raise ToolFailure(
            f"file too large ({describe_size(max(size, len(data)))}; the limit is {describe_size(max_bytes)})"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolFailure("file is not valid UTF-8 text") from None


def iter_lines(f: BinaryIO, max_line_bytes: int, max_scan_bytes: int) -> Iterator[tuple[str, bool]]:
    """(line, was_cut) for each line, reading at most max_line_bytes of any line into memory and stopping once
    max_scan_bytes of the file have been read (so one call costs a bounded amount of reading, however big the
    file)."""
    while f.tell() < max_scan_bytes:
        chunk = f.readline(max_line_bytes)
        if not chunk:
            return
        cut, rest = False, chunk
        while rest and not rest.endswith(b"\n") and f.tell() < max_scan_bytes:  # a long line: skip its rest
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
