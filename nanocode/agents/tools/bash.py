"""Bash: run a shell command in the sandbox (see nanocode.agents.sandbox for every limit).

Formats: the merged stdout+stderr, trailing whitespace removed, or "(no output)", as nanocode. The reference gives
"error: command failed: ..." for failures without the rest; we fill it in as one reason line, then the output:
- non-zero exit: "error: command failed: exit code 2\\n<output>";
- stopped by the sandbox: "error: command failed: timed out after 30 s" / "output exceeded 65536 bytes; command
  stopped" / "too many processes (more than 128); command stopped", then whatever output there was;
- output cut at the sandbox bound ends with "[output truncated at N bytes]";
- a command over MAX_COMMAND_CHARS characters is refused before anyone is asked to approve it (a longer one is a
  script: the model can write it with Edit and run it).
"""

from __future__ import annotations

from typing import Any

from nanocode.agents.sandbox import Sandbox
from nanocode.agents.tools.base import Arg, Tool, ToolError, ToolResult
from nanocode.core.kinds import TOOLS

MAX_COMMAND_CHARS = 32 * 1024


@TOOLS.register("Bash")
class Bash(Tool):
    """Run a shell command in the workspace (contained by the sandbox)."""

    name = "Bash"
    description = "Run a bash command in the workspace root and return its output (stdout and stderr)."
    args = (Arg("command", str, True, "the bash command to run", max_chars=MAX_COMMAND_CHARS),)
    needs_approval = True

    def run(self, args: dict[str, Any], sandbox: Sandbox) -> ToolResult:
        command = args["command"]
        if not command.strip():
            return ToolError("empty command")
        result = sandbox.run(command)
        output = result.output.rstrip()
        if result.truncated:
            output += f"\n[output truncated at {sandbox.max_output_bytes} bytes]"
        if result.stopped is not None:
            reason = result.stop_detail
        elif result.exit_code != 0:
            reason = f"exit code {result.exit_code}"
        else:
            return ToolResult(output or "(no output)")
        return ToolError(f"command failed: {reason}" + (f"\n{output}" if output else ""))
