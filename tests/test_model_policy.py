"""AgentSession (malformed calls answered, the context rule) and ModelPolicy: model-backed episodes through the real
tools that survive whatever the model emits, with every call counted; the cache carried between steps."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nanocode.agents.agent_session import AgentSession
from nanocode.agents.chat_session import stop_ids
from nanocode.agents.model_policy import ModelPolicy
from nanocode.agents.policy import system_prompt
from nanocode.agents.rollouts import run_episode
from nanocode.agents.tasks import RepoTasks
from nanocode.data.conversation import ConversationCodec
from nanocode.models.engine import ContextFull, Engine
from nanocode.models.gpt import GPT, GPTConfig
from nanocode.models.sampling import GREEDY, SamplingParams
from tests.helpers import small_tokenizer
from tests.test_chat import scripted_model
from tests.test_engine import greedy_reference, tiny_model

TINY = GPTConfig(sequence_len=128, vocab_size=512, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)
WIDE = GPTConfig(sequence_len=128, vocab_size=512, n_layer=1, n_head=2, n_kv_head=2, n_embd=64)


@pytest.fixture(scope="module")
def codec():
    return ConversationCodec(small_tokenizer())


def call_chain(codec: ConversationCodec, body: list[int]) -> list[int]:
    """<|assistant_start|>{body}: what a scripted model says at every turn."""
    return [codec.ids["assistant_start"], *body]


def malformed_chain(codec):
    """A call whose argument has no <|tool_val|>: parsed as a tool_call_error. (Chains need distinct ids: the test
    tokenizer splits words into small pieces, so names and values below are chosen not to share any.)"""
    ids = codec.ids
    return call_chain(
        codec,
        [
            ids["tool_call_start"],
            *codec.tok.encode("Read"),
            ids["tool_arg"],
            *codec.tok.encode("x"),
            ids["tool_call_end"],
        ],
    )


def render_call(codec, name: str, **args: str) -> list[int]:
    return call_chain(codec, codec.render_tool_call({"name": name, "args": args}))


def babbling_model(codec: ConversationCodec, config: GPTConfig = WIDE, seed: int = 0) -> GPT:
    """A random GPT that strongly prefers tool-call syntax: special tokens, tool and argument names, a few values.

    Freshly initialised blocks are the identity (zero output projections), every embedding gets a large component
    on dimension 0, and the head's row 0 gives the chosen tokens a high logit: sampling then strings them together
    at random into well-formed, malformed, unknown and unterminated calls and plain text.
    """
    model = GPT(config, rngs=nnx.Rngs(seed))
    words = ["Read", "Edit", "Grep", "Bash", "Open", "file_path", "old_string", "new_string", "pattern", "command"]
    words += ["x.py", "ls", "def", " ok"]
    favoured = {t for w in words for t in codec.tok.encode(w)}
    favoured |= {codec.ids[n] for n in ("tool_call_start", "tool_arg", "tool_val", "tool_call_end")}
    wte = np.asarray(model.wte[...]).copy()
    wte[:, 0] = 8.0
    head = np.zeros_like(np.asarray(model.lm_head[...]))
    head[0, sorted(favoured)] = 1.0
    head[0, codec.ids["assistant_end"]] = 0.7  # less often: replies get long enough to finish some calls
    model.wte[...] = jnp.asarray(wte)
    model.lm_head[...] = jnp.asarray(head)
    return model


# ------------------------------------------------------------------------------------------------ AgentSession
def test_a_malformed_call_is_answered_and_rendered_like_a_call(codec):
    model = scripted_model(malformed_chain(codec), TINY)
    session = AgentSession(Engine(model, min_bucket=4), codec, sampling=GREEDY, max_new_tokens=20)
    reply = session.send("read x")
    assert reply.finish_reason == "tool_call"
    assert "has no <|tool_val|>" in reply.message["tool_call_error"] and "tool_call" not in reply.message
    session.add({"role": "tool_result", "content": reply.message["tool_call_error"]})  # ChatSession would refuse
    # the model's own ids stay in the history, closed by <|assistant_end|>, then the error as a tool result
    ids = codec.ids
    body = malformed_chain(codec)[1:]
    result = [ids["tool_result_start"], *codec.tok.encode(reply.message["tool_call_error"]), ids["tool_result_end"]]
    assert session.tokens[-len(body) - 2 - len(result) :] == [
        ids["assistant_start"],
        *body,
        ids["assistant_end"],
        *result,
    ]
    again = session.reply()
    assert again.message == reply.message  # and the conversation goes on
    session.add({"role": "tool_result", "content": again.message["tool_call_error"]})
    with pytest.raises(ValueError):
        session.add({"role": "tool_result", "content": "y"})  # but a result answers one call only


def long_result(n_lines: int) -> str:
    return "\n".join(f"{i:>5}→line {i}" for i in range(1, n_lines + 1))


def test_context_rule_replaces_old_tool_results_oldest_first_and_keeps_the_cache_prefix(codec):
    model = tiny_model(dataclasses.replace(TINY, sequence_len=256))
    engine = Engine(model, min_bucket=4)
    session = AgentSession(engine, codec, sampling=GREEDY, max_new_tokens=8)  # room for 248 tokens
    call = {"role": "assistant", "content": "", "tool_call": {"name": "Read", "args": {"file_path": "a.py"}}}
    session.add({"role": "user", "content": "look"})
    for n in (8, 6, 4):  # 87, 65 and 43 tokens
        session.add(call)
        session.add({"role": "tool_result", "content": long_result(n)})
    assert len(session.tokens) > 248, len(session.tokens)  # too long: the rule must act
    session.cache.reset()
    engine.logits(session.cache, [session.tokens[:200]])  # something cached, as after earlier turns
    reply = session.reply()
    contents = [m["content"] for m in session.messages if m["role"] == "tool_result"]
    assert contents == ["[tool result dropped: 8 lines]", long_result(6), long_result(4)]  # the oldest only
    assert session.dropped_results == 1 and reply.dropped_messages == 0
    # what the model saw is exactly the rendering of the kept conversation, and its reply is what a full
    # recompute over that rendering gives: the cache kept only the unchanged prefix
    prompt_len = len(session.tokens) - len(session._segments[-1])
    assert session.tokens[:prompt_len] == codec.render(session.messages[:-1])[0]
    expected = greedy_reference(model, session.tokens[:prompt_len] + [codec.ids["assistant_start"]], 8, stop_ids(codec))
    assert reply.tokens == expected


def test_context_rule_then_drops_exchanges_then_the_newest_result_then_gives_up(codec):
    model = tiny_model(TINY)
    session = AgentSession(Engine(model, min_bucket=4, max_len=64), codec, sampling=GREEDY, max_new_tokens=4)
    call = {"role": "assistant", "content": "", "tool_call": {"name": "Read", "args": {"file_path": "a.py"}}}
    session.add({"role": "user", "content": "first " * 12})
    session.add({"role": "assistant", "content": "ok " * 8})
    session.add({"role": "user", "content": "second"})
    session.add(call)
    session.add({"role": "tool_result", "content": long_result(8)})  # alone longer than the context
    reply = session.reply()
    assert reply.dropped_messages == 2  # the first exchange went ...
    assert [m["role"] for m in session.messages][:3] == ["user", "assistant", "tool_result"]
    assert session.messages[2]["content"] == "[tool result dropped: 8 lines]"  # ... and then the newest result
    assert len(session.tokens) <= 64
    with pytest.raises(ContextFull):
        session.send("word " * 80)  # the newest exchange alone cannot fit
    assert session.messages[-1] == reply.message  # left as it was


# ------------------------------------------------------------------------------------------------ ModelPolicy
def tasks(n: int = 2):
    return RepoTasks(seed=3, templates="heldout").tasks(n)


def test_scripted_failures_are_counted_and_never_crash(codec):
    task = tasks(1)[0]
    cases = {
        "malformed": (malformed_chain(codec), "malformed_call", 1, 0),
        "unknown tool": (render_call(codec, "Dig", file_path="q.md"), "budget", 3, 0),
        "bad argument": (render_call(codec, "Read", file="q.md"), "budget", 3, 0),
        "valid read": (render_call(codec, "Read", file_path="q.md"), "budget", 3, 3),
    }
    for name, (chain, stop, calls, valid) in cases.items():
        model = scripted_model(chain, WIDE)
        policy = ModelPolicy(Engine(model, max_len=1024), codec, max_new_tokens=40)
        episode = run_episode(task, policy, max_steps=3, isolate=False)
        assert (episode.stop_reason, episode.tool_calls, episode.valid_tool_calls) == (stop, calls, valid), name
        assert not episode.check.passed
        results = [m["content"] for m in episode.messages if m["role"] == "tool_result"]
        if name == "unknown tool":
            assert all(r.startswith("error: unknown tool 'Dig'") for r in results)
        if name == "bad argument":
            assert all("unknown argument 'file'" in r for r in results)
        if name == "valid read":
            assert all(r == "error: file not found" for r in results), results
        assert policy.stats["rebuilds"] == 0 and policy.stats["replies"] == episode.steps


def last_turn_from_scratch(engine: Engine, session, codec) -> list[int]:
    """The session's last assistant segment as generating from an empty cache over its prompt would make it."""
    prompt = session.tokens[: len(session.tokens) - len(session._segments[-1])] + [codec.ids["assistant_start"]]
    cache = engine.new_cache(1)
    ref = [c[0] for c in engine.generate(cache, [prompt], GREEDY, max_new_tokens=12, stop_ids=stop_ids(codec))]
    if ref and ref[-1] in stop_ids(codec) and ref[-1] != codec.ids["tool_call_end"]:
        ref = ref[:-1]
    return [codec.ids["assistant_start"], *ref, codec.ids["assistant_end"]]


def test_policy_feeds_only_new_messages_and_rebuilds_when_the_conversation_diverges(codec):
    engine = Engine(tiny_model(WIDE), max_len=1024)
    task = tasks(1)[0]
    policy = ModelPolicy(engine, codec, max_new_tokens=12)
    policy.start(task.id)
    messages = [{"role": "system", "content": system_prompt()}, {"role": "user", "content": task.request}]
    first = policy.act(messages)
    assert policy.session.system == system_prompt() and policy.stats["rebuilds"] == 0
    call = {"role": "assistant", "content": first["content"], "tool_call": {"name": "Read", "args": {"file_path": "a"}}}
    # the harness's version of the turn differs from the model's: the session is rebuilt from the messages
    messages += [call, {"role": "tool_result", "content": "error: file not found"}]
    second = policy.act(messages)
    assert policy.stats["rebuilds"] == 1
    assert policy.session._segments[-1] == last_turn_from_scratch(engine, policy.session, codec)
    cached = policy.session.cached
    messages += [second, {"role": "user", "content": "go on"}]
    policy.act(messages)
    assert policy.stats["rebuilds"] == 1  # in step: only the new user turn was fed, after the cached history
    assert cached >= len(policy.session.tokens) - len(policy.session._segments[-1]) - 40
    assert policy.session._segments[-1] == last_turn_from_scratch(engine, policy.session, codec)
    policy.start("next")  # a new episode starts from nothing
    assert policy.session.messages == [] and policy.session.cached == 0


def test_babbling_model_episodes_run_to_completion_with_calls_counted(codec):
    """A random model biased to tool-call syntax, sampled: whatever it emits, episodes end with a check result."""
    model = babbling_model(codec)
    engine = Engine(model, max_len=1024)
    outcomes = []
    for seed, task in enumerate(tasks(2) * 3):
        policy = ModelPolicy(engine, codec, sampling=SamplingParams(1.0, seed=seed), max_new_tokens=48)
        episode = run_episode(task, policy, max_steps=4)
        assert episode.stop_reason in ("end_turn", "budget", "malformed_call")
        assert 1 <= episode.steps <= 4 and 0 <= episode.valid_tool_calls <= episode.tool_calls <= episode.steps
        made = sum("tool_call" in m or "tool_call_error" in m for m in episode.messages if m["role"] == "assistant")
        assert episode.tool_calls == made
        assert policy.stats["malformed_calls"] == sum("tool_call_error" in m for m in episode.messages)
        outcomes.append(episode)
    assert sum(e.tool_calls for e in outcomes) > 0  # the bias works: calls were made
    assert sum(e.tool_calls - e.valid_tool_calls for e in outcomes) > 0  # and invalid ones among them
