"""The client's function tools: parsed, shown to the model in its training format, and its calls checked against them.

Shown: nanocode learned its tools from its system prompt (`policy.system_prompt`): a head, one template line per
tool, an example. A request's tools are rendered the same way (`tools_prompt`), ahead of the client's own system
text, so the model sees exactly the tools the client declared, once: a system text that already has a template line
for every declared tool (nanocode's own ServedPolicy sends its system prompt) is left as it is. With
tool_choice "none" no tool is shown.

Checked (`accept_call`): the model's call comes back as a tool call only when its name is one the client declared,
tool_choice allows it, and its arguments, turned from the wire format's strings into the declared JSON types, satisfy
the tool's schema (json_schema.py). Anything else is given back as text (`call_as_text`), never as a tool call.

tool_choice "required" and a named function are enforced by decoding, not by hope: the assistant turn is opened
with `<|tool_call_start|>` (and the function's name), so the model can only write a call's arguments (`forced_prefix`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nanocode.agents.api_errors import bad
from nanocode.agents.json_schema import check_schema, declared_types, schema_problem
from nanocode.agents.policy import SYSTEM_PROMPT_HEAD, TOOL_EXAMPLE
from nanocode.core.interfaces import SPECIAL_TOKENS
from nanocode.data.conversation import ConversationCodec, Message, tool_template

TOOL_CHOICES = ("none", "auto", "required")


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    @property
    def arg_names(self) -> list[str]:
        return list(self.parameters.get("properties", {}))

    def template(self) -> str:
        return tool_template(self.name, self.arg_names)


@dataclass(frozen=True)
class ToolChoice:
    mode: str = "auto"  # none | auto | required | function
    name: str | None = None  # the function, for mode "function"


def _function(spec: Any, where: str) -> FunctionTool:
    if not (isinstance(spec, dict) and isinstance(spec.get("name"), str) and spec["name"].strip()):
        raise bad(f"{where}: a function tool needs a name", "tools")
    name = spec["name"]
    if any(s in name for s in SPECIAL_TOKENS) or any(c.isspace() for c in name):
        raise bad(f"{where}: function name {name!r} may hold no whitespace or special token", "tools")
    parameters = spec.get("parameters") or {"type": "object", "properties": {}}
    try:
        check_schema(parameters, f"{where}.parameters")
    except ValueError as e:
        raise bad(str(e), "tools") from None
    if declared_types(parameters) not in ([], ["object"]):
        raise bad(f"{where}.parameters must be an object schema", "tools")
    return FunctionTool(name, str(spec.get("description") or ""), parameters)


def parse_tools(tools: Any, *, nested: bool = True) -> dict[str, FunctionTool]:
    """Chat Completions' `[{"type": "function", "function": {...}}]` (nested) or the Responses API's flat
    `[{"type": "function", "name": ...}]` -> {name: FunctionTool}."""
    if tools is None:
        return {}
    if not isinstance(tools, list):
        raise bad("tools must be a list", "tools")
    out: dict[str, FunctionTool] = {}
    for i, tool in enumerate(tools):
        if not (isinstance(tool, dict) and tool.get("type") == "function"):
            raise bad(f"tools[{i}]: only function tools are supported ({{'type': 'function', ...}})", "tools")
        tool = _function(tool.get("function") if nested else tool, f"tools[{i}]")
        if tool.name in out:
            raise bad(f"tools[{i}]: function {tool.name!r} is declared twice", "tools")
        out[tool.name] = tool
    return out


def parse_tool_choice(value: Any, tools: Mapping[str, FunctionTool]) -> ToolChoice:
    """ "none" | "auto" | "required" | {"type": "function", "function": {"name"}} (chat) or {"type": "function",
    "name"} (responses). Default: "auto" with tools, "none" without."""
    if value is None:
        return ToolChoice("auto" if tools else "none")
    if value in TOOL_CHOICES:
        if value == "required" and not tools:
            raise bad("tool_choice 'required' needs tools", "tool_choice")
        return ToolChoice(value)
    if isinstance(value, dict) and value.get("type") == "function":
        fn = value.get("function") if isinstance(value.get("function"), dict) else value
        name = fn.get("name")
        if name not in tools:
            raise bad(f"tool_choice names function {name!r}, which tools do not declare", "tool_choice")
        return ToolChoice("function", name)
    raise bad("tool_choice must be 'none', 'auto', 'required' or a function", "tool_choice")


def tools_prompt(tools: Mapping[str, FunctionTool]) -> str:
    """nanocode's system prompt over these tools (the training example only where its Bash tool is declared)."""
    lines = [SYSTEM_PROMPT_HEAD, *(tool.template() for tool in tools.values())]
    if "command" in (tools["Bash"].arg_names if "Bash" in tools else []):
        lines.append(TOOL_EXAMPLE)
    return "\n".join(lines)


def show_tools(messages: list[Message], tools: Mapping[str, FunctionTool], choice: ToolChoice) -> list[Message]:
    """The conversation with the tools in its system prompt (see the module docstring)."""
    if not tools or choice.mode == "none":
        return messages
    has_system = messages[0]["role"] == "system"
    system = messages[0].get("content") or "" if has_system else ""
    if all(f"{tool.name}:  <|tool_call_start|>{tool.name}" in system for tool in tools.values()):
        return messages  # the client's system text lists these tools nanocode's way already
    merged = tools_prompt(tools) + (f"\n\n{system}" if system else "")
    return [{"role": "system", "content": merged}, *messages[1 if has_system else 0 :]]


def forced_prefix(codec: ConversationCodec, choice: ToolChoice) -> list[int]:
    """The ids that open the assistant turn: a call's start for "required", its start and name for a function."""
    if choice.mode == "required":
        return [codec.ids["tool_call_start"]]
    if choice.mode == "function":
        return [codec.ids["tool_call_start"], *codec.tok.encode(choice.name)]
    return []


def typed_value(text: str, schema: Any) -> Any:
    """One argument as the model wrote it (a string) -> the JSON value its schema declares, where it parses."""
    kinds = declared_types(schema)
    if not kinds or kinds == ["string"]:
        return text
    candidate = text.strip()
    if "boolean" in kinds and candidate.lower() in ("true", "false"):
        candidate = candidate.lower()
    try:
        value = json.loads(candidate)
    except ValueError:
        return text
    if "number" in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value) if "integer" not in kinds else value
    if schema_problem(value, {"type": kinds}) is None:
        return value
    return text


def accept_call(
    call: Mapping[str, Any], tools: Mapping[str, FunctionTool], choice: ToolChoice
) -> tuple[dict[str, Any] | None, str | None]:
    """(typed arguments, None) for a call the client can take, else (None, the reason it cannot)."""
    name = call["name"]
    if choice.mode == "none":
        return None, "tool_choice is 'none'"
    if name not in tools:
        return None, f"{name!r} is not a declared tool"
    if choice.mode == "function" and name != choice.name:
        return None, f"tool_choice asks for {choice.name!r}"
    properties = tools[name].parameters.get("properties", {})
    args = {k: typed_value(v, properties.get(k)) for k, v in (call.get("args") or {}).items()}
    problem = schema_problem(args, tools[name].parameters)
    return (None, problem) if problem else (args, None)


def call_as_text(call: Mapping[str, Any]) -> str:
    """A call the client cannot take, as the text of the reply: `Name {"arg": "value", ...}`."""
    return f"{call['name']} {json.dumps(call.get('args') or {}, ensure_ascii=False)}"
