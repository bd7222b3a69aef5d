"""ChatSession: the cache carried across turns (equal to full recompute), exact rendering, tool calls, overflow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nanocode.agents.chat_session import ChatSession, TurnDecoder, stop_ids
from nanocode.data.conversation import ConversationCodec
from nanocode.models.engine import ContextFull, Engine
from nanocode.models.gpt import GPT, GPTConfig
from nanocode.models.sampling import GREEDY
from tests.helpers import small_tokenizer
from tests.test_engine import greedy_reference, tiny_model

TINY = GPTConfig(sequence_len=128, vocab_size=512, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)


@pytest.fixture(scope="module")
def codec():
    return ConversationCodec(small_tokenizer())


@pytest.fixture(scope="module")
def model():
    return tiny_model(TINY)


def scripted_model(chain: list[int], config: GPTConfig) -> GPT:
    """A real GPT whose weights make it say `chain`: each chain token's successor is the argmax after it.

    The blocks' output projections are zero (each block is the identity), chain tokens get orthogonal embeddings,
    and the head maps each one's direction to its successor, so greedy decoding walks the chain from its first token.
    """
    assert len(set(chain)) == len(chain) <= config.n_embd, "chain tokens must be distinct"
    model = GPT(config, rngs=nnx.Rngs(0))
    e = config.n_embd
    wte = np.asarray(model.wte[...]).copy()
    head = np.zeros((e, config.vocab_size), np.float32)
    for i, (tok, nxt) in enumerate(zip(chain, chain[1:])):
        wte[tok] = 0.0
        wte[tok, i] = np.sqrt(e)  # rms 1: unchanged by the norms
        head[i, nxt] = 3.0  # logit 3 sqrt(e) (before the softcap) for the successor, 0 for everything else
    model.wte[...] = jnp.asarray(wte)
    model.lm_head[...] = jnp.asarray(head)
    return model


def tool_call_chain(codec: ConversationCodec) -> list[int]:
    """<|assistant_start|>ok<|tool_call_start|>Read<|tool_arg|>file<|tool_val|>x.py<|tool_call_end|>"""
    ids, enc = codec.ids, codec.tok.encode
    return [ids["assistant_start"], *enc("ok"), *codec.render_tool_call({"name": "Read", "args": {"file": "x.py"}})]


def text_chain(codec: ConversationCodec) -> list[int]:
    return [codec.ids["assistant_start"], *codec.tok.encode("hi there"), codec.ids["assistant_end"]]


def test_three_turns_with_the_cache_carried_over_equal_full_recompute(model, codec):
    engine = Engine(model, min_bucket=4, max_bucket=32)
    session = ChatSession(engine, codec, system="be brief", sampling=GREEDY, max_new_tokens=10)
    stops = stop_ids(codec)
    for turn, text in enumerate(["hello there", "and what about the second file?", "thanks, bye"]):
        cached_before = session.cached
        if turn:  # the history stayed in the cache: only the last sampled id and the closing id were never fed
            assert len(session.tokens) - 2 <= cached_before < len(session.tokens)
        streamed: list[str] = []
        reply = session.send(text, on_text=streamed.append)
        prompt = session.tokens[: len(session.tokens) - len(session._segments[-1])] + [codec.ids["assistant_start"]]
        assert reply.tokens == greedy_reference(model, prompt, 10, stops), f"turn {turn}"
        assert "".join(streamed) == reply.message["content"] or "tool_call" in reply.message
        assert session.cached == len(prompt) + len(reply.tokens) - 1
    assert [m["role"] for m in session.messages] == ["user", "assistant"] * 3


def test_session_tokens_are_the_codec_rendering(codec, model):
    session = ChatSession(Engine(model, min_bucket=4), codec, system="sys prompt")
    messages = [
        {"role": "user", "content": "fix it"},
        {"role": "assistant", "content": "looking", "tool_call": {"name": "Read", "args": {"file_path": "a.py"}}},
        {"role": "tool_result", "content": "    1→print(1)"},
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "thanks"},
    ]
    for m in messages:
        session.add(m)
    expected = codec.render([{"role": "system", "content": "sys prompt"}, *messages])[0]
    assert session.tokens == expected
    with pytest.raises(ValueError):
        session.add({"role": "user", "content": "again"})  # two user turns in a row
    with pytest.raises(ValueError):
        session.add({"role": "tool_result", "content": "x"})  # not after a tool call


def test_tool_call_turn_is_parsed_closed_and_continues(codec):
    model = scripted_model(tool_call_chain(codec), TINY)
    session = ChatSession(Engine(model, min_bucket=4), codec, sampling=GREEDY, max_new_tokens=40)
    shown: list[str] = []
    reply = session.send("read x.py", on_text=shown.append)
    assert reply.finish_reason == "tool_call"
    assert reply.message == {
        "role": "assistant",
        "content": "ok",
        "tool_call": {"name": "Read", "args": {"file": "x.py"}},
    }
    assert "".join(shown) == "ok"  # the call itself is not streamed as text
    session.add({"role": "tool_result", "content": "print(1)"})
    again = session.reply()
    assert again.message == reply.message
    # exactly what the codec renders: the generated ids, the call closed by <|assistant_end|>
    assert session.tokens == codec.render(session.messages)[0]
    assert session.cached == len(session.tokens) - 2  # <|tool_call_end|> (sampled) and <|assistant_end|>


def test_text_reply_stops_at_assistant_end(codec):
    session = ChatSession(Engine(scripted_model(text_chain(codec), TINY), min_bucket=4), codec, sampling=GREEDY)
    reply = session.send("hey")
    assert reply.finish_reason == "stop" and reply.message == {"role": "assistant", "content": "hi there"}
    assert reply.tokens[-1] == codec.ids["assistant_end"]


def test_overflow_drops_the_oldest_exchanges_and_keeps_the_system_prompt(model, codec):
    engine = Engine(model, max_len=96, min_bucket=4, max_bucket=32)
    session = ChatSession(engine, codec, system="sys", sampling=GREEDY, max_new_tokens=8)
    dropped = 0
    for i in range(8):
        reply = session.send(f"message number {i} with a few words in it")
        dropped += reply.dropped_messages
        assert len(session.tokens) <= engine.max_len
        # after a drop the conversation is re-fed from scratch; generation still equals recompute
        prompt = session.tokens[: len(session.tokens) - len(session._segments[-1])] + [codec.ids["assistant_start"]]
        assert reply.tokens == greedy_reference(model, prompt, 8, stop_ids(codec))
    assert dropped > 0
    assert session.messages[0]["role"] == "user" and session.messages[0]["content"] != "message number 0"
    first_user = codec.tok.decode(session._segments[0][1:-1])
    assert first_user.startswith("sys\n\n")  # the system prompt moved to the new first user turn
    assert session.tokens[0] == codec.ids["bos"]


def test_a_message_too_long_for_the_context_is_refused_cleanly(model, codec):
    engine = Engine(model, max_len=64, min_bucket=4)
    session = ChatSession(engine, codec, sampling=GREEDY, max_new_tokens=8)
    session.send("short")
    before = (list(session.tokens), list(session.messages), session.cached)
    with pytest.raises(ContextFull):
        session.send("word " * 80)
    assert (session.tokens, session.messages, session.cached) == before
    assert session.send("short again").message["role"] == "assistant"  # still usable
    session.clear()
    assert session.tokens == [codec.ids["bos"]] and session.cached == 0


def test_turn_decoder_streams_whole_characters_and_honours_stop_strings(codec):
    tok = codec.tok
    text = "héllo 😀 world. END rest"
    ids = tok.encode(text)
    dec = TurnDecoder(codec, stop_strings=["END"])
    out = "".join(dec.push(t) for t in ids)
    assert out == "héllo 😀 world. " and dec.stopped_by_string
    assert dec.message() == {"role": "assistant", "content": "héllo 😀 world. "}
    # without stop strings every delta is whole characters and they add up to the text
    dec = TurnDecoder(codec)
    deltas = [dec.push(t) for t in ids] + [dec.push(codec.ids["assistant_end"])]
    assert "".join(deltas) == text and not any("\ufffd" in d for d in deltas)
    assert dec.finish_token == codec.ids["assistant_end"]
    # cut inside a character (a token budget): what was held back comes out at the flush, as the content has it
    emoji = tok.encode("ok 😀")
    dec = TurnDecoder(codec)
    streamed = "".join(dec.push(t) for t in emoji[:-1])
    assert streamed + dec.flush() == dec.content == tok.decode(emoji[:-1])
    assert dec.content.endswith("\ufffd")


def test_turn_decoder_reports_a_malformed_call(codec):
    dec = TurnDecoder(codec)
    for t in [*codec.tok.encode("so"), codec.ids["tool_call_start"], codec.ids["assistant_end"]]:
        dec.push(t)
    message = dec.message()
    assert message["content"] == "so" and "tool_call_error" in message and not dec.made_call


def test_scripted_model_is_a_real_gpt(codec):
    model = scripted_model(text_chain(codec), TINY)
    logits = model(jnp.asarray([text_chain(codec)[:3]]))
    assert int(jnp.argmax(logits[0, -1])) == text_chain(codec)[3]
    assert jax.tree.leaves(nnx.state(model, nnx.Param))[0].dtype == jnp.float32
