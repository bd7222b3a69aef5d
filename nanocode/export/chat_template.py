"""The Jinja chat template of an exported model: a conversation rendered exactly as ConversationCodec renders it.

    <|bos|><|user_start|>{system}\n\n{user}<|user_end|><|assistant_start|>{text}<|tool_call_start|>Read
    <|tool_arg|>file_path<|tool_val|>a.py<|tool_call_end|><|assistant_end|><|tool_result_start|>{output}...

It reads nanocode's messages (`tool_call: {name, args}`, role `tool_result`) and the transformers / OpenAI shape
(`tool_calls: [{function: {name, arguments}}]` with arguments as a mapping, role `tool`); one call per assistant turn,
as the model was trained. With `tools` (transformers' `apply_chat_template(tools=...)`, vLLM's request tools) and
`tools_head` given at export, the tools are listed in the system prompt as nanocode lists them (head, one template line
per tool, the Bash example when a Bash tool takes `command`), unless the system text already lists every one.
"""

from __future__ import annotations

import json

# Fragments joined with nothing between them: the template's own text adds no whitespace to the rendering.
_TOOLS = [
    "{%- if tools and tools_head is not none -%}",
    "{%- set ns.listed = true -%}{%- set ns.lines = tools_head -%}{%- set ns.example = false -%}",
    "{%- for tool in tools -%}",
    "{%- set f = tool.function if tool.function is defined else tool -%}",
    "{%- set props = (f.parameters.properties if f.parameters is defined and f.parameters",
    " and f.parameters.properties is defined else none) or {} -%}",
    "{%- set ns.line = f.name ~ ':  <|tool_call_start|>' ~ f.name -%}",
    "{%- set ns.listed = ns.listed and ns.system is not none and ns.line in ns.system -%}",
    "{%- for arg in props -%}{%- set ns.line = ns.line ~ '<|tool_arg|>' ~ arg ~ '<|tool_val|>...' -%}{%- endfor -%}",
    "{%- set ns.lines = ns.lines ~ '\\n' ~ ns.line ~ '<|tool_call_end|>' -%}",
    "{%- if f.name == 'Bash' and 'command' in props -%}{%- set ns.example = true -%}{%- endif -%}",
    "{%- endfor -%}",
    "{%- if ns.example -%}{%- set ns.lines = ns.lines ~ '\\n' ~ tool_example -%}{%- endif -%}",
    "{%- if not ns.listed -%}",
    "{%- set ns.system = ns.lines ~ ('\\n\\n' ~ ns.system if ns.system else '') -%}",
    "{%- endif -%}",
    "{%- endif -%}",
]

_MESSAGES = [
    "<|bos|>",
    "{%- for m in body -%}",
    "{%- if m.role == 'user' -%}",
    "<|user_start|>{%- if loop.first and ns.system is not none -%}{{ ns.system ~ '\\n\\n' }}{%- endif -%}",
    "{{ m.content or '' }}<|user_end|>",
    "{%- elif m.role == 'assistant' -%}",
    "<|assistant_start|>{{ m.content or '' }}",
    "{%- set call = m.tool_call -%}",
    "{%- if not call and m.tool_calls -%}",
    "{%- if m.tool_calls | length > 1 -%}",
    "{{ raise_exception('nanocode makes one tool call per assistant turn, got ' ~ (m.tool_calls | length)) }}",
    "{%- endif -%}",
    "{%- set f = m.tool_calls[0].function if m.tool_calls[0].function is defined else m.tool_calls[0] -%}",
    "{%- set call = {'name': f.name, 'args': f.arguments} -%}",
    "{%- endif -%}",
    "{%- if call -%}",
    "{%- if call.args is string -%}",
    "{{ raise_exception('tool call arguments must be a mapping, not a JSON string') }}",
    "{%- endif -%}",
    "<|tool_call_start|>{{ call.name }}",
    "{%- for k, v in (call.args or {}).items() -%}<|tool_arg|>{{ k }}<|tool_val|>{{ v }}{%- endfor -%}",
    "<|tool_call_end|>",
    "{%- endif -%}",
    "<|assistant_end|>",
    "{%- elif m.role == 'tool' or m.role == 'tool_result' -%}",
    "<|tool_result_start|>{{ m.content or '' }}<|tool_result_end|>",
    "{%- else -%}",
    "{{ raise_exception('unknown role ' ~ m.role ~ ' (system comes first, then user, assistant, tool)') }}",
    "{%- endif -%}",
    "{%- endfor -%}",
    "{%- if add_generation_prompt -%}<|assistant_start|>{%- endif -%}",
]


def chat_template(tools_head: str | None = None, tool_example: str | None = None) -> str:
    """The template; `tools_head` / `tool_example` (nanocode's system prompt head and Bash example) enable `tools`."""
    head = [
        "{%- set tools_head = " + ("none" if tools_head is None else json.dumps(tools_head)) + " -%}",
        "{%- set tool_example = " + json.dumps(tool_example or "") + " -%}",
        "{%- set ns = namespace(system=none, listed=true, lines='', line='', example=false) -%}",
        "{%- set body = messages -%}",
        "{%- if messages and messages[0].role == 'system' -%}",
        "{%- set ns.system = messages[0].content or '' -%}{%- set body = messages[1:] -%}",
        "{%- endif -%}",
    ]
    return "".join([*head, *_TOOLS, *_MESSAGES])
