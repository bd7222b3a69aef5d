"""The constitution: SOUL.md parsed into named principles, each with its text and an optional check.

Format: `## name` starts a principle; its body is the text an LLM critic reads; a line `<!-- check: NAME -->`
attaches the programmatic check registered under NAME in nanocode.align.checks (`none` for critic-only).
"""

from __future__ import annotations

import re
from pathlib import Path

from nanocode.align.checks import CHECKS
from nanocode.core.config import resource_root
from nanocode.core.errors import ConfigError
from nanocode.core.interfaces import Constitution, Principle
from nanocode.core.kinds import CONSTITUTIONS

_HEADING = re.compile(r"^##\s+(\S.*?)\s*$")
_CHECK = re.compile(r"^<!--\s*check:\s*([\w-]+)\s*-->\s*$")


def parse_soul(text: str, where: str = "SOUL.md") -> list[Principle]:
    principles: list[Principle] = []
    name, check, body = None, None, []

    def flush() -> None:
        if name is not None:
            principles.append(Principle(name=name, text="\n".join(body).strip(), check=check))

    for lineno, line in enumerate(text.splitlines(), start=1):
        heading = _HEADING.match(line)
        if heading:
            flush()
            name, check, body = heading.group(1), None, []
            continue
        marker = _CHECK.match(line.strip())
        if marker and name is not None:
            check_name = marker.group(1)
            if check_name != "none":
                if check_name not in CHECKS:
                    raise ConfigError(f"{where}:{lineno}: unknown check {check_name!r} (known: {', '.join(CHECKS)})")
                check = CHECKS[check_name]
            continue
        if name is not None:
            body.append(line)
    flush()
    if not principles:
        raise ConfigError(f"{where}: no principles found (a principle starts with a '## name' heading)")
    return principles


@CONSTITUTIONS.register("soul_md")
class SoulConstitution(Constitution):
    """A SOUL.md file: `## name` sections, each a principle, optionally with a programmatic check."""

    def __init__(self, path: str = "SOUL.md"):
        # The working directory, then the clone (or, installed from a wheel, the copy packaged with nanocode)
        candidates = [Path(path).expanduser(), resource_root() / path]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise ConfigError(
                f"constitution file {path!r} not found (looked in the working directory and {resource_root()})"
            )
        self.path = found
        self._text = found.read_text(encoding="utf-8")
        self._principles = parse_soul(self._text, str(found))

    def principles(self) -> list[Principle]:
        return list(self._principles)

    @property
    def text(self) -> str:
        return self._text
