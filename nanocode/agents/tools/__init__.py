"""Agent tools: nanocode's Read, Edit, Grep and Bash, registered in `nanocode.core.kinds.TOOLS` by exact name.

    >>> tools = build_tools()                       # {"Read": Read(), "Edit": Edit(), "Grep": Grep(), "Bash": Bash()}
    >>> tools["Read"]({"file_path": "a.py"}, sandbox).text

A fork adds a tool by subclassing `Tool` and registering it (`@TOOLS.register("Ls")`); `build_tools()` picks it up.
"""

from __future__ import annotations

from collections.abc import Iterable

from nanocode.agents.tools.base import Arg, Tool, ToolError, ToolFailure, ToolResult, number_lines
from nanocode.agents.tools.bash import Bash
from nanocode.agents.tools.edit import Edit, strip_line_numbers
from nanocode.agents.tools.grep import Grep
from nanocode.agents.tools.read import Read
from nanocode.core.kinds import TOOLS

NANOCODE_TOOLS = ("Read", "Edit", "Grep", "Bash")  # nanocode's four, in its system prompt's order


def build_tools(names: Iterable[str] | None = None) -> dict[str, Tool]:
    """Instances of the named registered tools (default: nanocode's four, then any others registered), by name."""
    if names is None:
        names = [*NANOCODE_TOOLS, *(n for n in TOOLS.names() if n not in NANOCODE_TOOLS)]
    return {name: TOOLS.get(name)() for name in names}


def tools_prompt(tools: dict[str, Tool]) -> str:
    """The tool lines of nanocode's system prompt, one `Name:  <|tool_call_start|>...` template per tool."""
    return "\n".join(tool.prompt_template() for tool in tools.values())


__all__ = [
    "NANOCODE_TOOLS",
    "Arg",
    "Bash",
    "Edit",
    "Grep",
    "Read",
    "Tool",
    "ToolError",
    "ToolFailure",
    "ToolResult",
    "build_tools",
    "number_lines",
    "strip_line_numbers",
    "tools_prompt",
]
