"""Edit: replace one exact occurrence of `old_string` with `new_string`, or create a file.

As nanocode: omitting `old_string` (or passing it empty) creates the file with `new_string` as its content, and
fails with "error: file already exists, use old_string to edit" when it exists; "error: old_string not found in
file" when there is no match; number prefixes the model copies from a Read result (`^ *\\d+→`) are stripped from
both strings first; the result is the path, then the whole new file numbered like Read. Choices where the reference
is silent (nanocode replaced the first occurrence; its SOUL demands a unique old_string, so we enforce it):
- more than one match: "error: old_string matches N times in file; include more surrounding lines to make it unique";
- a CRLF file is matched with CRLF-converted strings when the LF ones are not found;
- binary files, non-UTF-8 files and files over max_file_bytes are refused; writes are atomic and keep the mode;
- the numbered file in the result is cut after max_shown_lines lines, with a marker.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from nanocode.agents.sandbox import Sandbox
from nanocode.agents.tools.base import Arg, Tool, ToolError, ToolResult, number_lines
from nanocode.agents.tools.files import read_text, split_lines
from nanocode.core.kinds import TOOLS

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
        Arg("old_string", str, False, "exact text to replace, unique in the file (omit to create a new file)"),
        Arg("new_string", str, True, "the replacement text, or the content of the new file"),
    )
    needs_approval = True

    def __init__(self, *, max_file_bytes: int = 10 * 1024**2, max_shown_lines: int = 2000):
        self.max_file_bytes = max_file_bytes
        self.max_shown_lines = max_shown_lines

    def run(self, args: dict[str, Any], sandbox: Sandbox) -> ToolResult:
        path = sandbox.resolve(args["file_path"])
        old = strip_line_numbers(args["old_string"] or "")
        new = strip_line_numbers(args["new_string"])
        if not old:
            if path.exists() or path.is_symlink():
                return ToolError("file already exists, use old_string to edit")
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(path, new)
            return self._show(args["file_path"], new)
        text = read_text(path, self.max_file_bytes)
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
        _write(path, updated)
        return self._show(args["file_path"], updated)

    def _show(self, shown_path: str, text: str) -> ToolResult:
        lines = split_lines(text)
        if not lines:
            return ToolResult(f"{shown_path}\n(empty file)")
        body = number_lines(lines[: self.max_shown_lines])
        if len(lines) > self.max_shown_lines:
            body += f"\n… [{len(lines) - self.max_shown_lines} more lines not shown]"
        return ToolResult(f"{shown_path}\n{body}")


def _write(path: Path, text: str) -> None:
    """Write atomically (a crash never leaves half a file) and keep an existing file's permission bits."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        if path.exists():
            shutil.copymode(path, tmp)
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
