"""Edit: replace one exact occurrence of `old_string` with `new_string`, or create a file.

As nanocode: omitting `old_string` (or passing it empty) creates the file with `new_string` as its content, and
fails with "error: file already exists, use old_string to edit" when it exists; "error: old_string not found in
file" when there is no match; number prefixes the model copies from a Read result (`^ *\\d+→`) are stripped from
both strings first; the result is the path, then the whole new file numbered like Read. Choices where the reference
is silent (nanocode replaced the first occurrence; its SOUL demands a unique old_string, so we enforce it):
- more than one match: "error: old_string matches N times in file; include more surrounding lines to make it unique";
- a CRLF file is matched with CRLF-converted strings when the LF ones are not found;
- binary files, non-UTF-8 files, files over max_file_bytes and edits that would make one are refused; FIFOs,
  devices and sockets are never opened; writes are atomic (a temporary file renamed over the old one) and keep
  the mode;
- the file is found relative to the workspace's directory fd without following a symlink out of it, and read and
  replaced relative to the fd of its directory (see nanocode.agents.tools.paths): a symlink swapped in meanwhile
  is replaced, never written through;
- the numbered file in the result is cut after max_shown_lines lines, with a marker.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from typing import Any

from nanocode.agents.sandbox import Sandbox
from nanocode.agents.tools.base import Arg, Tool, ToolError, ToolFailure, ToolResult, number_lines
from nanocode.agents.tools.files import check_regular, describe_size, read_bounded, split_lines, text_file
from nanocode.agents.tools.paths import PathChanged, locate
from nanocode.core.kinds import TOOLS

MAX_EDIT_CHARS = 1024**2  # of old_string / new_string: a bigger edit is a new file written by Bash

LINE_NUMBER_PREFIX = re.compile(r"^ *\d+→", re.MULTILINE)


def strip_line_numbers(text: str) -> str:
    """Remove the `    12→` prefixes a model copies from Read output into its edit strings."""
    return LINE_NUMBER_PREFIX.sub("", text)


@TOOLS.register("Edit")
class Edit(Tool):
    """Replace one exact, unique string in a file, or create a new file."""

    name = "Edit"
    description = "Replace a unique exact string in a file with a new one; omit old_string to create a new file."
    args = (
        Arg("file_path", str, True, "path of the file, relative to the workspace root"),
        Arg(
            "old_string",
            str,
            False,
            "exact text to replace, unique in the file (omit to create a new file)",
            max_chars=MAX_EDIT_CHARS,
        ),
        Arg("new_string", str, True, "the replacement text, or the content of the new file", max_chars=MAX_EDIT_CHARS),
    )
    needs_approval = True

    def __init__(self, *, max_file_bytes: int = 10 * 1024**2, max_shown_lines: int = 2000):
        self.max_file_bytes = max_file_bytes
        self.max_shown_lines = max_shown_lines

    def run(self, args: dict[str, Any], sandbox: Sandbox) -> ToolResult:
        try:
            return self._edit(args, sandbox)
        except FileNotFoundError:
            return ToolError("file not found")
        except NotADirectoryError:
            return ToolError("a directory in the path is a file")

    def _edit(self, args: dict[str, Any], sandbox: Sandbox) -> ToolResult:
        old = strip_line_numbers(args["old_string"] or "")
        new = strip_line_numbers(args["new_string"])
        with locate(sandbox.root, args["file_path"], make_dirs=not old) as loc:
            if loc.name == ".":
                raise ToolFailure("path is a directory, not a file")
            if not old:
                if loc.info is not None:
                    return ToolError("file already exists, use old_string to edit")
                self._check_size(new)
                _write(loc.dir_fd, loc.name, new, mode=None)
                return self._show(args["file_path"], new)
            if loc.info is None:
                return ToolError("file not found")
            check_regular(loc.info)  # before opening: a FIFO or a device is never opened
            text, mode = self._read(loc.dir_fd, loc.name)
            count = text.count(old)
            if count == 0 and "\r\n" in text:
                old, new = (s.replace("\r\n", "\n").replace("\n", "\r\n") for s in (old, new))
                count = text.count(old)
            if count == 0:
                return ToolError("old_string not found in file")
            if count > 1:
                return ToolError(
                    f"old_string matches {count} times in file; include more surrounding lines to make it unique"
                )
            updated = text.replace(old, new, 1)
            self._check_size(updated)
            _write(loc.dir_fd, loc.name, updated, mode=mode)
        return self._show(args["file_path"], updated)

    def _read(self, dir_fd: int, name: str) -> tuple[str, int]:
        """(text, permission bits) of the regular file `name` in `dir_fd`, opened without following a symlink."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as e:
            if e.errno == errno.ELOOP:  # a symlink swapped in since the walk
                raise PathChanged(errno.ELOOP, "the file changed while it was opened; try again") from None
            raise
        info = os.fstat(fd)
        with text_file(fd, info) as f:
            return read_bounded(f, self.max_file_bytes), stat.S_IMODE(info.st_mode)

    def _check_size(self, text: str) -> None:
        size = len(text.encode("utf-8"))
        if size > self.max_file_bytes:
            limit = describe_size(self.max_file_bytes)
            raise ToolFailure(f"the file would be too large ({describe_size(size)}; the limit is {limit})")

    def _show(self, shown_path: str, text: str) -> ToolResult:
        lines = split_lines(text)
        if not lines:
            return ToolResult(f"{shown_path}\n(empty file)")
        body = number_lines(lines[: self.max_shown_lines])
        if len(lines) > self.max_shown_lines:
            body += f"\n… [{len(lines) - self.max_shown_lines} more lines not shown]"
        return ToolResult(f"{shown_path}\n{body}")


def _write(dir_fd: int, name: str, text: str, *, mode: int | None) -> None:
    """Write `name` in `dir_fd` atomically: a temporary file beside it, flushed, then renamed over it (a crash never
    leaves half a file). `mode` keeps an existing file's permission bits; a new file gets 0o666 less the umask."""
    tmp = f".nanocode-{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            if mode is not None:
                os.fchmod(fd, mode)
            os.fsync(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise
