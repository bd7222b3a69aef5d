"""Policies: whatever decides the agent's next assistant message, given the conversation so far.

    class Policy:
        def start(self, task_id: str) -> None: ...          # a new episode begins (optional)
        def act(self, messages: list[Message]) -> Message: ...

`act` returns one assistant message in nanocode's format: `{"role": "assistant", "content": text}` with optionally
one `"tool_call": {"name": ..., "args": {...}}` (argument values are strings, as the wire format carries them), or
`"tool_call_error": reason` for a call the model got wrong (ConversationCodec.parse_assistant produces this). The
harness (rollouts.run_episode) executes the call with the real tools, appends the tool_result, and asks again; a
message without a tool call ends the turn. `messages` starts with the system prompt (`system_prompt()`: nanocode's,
listing the registered tools) and the user's request.

Here: `ScriptedPolicy` (replays one scripted solution, checking every real tool result against the script's
expectations), `OraclePolicy` (the scripted solution of whichever task is running) and `ReadOnlyPolicy` (looks at
files with Grep and Read, changes nothing, then stops): the upper and lower bounds of the agentic eval. The
model-backed policy implements the same two methods.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from nanocode.agents.tasks.base import Script, Task
from nanocode.agents.tools import Tool, build_tools, tools_prompt
from nanocode.core.errors import NanocodeError
from nanocode.data.conversation import Message

SYSTEM_PROMPT_HEAD = (
    "you are nanocode, a coding agent.\n"
    "you communicate in lowercase and think out loud before acting.\n"
    "your tools enable you to interact with the user's UNIX system and modify and create new files:"
)
TOOL_EXAMPLE = "for example: <|tool_call_start|>Bash<|tool_arg|>command<|tool_val|>echo hello<|tool_call_end|>"


def system_prompt(tools: Mapping[str, Tool] | None = None) -> str:
    """nanocode's runtime system prompt, with one template line per tool (default: every registered tool)."""
    tools = build_tools() if tools is None else tools
    return f"{SYSTEM_PROMPT_HEAD}\n{tools_prompt(dict(tools))}\n{TOOL_EXAMPLE}"


class Policy:
    """Chooses the next assistant message (see the module docstring)."""

    name = "policy"

    def start(self, task_id: str) -> None:
        """Called before each episode; a policy that keeps no per-episode state ignores it."""

    def act(self, messages: Sequence[Message]) -> Message:
        raise NotImplementedError


class ScriptMismatch(NanocodeError):
    """A real tool result contradicts what the script expected (the script's prose would be false)."""


class ScriptedPolicy(Policy):
    """Replays one script: its steps' tool calls in order, then its final message.

    Before each turn it compares the last tool result with what the previous step expected (`Step.mismatch`); with
    `strict` a disagreement raises ScriptMismatch, else it is recorded in `mismatches`.
    """

    name = "scripted"

    def __init__(self, script: Script, *, strict: bool = True):
        self.script = script
        self.strict = strict
        self.turn = 0
        self.mismatches: list[str] = []

    def act(self, messages: Sequence[Message]) -> Message:
        if self.turn > 0:
            step, last = self.script.steps[self.turn - 1], messages[-1]
            problem = None
            if last.get("role") != "tool_result":
                problem = f"step {self.turn}: expected a tool result, got a {last.get('role')} message"
            else:
                text = last.get("content") or ""
                problem = step.mismatch(text, text.startswith("error:"))  # nanocode's tool errors say so
            if problem is not None:
                if self.strict:
                    raise ScriptMismatch(f"step {self.turn}: {problem}")
                self.mismatches.append(problem)
        if self.turn < len(self.script.steps):
            message = self.script.steps[self.turn].message()
        else:
            message = {"role": "assistant", "content": self.script.final}
        self.turn += 1
        return message


class OraclePolicy(Policy):
    """Knows every task's scripted solution and replays the one for the task at hand: the eval's upper bound."""

    name = "oracle"

    def __init__(self, tasks: Iterable[Task], *, strict: bool = True):
        self.scripts = {t.id: t.solution for t in tasks}
        self.strict = strict
        self.current: ScriptedPolicy | None = None

    def start(self, task_id: str) -> None:
        if task_id not in self.scripts:
            raise KeyError(f"oracle has no script for task {task_id!r}")
        self.current = ScriptedPolicy(self.scripts[task_id], strict=self.strict)

    def act(self, messages: Sequence[Message]) -> Message:
        if self.current is None:
            raise RuntimeError("OraclePolicy.act before start(task_id)")
        return self.current.act(messages)


_PY_PATH = re.compile(r"^(?:\./)?([\w./-]+\.py):\d+:", re.M)


class ReadOnlyPolicy(Policy):
    """Greps for definitions, reads up to `max_reads` of the files found, then stops without changing anything."""

    name = "read_only"

    def __init__(self, max_reads: int = 3):
        self.max_reads = max_reads

    def act(self, messages: Sequence[Message]) -> Message:
        calls = [m["tool_call"] for m in messages if m.get("role") == "assistant" and m.get("tool_call")]
        if not calls:
            return _call("let me look at what's in the repo first.", "Grep", pattern=r"^(def|class) ", path=".")
        found = []
        for m in messages:
            if m.get("role") == "tool_result":
                found = list(dict.fromkeys(_PY_PATH.findall(m.get("content") or "")))
                break
        read = {c["args"].get("file_path") for c in calls if c["name"] == "Read"}
        todo = [p for p in found if p not in read]
        if todo and len(read) < self.max_reads:
            return _call(f"reading {todo[0]}.", "Read", file_path=todo[0])
        seen = ", ".join(sorted(read)) or "nothing"
        return {"role": "assistant", "content": f"i read {seen} and left every file as it was."}


def _call(say: str, name: str, **args: str) -> Message:
    return {"role": "assistant", "content": say, "tool_call": {"name": name, "args": dict(args)}}
