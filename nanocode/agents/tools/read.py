"""Read: a file's lines, numbered as nanocode shows them (`f"{i:>5}→{line}"`).

Arguments as nanocode: `file_path`, `offset` (lines to skip, default 0) and `limit` (lines to show, default 100);
numbering starts at offset + 1. Choices where the reference is silent:
- "(empty file)" for an empty file; "error: offset N is past the end of the file (M lines)" beyond the end;
- binary files are refused ("error: binary file (12.0 KiB), not shown"), never dumped;
- a huge file is streamed: only the lines up to offset + limit are read, each line is cut at max_line_chars
  (marked "… [line cut]"), and `limit` is capped at max_limit, so one call returns a bounded amount of text.
"""

from __future__ import annotations

from typing import Any

from nanocode.agents.sandbox import Sandbox
from nanocode.agents.tools.base import Arg, Tool, ToolError, ToolResult, number_lines
from nanocode.agents.tools.files import iter_lines, open_text
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
        Arg("limit", int, False, "maximum number of lines to show", 100),
    )

    def __init__(self, *, max_limit: int = 2000, max_line_chars: int = 2000):
        self.max_limit = max_limit
        self.max_line_chars = max_line_chars

    def run(self, args: dict[str, Any], sandbox: Sandbox) -> ToolResult:
        offset, limit = args["offset"], args["limit"]
        if offset < 0:
            return ToolError("offset must be 0 or more")
        if limit < 1:
            return ToolError("limit must be 1 or more")
        limit = min(limit, self.max_limit)
        path = sandbox.resolve(args["file_path"])
        shown: list[str] = []
        count = 0
        with open_text(path) as f:
            for line, cut in iter_lines(f, self.max_line_chars * 4):  # UTF-8: up to 4 bytes a character
                count += 1
                if count <= offset:
                    continue
                if cut or len(line) > self.max_line_chars:
                    line = line[: self.max_line_chars] + LINE_CUT_MARK
                shown.append(line)
                if len(shown) == limit:
                    break
        if count == 0:
            return ToolResult("(empty file)")
        if not shown:
            return ToolError(f"offset {offset} is past the end of the file ({count} lines)")
        return ToolResult(number_lines(shown, start=offset + 1))
