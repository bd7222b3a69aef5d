"""Writing scripted solutions: steps in order, with the repository's files tracked as the edits change them.

`ScriptBuilder.edit` applies each edit to its own copy of the files, so the next edit's old_string is taken from
the text as it will really be at that point, and widens an old_string that is not unique to whole lines, then to
preceding lines, until it is (the SOUL's "just enough context"; the Edit tool refuses ambiguous strings).
"""

from __future__ import annotations

from nanocode.agents.tasks.base import Script, Step


def unique_span(text: str, start: int, end: int) -> tuple[int, int]:
    """The smallest widening of text[start:end] (to whole lines, then earlier lines, then later ones) that occurs
    exactly once in `text`."""
    if text.count(text[start:end]) == 1:
        return start, end
    start = text.rfind("\n", 0, start) + 1
    nl = text.find("\n", end)
    end = len(text) if nl < 0 else nl
    while text.count(text[start:end]) != 1:
        if start > 0:
            start = text.rfind("\n", 0, start - 1) + 1
        elif end < len(text):
            nl = text.find("\n", end + 1)
            end = len(text) if nl < 0 else nl
        else:
            raise AssertionError("no unique span: the whole file repeats itself")
    return start, end


class ScriptBuilder:
    def __init__(self, files: dict[str, str]):
        self.files = dict(files)
        self.steps: list[Step] = []

    def bash(self, say: str, command: str, *, fails: bool | None = None, expect: str | None = None) -> None:
        self.steps.append(Step(say, "Bash", {"command": command}, fails, expect))

    def read(self, say: str, path: str, *, offset: int | None = None, limit: int | None = None) -> None:
        args = {"file_path": path}
        if offset is not None:
            args["offset"] = str(offset)
        if limit is not None:
            args["limit"] = str(limit)
        first_line = self.files[path].split("\n")[offset or 0]
        self.steps.append(Step(say, "Read", args, False, first_line or None))

    def grep(self, say: str, pattern: str, path: str = ".", *, expect: str | None = None, train: bool = True) -> None:
        self.steps.append(Step(say, "Grep", {"pattern": pattern, "path": path}, False, expect, train))

    def edit(self, say: str, path: str, old: str, new: str, *, at: int | None = None) -> None:
        """Replace `old` (the occurrence at index `at`, default the first) with `new` in `path`."""
        text = self.files[path]
        pos = text.index(old) if at is None else at
        if text[pos : pos + len(old)] != old:
            raise AssertionError(f"{path}: {old!r} is not at index {pos}")
        start, end = unique_span(text, pos, pos + len(old))
        old_string = text[start:end]
        new_string = text[start:pos] + new + text[pos + len(old) : end]
        self.files[path] = text[:start] + new_string + text[end:]
        self.steps.append(
            Step(say, "Edit", {"file_path": path, "old_string": old_string, "new_string": new_string}, False, path)
        )

    def script(self, final: str) -> Script:
        return Script(tuple(self.steps), final)
