"""On-policy constitutional pairs against `nanocode serve`: the served model works real repo tasks, the SOUL's
checks critique its rollouts, the scripted solution is the revision; and the OpenAI message mapping both ways."""

import json

import pytest

from nanocode import registry
from nanocode.agents.onpolicy import onpolicy_pairs
from nanocode.agents.openai_request import to_nanocode
from nanocode.agents.served_policy import ServedPolicy, from_openai, to_openai
from nanocode.agents.server import CompletionServer
from nanocode.align.synth import JsonlStore
from nanocode.data.conversation import ConversationCodec
from nanocode.models.engine import Engine
from nanocode.models.gpt import GPTConfig
from tests.helpers import small_tokenizer
from tests.test_chat import scripted_model

CONFIG = GPTConfig(sequence_len=4096, vocab_size=512, n_layer=1, n_head=2, n_kv_head=2, n_embd=64)
REPLY = "Great question!"  # capitals and flattery: breaks lowercase-prose and no-sycophancy


@pytest.fixture(scope="module")
def codec():
    return ConversationCodec(small_tokenizer())


def client(url, **kw):
    kw = {"retries": 1, "backoff_s": 0.01, "timeout_s": 120.0, **kw}
    return registry.get("teacher", "openai_compatible")(base_url=url, **kw)


def test_messages_survive_the_trip_through_the_openai_format():
    messages = [
        {"role": "system", "content": "you are nanocode"},
        {"role": "user", "content": "fix calc.py"},
        {"role": "assistant", "content": "reading it", "tool_call": {"name": "Read", "args": {"file_path": "a.py"}}},
        {"role": "tool_result", "content": "    1→x = 1"},
        {"role": "assistant", "content": "", "tool_call": {"name": "Bash", "args": {"command": "python a.py"}}},
        {"role": "tool_result", "content": "(no output)"},
        {"role": "assistant", "content": "done"},
    ]
    assert to_nanocode(to_openai(messages)) == messages  # the server's own reading of what the client sends
    reply = {"content": None, "tool_calls": [{"function": {"name": "Read", "arguments": '{"limit": 5, "file": "x"}'}}]}
    assert from_openai(reply) == {"role": "assistant", "content": "", "tool_call": {"name": "Read", "args": {"limit": "5", "file": "x"}}}  # fmt: skip
    broken = from_openai({"content": "x", "tool_calls": [{"function": {"name": "Read", "arguments": "{not json"}}]})
    assert "tool_call_error" in broken and "tool_call" not in broken


@pytest.mark.slow
def test_served_model_rollouts_become_pairs_that_name_the_broken_principle(tmp_path, codec):
    soul = registry.get("constitution", "soul_md")()
    chain = [codec.ids["assistant_start"], *codec.tok.encode(REPLY), codec.ids["assistant_end"]]
    engine = Engine(scripted_model(chain, CONFIG), min_bucket=64, max_bucket=4096)
    with CompletionServer(engine, codec, model_name="default", port=0) as server:
        policy = ServedPolicy(client(server.url + "/v1"), max_tokens=32)
        summary = onpolicy_pairs(policy, tmp_path, count=2, seed=3, progress=False)
        totals = {"episodes": 2, "pairs": 2, "clean": 0, "solved": 0, "policy_failed": 0}
        assert summary["counts"] == totals | {"skipped_done": 0}
        again = onpolicy_pairs(policy, tmp_path, count=2, seed=3, progress=False)  # resumes: nothing redone
        assert again["counts"] == totals | {"skipped_done": 2}
    episodes = JsonlStore(tmp_path).read("episodes.jsonl")
    pairs = JsonlStore(tmp_path).read("pairs.jsonl")
    assert len(episodes) == len(pairs) == 2
    for pair in pairs:
        rejected, chosen = pair["rejected"]["messages"], pair["chosen"]["messages"]
        assert rejected[-1] == {"role": "assistant", "content": REPLY}  # what the served model really said
        broken = {name for name, _ in soul.violations(rejected)}
        assert {"lowercase-prose", "no-sycophancy"} <= broken and set(pair["principles"]) == broken
        assert soul.violations(chosen) == [] and chosen[1] == rejected[1]  # same task, the scripted revision
    assert json.loads((tmp_path / "summary.json").read_text())["broken_principles"]["lowercase-prose"] == 2


def test_an_unreachable_server_is_counted_per_task_and_retried_next_run(tmp_path):
    policy = ServedPolicy(client("http://127.0.0.1:9/v1", timeout_s=1.0))
    summary = onpolicy_pairs(policy, tmp_path, count=2, progress=False)
    assert summary["counts"]["policy_failed"] == 2 and "unreachable" in next(iter(summary["policy_failures"]))
    assert JsonlStore(tmp_path).read("episodes.jsonl") == []
