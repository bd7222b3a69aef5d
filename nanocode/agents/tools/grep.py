"""Grep: search files under a path for a regular expression, in pure Python (`regex`), over the sandbox only.

Output as `grep -rn`, which nanocode ran: `path:lineno:text` for matches, `path-lineno-text` for context lines
(-A after, -B before), "--" between non-adjacent groups when context is on, paths joined to the `path` argument as
given (default ".", so "./src/a.py:3:..."), and "no matches found" when nothing matches. Choices where nanocode
differs or the reference is silent:
- the pattern is a Python regex (nanocode's grep used basic regex: there `a|b` is literal, here it alternates),
  run by the `regex` package, which takes Python's syntax and, unlike `re`, a timeout: the model writes the
  pattern, and `(a|aa)+$` on a long line backtracks for hours. Each search gets what is left of the time budget,
  so the whole call ends within it (with the matches found so far and a marker naming where it stopped; `regex`
  counts its timeout in CPU time, so only an overloaded machine makes the wall time longer). A thread
  cannot be killed and a subprocess per call would cost a process start and a copy of the text, so the engine
  that stops itself is the simple choice. `regex` builds a counted repeat out in memory when it compiles
  (`a{1000000000}` asks for gigabytes), so a pattern whose nested counted repeats multiply to more than
  MAX_REPEAT_PRODUCT is refused before it is compiled;
- every text file is searched (nanocode limited grep to *.py, *.md and *.json); binary files, files over
  max_file_bytes, symlinks met while walking (as grep -r), FIFOs, devices and sockets (never opened: a FIFO would
  block for ever) and VCS/cache/virtualenv directories are skipped; a file given directly is still shown with its
  path;
- files are reached through directory fds (os.fwalk, and opens relative to them with O_NOFOLLOW; the path
  argument through nanocode.agents.tools.paths), so no symlink swapped mid-search leads out of the workspace;
- the output is bounded: lines cut at max_line_chars, at most max_output_lines lines and a time budget (nanocode's
  10 s), each marked when hit; directories deeper than MAX_DEPTH levels are not searched (said in a marker).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from collections.abc import Iterator
from typing import Any

import regex

from nanocode.agents.sandbox import Sandbox
from nanocode.agents.tools.base import Arg, Tool, ToolError, ToolFailure, ToolResult
from nanocode.agents.tools.files import SNIFF_BYTES, looks_binary, split_lines
from nanocode.agents.tools.paths import SpecialFile, open_beneath
from nanocode.core.kinds import TOOLS

NO_MATCHES = "no matches found"  # the whole result when nothing matches (scripts expect it)
MAX_PATTERN_CHARS = 1000
MAX_DEPTH = 64  # directory levels searched (os.fwalk recurses: a 1000-deep tree would exhaust Python's stack)
MAX_REPEAT_PRODUCT = 10_000  # `a{10000}` compiles to a few MB; `a{10**6}` to a quarter of a GB
_COUNTED_REPEAT = re.compile(r"\{(\d*)(?:,(\d*))?\}")

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
        Arg("pattern", str, True, "regular expression (Python syntax) to search for", max_chars=MAX_PATTERN_CHARS),
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
        after, before = min(args["-A"], self.max_context), min(args["-B"], self.max_context)
        size = repeat_product(args["pattern"])
        if size > MAX_REPEAT_PRODUCT:
            return ToolError(
                f"pattern repeats too much: its counted repeats multiply to {size} (at most {MAX_REPEAT_PRODUCT})"
            )
        try:
            pattern = regex.compile(args["pattern"])
        except (regex.error, OverflowError, RecursionError) as e:
            return ToolError(f"invalid regex: {e}")
        shown_root = args["path"]
        try:
            fd, info = open_beneath(sandbox.root, shown_root)
        except (FileNotFoundError, NotADirectoryError):
            return ToolError("path not found")
        except SpecialFile:
            return ToolError("not a regular file or directory")
        deadline = time.monotonic() + self.time_budget_s
        out: list[str] = []
        note = ""
        too_deep: list[str] = []
        with contextlib.closing(self._files(fd, info, shown_root, too_deep)) as files:  # closes the fds on a break
            for shown, lines in files:
                if time.monotonic() > deadline:
                    note = f"[search stopped after {self.time_budget_s:g} s]"
                    break
                try:
                    hits = _hits(pattern, lines, deadline)
                except TimeoutError as e:
                    note = f"[search stopped after {self.time_budget_s:g} s: the pattern is too slow on {shown}:{e}]"
                    break
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
        if too_deep and not note:
            note = f"[{len(too_deep)} directories deeper than {MAX_DEPTH} levels not searched, e.g. {too_deep[0]}]"
        if not out:
            return ToolResult(note or NO_MATCHES)
        return ToolResult("\n".join(out + ([note] if note else [])))

    def _files(
        self, fd: int, info: os.stat_result, shown_root: str, too_deep: list[str]
    ) -> Iterator[tuple[str, list[str]]]:
        """(path as grep would print it, lines) of every text file to search, in sorted order; owns `fd`. The
        directories not entered for being too deep are added to `too_deep`."""
        try:
            if stat.S_ISREG(info.st_mode):
                lines = self._text_lines(fd)
                if lines is not None:
                    yield shown_root, lines
                return
            if not stat.S_ISDIR(info.st_mode):
                raise ToolFailure("not a regular file or directory")
            for dirpath, dirnames, filenames, dir_fd in os.fwalk(".", dir_fd=fd):  # never follows a symlink
                dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
                rel = os.path.relpath(dirpath, ".")
                if dirnames and rel.count(os.sep) + 1 >= MAX_DEPTH:
                    too_deep.extend(os.path.join(shown_root, rel, d) for d in dirnames)
                    dirnames.clear()
                for name in sorted(filenames):
                    lines = self._entry_lines(dir_fd, name)
                    if lines is not None:
                        yield (
                            os.path.join(shown_root, name) if rel == "." else os.path.join(shown_root, rel, name),
                            lines,
                        )
        finally:
            os.close(fd)

    def _entry_lines(self, dir_fd: int, name: str) -> list[str] | None:
        """The lines of `name` in `dir_fd` when it is a regular text file (never opened otherwise), else None."""
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or info.st_size > self.max_file_bytes:
                return None  # symlinks, FIFOs, devices, sockets, directories, big files
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            return None
        try:
            return self._text_lines(fd)
        finally:
            os.close(fd)

    def _text_lines(self, fd: int) -> list[str] | None:
        """The lines of the open file `fd`, or None for a file to skip (not regular, binary, too large, unreadable)."""
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > self.max_file_bytes:
                return None  # checked again on the open file: it may have been swapped since the walk saw it
            os.set_blocking(fd, True)
            data = _read_at_most(fd, self.max_file_bytes + 1)
        except OSError:
            return None
        if len(data) > self.max_file_bytes or looks_binary(data[:SNIFF_BYTES]):
            return None
        return split_lines(data.decode("utf-8", errors="replace"))

    def _cut(self, line: str) -> str:
        return line if len(line) <= self.max_line_chars else line[: self.max_line_chars] + "… [line cut]"


def repeat_product(pattern: str) -> int:
    """The largest product of counted repeats (`{m}`, `{m,n}`) nested in `pattern`: `(?:a{100}){100}` is 10000.
    A scan of the text (escapes and character classes skipped), so it needs no compile and never fails."""
    groups = [1]  # the largest cost of an item in each open group
    last, i = 1, 0  # the cost of the item just read, which a quantifier multiplies
    while i < len(pattern):
        char = pattern[i]
        repeat = _COUNTED_REPEAT.match(pattern, i) if char == "{" else None
        if repeat:
            last *= max(int(repeat.group(1) or 0), int(repeat.group(2) or 0), 1)
            i = repeat.end()
        elif char == "(":
            groups.append(1)
            i += 1
            continue
        elif char == ")" and len(groups) > 1:
            last = groups.pop()
            i += 1
        elif char == "[":
            i = _class_end(pattern, i)
            last = 1
        else:
            last = 1
            i += 2 if char == "\\" else 1
        groups[-1] = max(groups[-1], last)
    return max(groups)


def _class_end(pattern: str, i: int) -> int:
    """The index after the character class opening at `i` (a `]` right after `[` or `[^` is a literal)."""
    i += 1
    if pattern.startswith("^", i):
        i += 1
    if pattern.startswith("]", i):
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1


def _read_at_most(fd: int, n: int) -> bytes:
    chunks, size = [], 0
    while size < n:
        chunk = os.read(fd, min(n - size, 1024**2))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _hits(pattern: regex.Pattern, lines: list[str], deadline: float) -> list[int]:
    """Indices of the lines `pattern` matches; TimeoutError("<line number>") once the deadline passes, even inside
    one search (the regex engine checks its timeout as it backtracks)."""
    hits = []
    for i, line in enumerate(lines):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(str(i + 1))
        try:
            found = pattern.search(line, timeout=left)
        except TimeoutError:
            raise TimeoutError(str(i + 1)) from None
        if found:
            hits.append(i)
    return hits


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
