"""Grep: search files under a path for a regular expression, in pure Python (`re`), over the sandbox only.

Output as `grep -rn`, which nanocode ran: `path:lineno:text` for matches, `path-lineno-text` for context lines
(-A after, -B before), "--" between non-adjacent groups when context is on, paths joined to the `path` argument as
given (default ".", so "./src/a.py:3:..."), and "no matches found" when nothing matches. Choices where nanocode
differs or the reference is silent:
- the pattern is a Python regex (nanocode's grep used basic regex: there `a|b` is literal, here it alternates);
- every text file is searched (nanocode limited grep to *.py, *.md and *.json); binary files, files over
  max_file_bytes, symlinks met while walking (as grep -r) and VCS/cache/virtualenv directories are skipped; a file
  given directly is still shown with its path;
- the output is bounded: lines cut at max_line_chars, at most max_output_lines lines and a time budget (nanocode's
  10 s), each marked when hit. A pathological regex on one line can still outlast the budget (Python's re cannot be
  interrupted); the small model's patterns are plain words and names.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nanocode.agents.sandbox import Sandbox
from nanocode.agents.tools.base import Arg, Tool, ToolError, ToolResult
from nanocode.agents.tools.files import SNIFF_BYTES, looks_binary, split_lines
from nanocode.core.kinds import TOOLS

SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", ".mypy_cache", ".pytest_cache",
     ".ruff_cache", ".tox", ".eggs"}
)  # fmt: skip


@TOOLS.register("Grep")
class Grep(Tool):
    """Search files for a regular expression (path:line:text)."""

    name = "Grep"
    description = "Search files for a regular expression; prints path:line:text for each matching line."
    args = (
        Arg("pattern", str, True, "regular expression (Python syntax) to search for"),
        Arg("path", str, False, "file or directory to search, relative to the workspace root", "."),
        Arg("-A", int, False, "lines of context to show after each match", 0, in_prompt=False),
        Arg("-B", int, False, "lines of context to show before each match", 0, in_prompt=False),
    )

    def __init__(
        self,
        *,
        max_output_lines: int = 250,
        max_line_chars: int = 500,
        max_context: int = 20,
        max_file_bytes: int = 8 * 1024**2,
        time_budget_s: float = 10.0,
    ):
        self.max_output_lines = max_output_lines
        self.max_line_chars = max_line_chars
        self.max_context = max_context
        self.max_file_bytes = max_file_bytes
        self.time_budget_s = time_budget_s

    def run(self, args: dict[str, Any], sandbox: Sandbox) -> ToolResult:
        after, before = args["-A"], args["-B"]
        if after < 0 or before < 0:
            return ToolError("-A and -B must be 0 or more")
        after, before = min(after, self.max_context), min(before, self.max_context)
        try:
            regex = re.compile(args["pattern"])
        except re.error as e:
            return ToolError(f"invalid regex: {e}")
        shown_root = args["path"]
        target = sandbox.resolve(shown_root)
        if not target.exists():
            return ToolError("path not found")
        deadline = time.monotonic() + self.time_budget_s
        out: list[str] = []
        note = ""
        for path, shown in _files(target, shown_root):
            if time.monotonic() > deadline:
                note = f"[search stopped after {self.time_budget_s:g} s]"
                break
            lines = self._text_lines(path)
            if lines is None:
                continue
            hits = [i for i, line in enumerate(lines) if regex.search(line)]
            matched = set(hits)
            for group in _groups(hits, before, after, len(lines)):
                if out and (before or after):
                    out.append("--")
                for i in group:
                    sep = ":" if i in matched else "-"
                    out.append(f"{shown}{sep}{i + 1}{sep}{self._cut(lines[i])}")
            if len(out) > self.max_output_lines:
                del out[self.max_output_lines :]
                note = f"[output truncated at {self.max_output_lines} lines]"
                break
        if not out:
            return ToolResult(note or "no matches found")
        return ToolResult("\n".join(out + ([note] if note else [])))

    def _text_lines(self, path: Path) -> list[str] | None:
        """The file's lines, or None for a file to skip (binary, too large, unreadable)."""
        try:
            if path.stat().st_size > self.max_file_bytes:
                return None
            data = path.read_bytes()
        except OSError:
            return None
        if looks_binary(data[:SNIFF_BYTES]):
            return None
        return split_lines(data.decode("utf-8", errors="replace"))

    def _cut(self, line: str) -> str:
        return line if len(line) <= self.max_line_chars else line[: self.max_line_chars] + "… [line cut]"


def _files(target: Path, shown_root: str) -> Iterator[tuple[Path, str]]:
    """(real path, path as grep would print it) of every file to search, in sorted order."""
    if not target.is_dir():
        yield target, shown_root
        return
    for dirpath, dirnames, filenames in os.walk(target):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)  # os.walk never follows dir symlinks
        rel = os.path.relpath(dirpath, target)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            yield path, os.path.join(shown_root, name) if rel == "." else os.path.join(shown_root, rel, name)


def _groups(hits: list[int], before: int, after: int, n_lines: int) -> Iterator[list[int]]:
    """Runs of line indices to print: each hit with its context, merged when they touch (as grep does)."""
    group: list[int] = []
    for hit in hits:
        start, end = max(0, hit - before), min(n_lines - 1, hit + after)
        if group and start <= group[-1] + 1:
            group.extend(range(group[-1] + 1, end + 1))
        else:
            if group:
                yield group
            group = list(range(start, end + 1))
    if group:
        yield group
