"""`nanocode serve`: the official openai client against the server (plain, streamed, tools), 20 concurrent
clients, malformed requests, a full queue. The server runs in-process on a free port over tiny real models."""

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from nanocode.agents.chat_session import TurnDecoder, stop_ids
from nanocode.agents.openai_request import to_nanocode
from nanocode.agents.server import CompletionServer
from nanocode.data.conversation import ConversationCodec
from nanocode.models.engine import Engine
from nanocode.models.sampling import GREEDY
from tests.helpers import small_tokenizer
from tests.test_chat import TINY, scripted_model, text_chain, tool_call_chain
from tests.test_engine import tiny_model

READ_TOOL = {
    "type": "function",
    "function": {
        "name": "Read",
        "description": "read a file",
        "parameters": {"type": "object", "properties": {"file": {"type": "string"}}, "required": ["file"]},
    },
}


@pytest.fixture(scope="module")
def codec():
    return ConversationCodec(small_tokenizer())


def serve(model, codec, **kwargs) -> CompletionServer:
    engine = Engine(model, min_bucket=8, max_bucket=64)
    return CompletionServer(engine, codec, model_name="nanocode-test", port=0, **kwargs)


@pytest.fixture(scope="module")
def text_server(codec):
    with serve(scripted_model(text_chain(codec), TINY), codec) as server:
        yield server


@pytest.fixture(scope="module")
def tool_server(codec):
    with serve(scripted_model(tool_call_chain(codec), TINY), codec) as server:
        yield server


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def raw(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(*server.address, timeout=120)
    data = body if isinstance(body, bytes | type(None)) else json.dumps(body).encode()
    conn.request(method, path, body=data, headers=headers or {"Content-Type": "application/json"})
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, payload


def test_models_and_health(text_server):
    models = client(text_server).models.list()
    assert [m.id for m in models.data] == ["nanocode-test"]
    status, body = raw(text_server, "GET", "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_plain_completion_with_the_openai_client(text_server, codec):
    messages = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hello"}]
    out = client(text_server).chat.completions.create(model="nanocode-test", messages=messages, temperature=0)
    choice = out.choices[0]
    assert choice.message.content == "hi there" and choice.finish_reason == "stop"
    assert choice.message.tool_calls is None and out.model == "nanocode-test"
    prompt = codec.render_prompt([{"role": "system", "content": "be kind"}, {"role": "user", "content": "hello"}])
    assert out.usage.prompt_tokens == len(prompt)
    assert out.usage.completion_tokens == len(codec.tok.encode("hi there")) + 1  # + <|assistant_end|>


def test_streamed_completion(text_server):
    stream = client(text_server).chat.completions.create(
        model="nanocode-test",
        messages=[{"role": "user", "content": "hello"}],
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "hi there"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # token by token


def test_max_tokens_and_stop_strings(text_server):
    c = client(text_server)
    out = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], max_tokens=2, temperature=0)
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 2
    out = c.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stop=[" the"], temperature=0
    )
    assert out.choices[0].message.content == "hi" and out.choices[0].finish_reason == "stop"


def test_tool_calls_with_the_openai_client(tool_server):
    c = client(tool_server)
    messages = [{"role": "user", "content": "show me x.py"}]
    out = c.chat.completions.create(model="m", messages=messages, tools=[READ_TOOL], temperature=0)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "ok"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "Read"
    assert json.loads(call.function.arguments) == {"file": "x.py"}
    # the conversation continues with the call and its result, as an OpenAI client sends them back
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "1"},
    ]
    again = c.chat.completions.create(model="m", messages=messages, tools=[READ_TOOL], temperature=0)
    assert again.choices[0].finish_reason == "tool_calls"
    # streamed: the call arrives as a tool_calls delta
    chunks = list(
        c.chat.completions.create(model="m", messages=messages[:1], tools=[READ_TOOL], stream=True, temperature=0)
    )
    calls = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert [tc.function.name for tc in calls] == ["Read"] and json.loads(calls[0].function.arguments) == {
        "file": "x.py"
    }
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "tool_calls"


def test_openai_messages_map_onto_nanocode_turns():
    call = lambda i, name, args: {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": args}}  # noqa: E731
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "fix "}, {"type": "text", "text": "it"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call(1, "Read", '{"file_path": "a.py", "limit": 5}'), call(2, "Grep", '{"pattern": "x"}')],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "A"},
        {"role": "tool", "tool_call_id": "c2", "content": "B"},
        {"role": "assistant", "content": "done"},
    ]
    assert to_nanocode(messages) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "fix it"},
        {
            "role": "assistant",
            "content": "",
            "tool_call": {"name": "Read", "args": {"file_path": "a.py", "limit": "5"}},
        },
        {"role": "tool_result", "content": "A"},
        {"role": "assistant", "content": "", "tool_call": {"name": "Grep", "args": {"pattern": "x"}}},
        {"role": "tool_result", "content": "B"},
        {"role": "assistant", "content": "done"},
    ]


def test_twenty_concurrent_clients_all_get_complete_answers(codec):
    model = tiny_model(TINY)
    prompts = [f"question number {i}: what is {i} plus {i}?" for i in range(20)]
    # what each prompt gets alone, from a separate engine over the same model
    reference = Engine(model, min_bucket=8, max_bucket=64)
    expected = []
    for p in prompts:
        ids = codec.render_prompt([{"role": "user", "content": p}])
        gen = reference.generate(reference.new_cache(1), [ids], GREEDY, max_new_tokens=6, stop_ids=stop_ids(codec))
        decoder = TurnDecoder(codec)
        out = [col[0] for col in gen]
        for t in out:
            decoder.push(t)
        expected.append((len(out), decoder.message().get("content") or None))
    with serve(model, codec, max_batch=8, max_queue=32) as server:

        def ask(p):
            c = client(server)
            return c.chat.completions.create(
                model="m", messages=[{"role": "user", "content": p}], temperature=0, max_tokens=6
            )

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(ask, prompts))
        assert server.worker.queue.qsize() == 0
        assert max(server.worker.batch_rows) > 1  # requests that waited together ran as one batch
    for answer, (n_tokens, content) in zip(answers, expected):
        assert answer.usage.completion_tokens == n_tokens
        assert answer.choices[0].message.content == content
        assert answer.choices[0].finish_reason in ("length", "stop", "tool_calls")


@pytest.mark.parametrize(
    "body, status",
    [
        (b"{not json", 400),
        ({"model": "m"}, 400),  # no messages
        ({"messages": []}, 400),
        ({"messages": [{"role": "wizard", "content": "x"}]}, 400),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 7}, 400),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}, 400),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, 400),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400),
        ({"messages": [{"role": "tool", "content": "orphan"}]}, 400),
        ({"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "late"}]}, 400),
        ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, 400),
        ({"messages": [{"role": "assistant", "content": "no user"}]}, 400),
        ({"messages": [{"role": "user", "content": "word " * 400}]}, 400),  # longer than the context
        ([1, 2, 3], 400),
    ],
)
def test_malformed_requests_get_a_4xx_and_the_server_keeps_serving(text_server, body, status):
    got, payload = raw(text_server, "POST", "/v1/chat/completions", body)
    assert got == status
    error = json.loads(payload)["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    ok = client(text_server).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], temperature=0
    )
    assert ok.choices[0].message.content == "hi there"


def test_wrong_paths_methods_and_sizes(text_server):
    assert raw(text_server, "GET", "/v1/nothing")[0] == 404
    assert raw(text_server, "POST", "/v1/completions", {"prompt": "x"})[0] == 404
    assert raw(text_server, "DELETE", "/v1/chat/completions")[0] == 405
    big = json.dumps({"messages": [{"role": "user", "content": "x" * (5 << 20)}]}).encode()
    status, payload = raw(text_server, "POST", "/v1/chat/completions", big)
    assert status == 413 and "exceeds" in json.loads(payload)["error"]["message"]
    assert raw(text_server, "GET", "/health")[0] == 200


def test_a_full_queue_answers_503_at_once(codec):
    server = serve(scripted_model(text_chain(codec), TINY), codec, max_batch=1, max_queue=1)
    server.start(start_worker=False)  # requests queue up; none runs yet
    try:
        first: dict = {}
        body = {"messages": [{"role": "user", "content": "hello"}], "temperature": 0}
        waiting = threading.Thread(
            target=lambda: first.update(zip(("status", "body"), raw(server, "POST", "/v1/chat/completions", body)))
        )
        waiting.start()
        for _ in range(600):
            if server.worker.queue.qsize() == 1:
                break
            time.sleep(0.05)
        status, payload = raw(server, "POST", "/v1/chat/completions", body)
        assert status == 503 and json.loads(payload)["error"]["type"] == "server_overloaded"
        server.worker.start()  # the queued request now runs and completes
        waiting.join(timeout=120)
        assert first["status"] == 200
        assert json.loads(first["body"])["choices"][0]["message"]["content"] == "hi there"
    finally:
        server.close()


def test_server_sampling_is_seeded(codec):
    with serve(tiny_model(TINY), codec) as server:
        c = client(server)

        def ask(seed):
            out = c.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "tell me"}], temperature=1.0, seed=seed, max_tokens=8
            )
            return out.choices[0].message.content

        assert ask(3) == ask(3)
        assert len({ask(s) for s in range(4)}) > 1
        # streamed with the same seed: the same text, delta by delta
        stream = c.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "tell me"}],
            temperature=1.0,
            seed=3,
            max_tokens=8,
            stream=True,
        )
        assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == ask(3)
