"""POST /v1/responses with the official openai client: text, function tools, function_call_output round trips,
previous_response_id over the bounded store, and the stream events `responses.stream` parses."""

import json

import openai
import pytest

from nanocode.data.conversation import ConversationCodec
from tests.helpers import small_tokenizer
from tests.test_chat import scripted_model, text_chain, tool_call_chain
from tests.test_serve import MODEL, WIDE, client, raw, serve

READ = {
    "type": "function",
    "name": "Read",
    "description": "read a file",
    "parameters": {"type": "object", "properties": {"file": {"type": "string"}}, "required": ["file"]},
}
STREAM_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]
CALL_EVENTS = [
    "response.output_item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
]


def kinds(events) -> list[str]:
    """The event types in order, a run of text deltas as one."""
    out = [e.type for e in events]
    return [k for i, k in enumerate(out) if not (k == "response.output_text.delta" and out[i - 1] == k)]


@pytest.fixture(scope="module")
def codec():
    return ConversationCodec(small_tokenizer())


@pytest.fixture(scope="module")
def text_server(codec):
    with serve(scripted_model(text_chain(codec), WIDE), codec, store_size=3) as server:
        yield server


@pytest.fixture(scope="module")
def tool_server(codec):
    with serve(scripted_model(tool_call_chain(codec), WIDE), codec) as server:
        yield server


def test_text_response_instructions_and_usage(text_server, codec):
    out = client(text_server).responses.create(model=MODEL, input="hello", instructions="be kind", temperature=0)
    assert out.status == "completed" and out.output_text == "hi there" and out.model == MODEL
    (message,) = out.output
    assert message.type == "message" and message.role == "assistant" and message.content[0].type == "output_text"
    prompt = codec.render_prompt([{"role": "system", "content": "be kind"}, {"role": "user", "content": "hello"}])
    assert out.usage.input_tokens == len(prompt) and out.usage.output_tokens == len(codec.tok.encode("hi there")) + 1
    assert client(text_server).responses.retrieve(out.id).output_text == "hi there"


def test_function_call_and_its_output_round_trip(tool_server):
    c = client(tool_server)
    first = c.responses.create(model=MODEL, input="show me x.py", tools=[READ], temperature=0)
    message, call = first.output
    assert message.content[0].text == "ok" and call.type == "function_call" and call.name == "Read"
    assert json.loads(call.arguments) == {"file": "x.py"} and call.call_id.startswith("call_")
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "1 print('x')"}
    # chained by id: the server keeps the conversation
    second = c.responses.create(model=MODEL, previous_response_id=first.id, input=[output], tools=[READ], temperature=0)
    assert second.previous_response_id == first.id and second.output[-1].type == "function_call"
    assert second.usage.input_tokens > first.usage.input_tokens
    # stateless: the client sends the whole conversation as items
    items = [
        {"role": "user", "content": "show me x.py"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        {"type": "function_call", "call_id": call.call_id, "name": "Read", "arguments": call.arguments},
        output,
    ]
    third = c.responses.create(model=MODEL, input=items, tools=[READ], temperature=0, store=False)
    assert third.usage.input_tokens == second.usage.input_tokens  # the same conversation, the same prompt
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(third.id)
    # no tools declared: the same call comes back as text
    plain = c.responses.create(model=MODEL, input="show me x.py", temperature=0)
    assert [o.type for o in plain.output] == ["message"] and plain.output_text == 'ok\nRead {"file": "x.py"}'


def test_responses_stream_with_a_function_tool(tool_server):
    c = client(tool_server)
    with c.responses.stream(model=MODEL, input="show me x.py", tools=[READ], temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert kinds(events) == STREAM_EVENTS + CALL_EVENTS + ["response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "ok"
    (call,) = [o for o in final.output if o.type == "function_call"]
    assert call.name == "Read" and json.loads(call.arguments) == {"file": "x.py"}
    # and on to the next turn by id, streamed
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "done"}
    with c.responses.stream(model=MODEL, input=[output], previous_response_id=final.id, tools=[READ]) as stream:
        again = stream.get_final_response()
    assert again.status == "completed" and again.previous_response_id == final.id


def test_streamed_text_matches_the_plain_response(text_server):
    c = client(text_server)
    stream = c.responses.create(model=MODEL, input="hello", temperature=0, stream=True)
    events = list(stream)
    assert kinds(events) == STREAM_EVENTS + ["response.completed"]
    assert len([e for e in events if e.type == "response.output_text.delta"]) > 1  # token by token
    assert events[-1].response.output_text == "hi there"


def test_the_store_is_bounded_and_errors_are_clear(text_server):
    c = client(text_server)
    ids = [c.responses.create(model=MODEL, input="hello", temperature=0).id for _ in range(4)]
    with pytest.raises(openai.NotFoundError):  # the store keeps the 3 most recent
        c.responses.retrieve(ids[0])
    assert c.responses.retrieve(ids[-1]).id == ids[-1]
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model=MODEL, input="x", previous_response_id=ids[0])
    assert e.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError) as e:
        c.responses.create(model="other", input="x")
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model=MODEL, input="x", max_output_tokens=10**6)
    assert e.value.code == "context_length_exceeded"
    for body in (
        {"input": [{"type": "web_search_call"}]},
        {"input": "x", "tools": [{"type": "web_search"}]},
        {"input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]},
        {"input": "x", "top_k": 2**40},
    ):
        status, payload = raw(text_server, "POST", "/v1/responses", {"model": MODEL, **body})
        assert status == 400 and json.loads(payload)["error"]["code"], body


def test_a_budget_that_runs_out_is_incomplete(text_server):
    out = client(text_server).responses.create(model=MODEL, input="hello", max_output_tokens=1, temperature=0)
    assert out.status == "incomplete" and out.incomplete_details.reason == "max_output_tokens"
