"""`nanocode serve`'s tool-calling contract with OpenAI clients: tools shown in the training format, undeclared
tools, tool_choice, arguments checked against the schema, no special token in content or arguments."""

import json

import openai
import pytest

from nanocode.data.conversation import ConversationCodec
from tests.helpers import small_tokenizer
from tests.test_chat import scripted_model, text_chain, tool_call_chain
from tests.test_engine import tiny_model
from tests.test_serve import MODEL, READ_TOOL, WIDE, client, serve


@pytest.fixture(scope="module")
def codec():
    return ConversationCodec(small_tokenizer())


@pytest.fixture(scope="module")
def tool_server(codec):
    with serve(scripted_model(tool_call_chain(codec), WIDE), codec) as server:
        yield server


BASH_TOOL = {
    "type": "function",
    "function": {
        "name": "bash",
        "description": "run a command",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
    },
}
SPECIALS = ("<|", "|>")


def test_tools_are_shown_in_the_training_format():
    from nanocode.agents.policy import system_prompt
    from nanocode.agents.tool_schema import ToolChoice, parse_tools, show_tools
    from nanocode.agents.tools import build_tools

    builtin = {name: tool for name, tool in build_tools().items() if name in ("Read", "Edit", "Bash")}
    tools = parse_tools([tool.openai_schema() for tool in builtin.values()])
    user = [{"role": "user", "content": "hi"}]
    (system, _) = show_tools(user, tools, ToolChoice("auto"))
    assert system == {"role": "system", "content": system_prompt(builtin)}  # exactly what the model trained on
    with_own = show_tools([{"role": "system", "content": "be brief"}, *user], tools, ToolChoice("auto"))
    assert with_own[0]["content"] == system_prompt(builtin) + "\n\nbe brief"
    every = parse_tools([tool.openai_schema() for tool in build_tools().values()])  # Grep's -A/-B: not in its line
    already = [{"role": "system", "content": system_prompt()}, *user]  # what nanocode's own ServedPolicy sends
    assert show_tools(already, every, ToolChoice("auto")) == already
    assert show_tools(user, tools, ToolChoice("none")) == user
    mini = show_tools(user, parse_tools([BASH_TOOL]), ToolChoice("auto"))[0]["content"]
    assert mini.endswith("\nbash:  <|tool_call_start|>bash<|tool_arg|>command<|tool_val|>...<|tool_call_end|>")


def test_the_served_prompt_holds_the_requests_tools(tool_server, codec):
    from nanocode.agents.tool_schema import ToolChoice, parse_tools, show_tools

    messages = [{"role": "user", "content": "list files"}]
    out = client(tool_server).chat.completions.create(model=MODEL, messages=messages, tools=[BASH_TOOL])
    shown = show_tools(messages, parse_tools([BASH_TOOL]), ToolChoice("auto"))
    assert out.usage.prompt_tokens == len(codec.render_prompt(shown))


def test_a_call_to_an_undeclared_tool_is_returned_as_text(tool_server):
    c = client(tool_server)
    messages = [{"role": "user", "content": "show me x.py"}]
    for tools in ([BASH_TOOL], None):  # the model calls Read: declared neither time
        kw = {"tools": tools} if tools else {}
        out = c.chat.completions.create(model=MODEL, messages=messages, temperature=0, **kw).choices[0]
        assert out.finish_reason == "stop" and out.message.tool_calls is None
        assert out.message.content == 'ok\nRead {"file": "x.py"}'
        chunks = list(c.chat.completions.create(model=MODEL, messages=messages, stream=True, temperature=0, **kw))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == out.message.content
        assert not any(ch.choices[0].delta.tool_calls for ch in chunks if ch.choices)
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"


def test_tool_choice_is_honoured(tool_server):
    c = client(tool_server)
    ask = lambda **kw: c.chat.completions.create(  # noqa: E731
        model=MODEL, messages=[{"role": "user", "content": "x"}], tools=[READ_TOOL], temperature=0, **kw
    ).choices[0]
    none = ask(tool_choice="none")
    assert none.finish_reason == "stop" and none.message.tool_calls is None and "Read" in none.message.content
    for choice in ("auto", "required", {"type": "function", "function": {"name": "Read"}}):
        out = ask(tool_choice=choice)
        assert out.finish_reason == "tool_calls" and out.message.tool_calls[0].function.name == "Read", choice
    # a named function the model does not call: decoding is opened with its name, the call is checked against it
    other = {"type": "function", "function": {"name": "bash"}}
    out = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], tools=[READ_TOOL, BASH_TOOL], tool_choice=other
    ).choices[0]
    assert out.finish_reason != "tool_calls" or out.message.tool_calls[0].function.name == "bash"
    with pytest.raises(openai.BadRequestError):
        ask(tool_choice={"type": "function", "function": {"name": "Nope"}})


def test_arguments_are_checked_against_the_schema(tool_server):
    def tool(file_schema):
        params = {"type": "object", "properties": {"file": file_schema}, "required": ["file"]}
        return {"type": "function", "function": {"name": "Read", "parameters": params}}

    c = client(tool_server)
    for schema, ok in [
        ({"type": "string"}, True),
        ({"type": "string", "enum": ["x.py", "y.py"]}, True),
        ({"type": "string", "enum": ["y.py"]}, False),
        ({"type": "integer"}, False),
        ({"type": "array", "items": {"type": "string"}}, False),
    ]:
        out = c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], tools=[tool(schema)], temperature=0
        ).choices[0]
        if ok:
            assert out.finish_reason == "tool_calls" and json.loads(out.message.tool_calls[0].function.arguments)
        else:
            assert out.finish_reason == "stop" and out.message.tool_calls is None, schema
            assert out.message.content == 'ok\nRead {"file": "x.py"}'


def test_schema_subset_and_typed_arguments():
    from nanocode.agents.json_schema import schema_problem
    from nanocode.agents.tool_schema import ToolChoice, accept_call, parse_tools

    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "flag": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
            "mode": {"type": ["string", "null"]},
        },
        "required": ["n"],
        "additionalProperties": False,
    }
    tools = parse_tools([{"type": "function", "function": {"name": "t", "parameters": schema}}])
    call = {"name": "t", "args": {"n": "5", "flag": "True", "tags": '["a", "b"]', "mode": "fast"}}
    assert accept_call(call, tools, ToolChoice()) == ({"n": 5, "flag": True, "tags": ["a", "b"], "mode": "fast"}, None)
    for args, where in [
        ({"n": "five"}, "arguments.n"),
        ({"flag": "true"}, "'n'"),
        ({"n": "1", "tags": '["c"]'}, "arguments.tags[0]"),
        ({"n": "1", "extra": "x"}, "'extra'"),
    ]:
        typed, reason = accept_call({"name": "t", "args": args}, tools, ToolChoice())
        assert typed is None and where in reason
    assert schema_problem(1.5, {"type": "integer"}) and schema_problem(True, {"type": "number"})
    with pytest.raises(Exception, match="unknown type"):
        parse_tools([{"type": "function", "function": {"name": "t", "parameters": {"type": "strin"}}}])


@pytest.fixture(scope="module")
def special_server(codec):
    """A model that writes special ids inside its text and inside a call's argument."""
    ids, enc = codec.ids, codec.tok.encode
    text = [enc("a")[0], ids["user_end"], enc("b")[0]]
    value = [enc("x")[0], ids["tool_result_end"], *enc(".py")]
    call = [ids["tool_call_start"], *enc("Read"), ids["tool_arg"], *enc("file"), ids["tool_val"], *value]
    chain = [ids["assistant_start"], *text, *call, ids["tool_call_end"]]
    with serve(scripted_model(chain, WIDE), codec) as server:
        yield server


def test_no_special_token_reaches_content_or_arguments(special_server):
    c = client(special_server)
    messages = [{"role": "user", "content": "x"}]
    out = c.chat.completions.create(model=MODEL, messages=messages, tools=[READ_TOOL], temperature=0).choices[0]
    assert out.finish_reason == "stop" and out.message.tool_calls is None  # the call's argument was broken
    assert out.message.content == "ab\nRead file=x .py"
    stream = c.chat.completions.create(model=MODEL, messages=messages, tools=[READ_TOOL], temperature=0, stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == out.message.content


def test_the_reply_decoder_cuts_special_strings_without_taking_a_delta_back(codec):
    from nanocode.agents.reply_decoder import ReplyDecoder

    text = "see <|user_end|>this <|tool_call_start|>and <| that"
    decoder = ReplyDecoder(codec)
    streamed = "".join(decoder.push(t) for t in codec.tok.encode(text)) + decoder.flush()
    assert streamed == decoder.text == "see this and <| that"


def test_a_random_model_never_leaks_special_tokens(codec):
    with serve(tiny_model(WIDE), codec) as server:
        c = client(server)
        for seed in range(6):
            kw = {"model": MODEL, "messages": [{"role": "user", "content": "go"}], "tools": [READ_TOOL, BASH_TOOL]}
            kw |= {"temperature": 1.0, "seed": seed, "max_tokens": 48}
            out = c.chat.completions.create(**kw).choices[0]
            texts = [out.message.content or ""] + [tc.function.arguments for tc in out.message.tool_calls or []]
            chunks = list(c.chat.completions.create(stream=True, **kw))
            texts += [ch.choices[0].delta.content or "" for ch in chunks if ch.choices]
            texts += [
                tc.function.arguments for ch in chunks if ch.choices for tc in ch.choices[0].delta.tool_calls or []
            ]
            assert not any(s in t for t in texts for s in SPECIALS), texts
            assert out.finish_reason in ("stop", "length", "tool_calls")
            assert (out.finish_reason == "tool_calls") == bool(out.message.tool_calls)


def test_required_tool_choice_opens_the_turn_with_a_call(codec):
    from nanocode.agents.tool_schema import ToolChoice, parse_tools, show_tools

    messages = [{"role": "user", "content": "hello"}]
    with serve(scripted_model(text_chain(codec), WIDE), codec) as server:
        c = client(server)
        free = c.chat.completions.create(model=MODEL, messages=messages, tools=[READ_TOOL]).choices[0]
        assert free.message.content == "hi there"  # what this model says when left alone
        out = c.chat.completions.create(
            model=MODEL, messages=messages, tools=[READ_TOOL], tool_choice="required", max_tokens=8
        )
    shown = show_tools(messages, parse_tools([READ_TOOL]), ToolChoice("required"))
    assert out.usage.prompt_tokens == len(codec.render_prompt(shown)) + 1  # + the forced <|tool_call_start|>
    assert out.choices[0].message.content != "hi there"  # decoding started inside a call
    assert (out.choices[0].finish_reason == "tool_calls") == bool(out.choices[0].message.tool_calls)
