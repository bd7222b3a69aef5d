"""Read: a file's lines, numbered as nanocode shows them (`f"{i:>5}→{line}"`).

Arguments as nanocode: `file_path`, `offset` (lines to skip, default 0) and `limit` (lines to show, default 100);
numbering starts at offset + 1. Choices where the reference is silent:
- "(empty file)" for an empty file; "error: offset N is past the end of the file (M lines)" beyond the end;
- binary files are refused ("error: binary file (12.0 KiB), not shown"), never dumped;
- a huge file is streamed: only the lines up to offset + limit are read, each line is cut at max_line_chars
  (marked "… [line cut]"), and `limit` is capped at max_limit, so one call returns a bounded amount of text;
  reading stops after max_scan_bytes of the file (an offset deeper than that is an error, and lines cut short by
  it end with a marker), so one call also costs a bounded amount of reading;
- the file is opened relative to the workspace's directory fd without following a symlink out of it (see
  nanocode.agents.tools.paths); FIFOs, devices and sockets are refused, never opened for reading.
"""

from __future__ import annotations

from typing import Any

from nanocode.agents.sandbox import Sandbox
from nanocode.agents.tools.base import Arg, Tool, ToolError, ToolResult, number_lines
from nanocode.agents.tools.files import describe_size, iter_lines, open_text
from nanocode.core.kinds import TOOLS

LINE_CUT_MARK = "… [line cut]"


@TOOLS.register("Read")
class Read(Tool):
    """Read a file, with numbered lines."""

    name = "Read"
    description = "Read a file; each line is shown with its line number."
    args = (
        Arg("file_path", str, True, "path of the file, relative to the workspace root"),
        Arg("offset", int, False, "number of lines to skip before the first one shown", 0),
        Arg("limit", int, False, "maximum number of lines to show", 100, minimum=1),
    )

    def __init__(self, *, max_limit: int = 2000, max_line_chars: int = 2000, max_scan_bytes: int = 256 * 1024**2):
        self.max_limit = max_limit
        self.max_line_chars = max_line_chars
        self.max_scan_bytes = max_scan_bytes

    def run(self, args: dict[str, Any], sandbox: Sandbox) -> ToolResult:
        offset, limit = args["offset"], min(args["limit"], self.max_limit)
        shown: list[str] = []
        count = 0
        with open_text(sandbox.root, args["file_path"]) as f:
            # UTF-8: up to 4 bytes a character
            for line, cut in iter_lines(f, self.max_line_chars * 4, self.max_scan_bytes):
                count += 1
                if count <= offset:
                    continue
                if cut or len(line) > self.max_line_chars:
                    line = line[: self.max_line_chars] + LINE_CUT_MARK
                shown.append(line)
                if len(shown) == limit:
                    break
            stopped = len(shown) < limit and f.tell() >= self.max_scan_bytes and f.read(1) != b""
        scanned = describe_size(self.max_scan_bytes)
        if count == 0:
            return ToolResult("(empty file)")
        if not shown:
            if stopped:
                return ToolError(f"offset {offset} is beyond the first {scanned} of the file ({count} lines read)")
            return ToolError(f"offset {offset} is past the end of the file ({count} lines)")
        text = number_lines(shown, start=offset + 1)
        return ToolResult(text + (f"\n[reading stopped after the first {scanned} of the file]" if stopped else ""))
