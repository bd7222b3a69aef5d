"""Execution-grounded rollouts: the agent loop, the data files (deterministic, resumable), real tool results, pairs."""

import json

import pytest

from nanocode.agents import rollouts
from nanocode.agents.policy import Policy, ScriptedPolicy, ScriptMismatch, system_prompt
from nanocode.agents.rollouts import build_agentic_data, run_episode, soul_violations
from nanocode.agents.tasks import RepoTasks, Script, Step, open_sandbox, task_workspace
from nanocode.agents.tools import build_tools
from nanocode.align.validation import validate_rollout
from nanocode.core.errors import ConfigError
from nanocode.core.kinds import PREFERENCE_DATASETS, SFT_DATASETS
from nanocode.data.preference import Pair, read_preferences
from nanocode.data.sft import read_jsonl

COUNT = 6


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("agentic")
    manifest = build_agentic_data(out, count=COUNT, seed=3, test_every=3, workers=2, progress=False)
    return out, manifest


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_files_and_manifest(built):
    out, manifest = built
    assert manifest["conversations"] == {"train": 4, "test": 2}  # tasks 0 and 3 are held out
    assert manifest["pairs"] == {"train": 4, "test": 2}
    assert sum(manifest["kinds"].values()) == COUNT
    assert len(read_jsonl(out / "sft_train.jsonl")) == 4 and len(read_jsonl(out / "sft_test.jsonl")) == 2
    pairs = read_preferences(out / "pairs_train.jsonl")
    assert len(pairs) == 4 and all(isinstance(p, Pair) for p in pairs)
    test_ids = {r["id"] for r in _lines(out / "sft_test.jsonl")}
    assert {p["task_id"] for p in _lines(out / "pairs_test.jsonl")} <= test_ids  # a task's pairs follow its split
    assert not (out / ".parts").exists()
    # the system prompt opens every conversation and lists the registered tools
    tools = build_tools()
    for record in _lines(out / "sft_train.jsonl"):
        system = record["messages"][0]
        assert system["role"] == "system" and system["content"] == system_prompt(tools)
        assert all(tool.prompt_template() in system["content"] for tool in tools.values())


def test_tool_results_are_what_the_tools_really_return(built):
    out, _ = built
    tasks = {t.id: t for t in RepoTasks(seed=3).tasks(COUNT)}
    tools = build_tools()
    records = _lines(out / "sft_train.jsonl") + _lines(out / "sft_test.jsonl")
    pairs = _lines(out / "pairs_train.jsonl")
    conversations = [(r["id"], r["messages"]) for r in records] + [
        (p["task_id"], p["rejected"]["messages"]) for p in pairs
    ]
    for task_id, messages in conversations:
        with task_workspace(tasks[task_id]) as root, open_sandbox(root, timeout_s=20) as box:  # isolated this time
            for call, result in zip(messages, messages[1:]):
                if call.get("tool_call"):
                    assert result["role"] == "tool_result"
                    fresh = tools[call["tool_call"]["name"]](call["tool_call"]["args"], box)
                    assert fresh.text == result["content"]


def test_conversations_pass_nanocodes_rollout_validation(built):
    out, _ = built
    conversations = [r["messages"] for name in ("sft_train.jsonl", "sft_test.jsonl") for r in _lines(out / name)]
    for name in ("pairs_train.jsonl", "pairs_test.jsonl"):
        conversations += [p[side]["messages"] for p in _lines(out / name) for side in ("chosen", "rejected")]
    assert len(conversations) == 3 * COUNT
    for messages in conversations:
        assert validate_rollout(messages) == []


def test_pairs_break_exactly_their_principle(built):
    out, _ = built
    for pair in _lines(out / "pairs_train.jsonl") + _lines(out / "pairs_test.jsonl"):
        assert soul_violations(pair["chosen"]["messages"]) == {}
        broken = soul_violations(pair["rejected"]["messages"])
        assert set(broken) == {pair["principle"]} and broken[pair["principle"]] == pair["reason"]
        assert pair["chosen"]["messages"][:2] == pair["rejected"]["messages"][:2]  # same task, same request


def test_deterministic_and_idempotent(built, tmp_path):
    out, manifest = built
    again = build_agentic_data(tmp_path / "again", count=COUNT, seed=3, test_every=3, workers=1, progress=False)
    assert again == manifest
    for name in rollouts.FILES:
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert build_agentic_data(out, count=COUNT, seed=3, test_every=3, progress=False) == manifest
    assert (out / "manifest.json").stat().st_mtime_ns == stamp  # nothing redone


def test_resumes_after_an_interruption(tmp_path, monkeypatch):
    real = rollouts.task_record
    calls = []

    def flaky(task, index, **kw):
        calls.append(index)
        if index == 2 and calls.count(2) == 1:
            raise RuntimeError("killed")
        return real(task, index, **kw)

    monkeypatch.setattr(rollouts, "task_record", flaky)
    with pytest.raises(RuntimeError, match="killed"):
        build_agentic_data(tmp_path, count=4, seed=1, workers=1, progress=False)
    assert not (tmp_path / "manifest.json").exists()
    with open(tmp_path / ".parts" / "records.jsonl", "a") as f:
        f.write('{"index": 3, "torn')  # a line cut by the interruption
    done_before = len(calls)
    manifest = build_agentic_data(tmp_path, count=4, seed=1, workers=1, progress=False)
    redone = calls[done_before:]
    assert 2 in redone and 0 not in redone and 1 not in redone  # finished tasks are not run again
    assert manifest["conversations"]["train"] + manifest["conversations"]["test"] == 4
    fresh = build_agentic_data(tmp_path / "fresh", count=4, seed=1, workers=1, progress=False)
    assert fresh == manifest
    for name in rollouts.FILES:
        assert (tmp_path / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()


def test_bad_parameters():
    with pytest.raises(ConfigError, match="count >= 2"):
        build_agentic_data("/nonexistent/never", count=1)


def test_registered_datasets_build_on_prepare(tmp_path):
    conversations = SFT_DATASETS.get("repo_task_conversations")(count=3, seed=2, directory=str(tmp_path))
    conversations.prepare()
    assert len(conversations.conversations("train")) == 2 and len(conversations.conversations("test")) == 1
    pairs = PREFERENCE_DATASETS.get("repo_task_pairs")(count=3, seed=2, directory=str(tmp_path))
    pairs.prepare()  # same directory, same parameters: nothing rebuilt
    assert len(pairs.items("train")) == 2
    only = SFT_DATASETS.get("repo_task_conversations")(count=3, kinds=["locate"])
    assert only.directory.name == "repo_tasks-s0-n3-locate" and only.kinds == ["locate"]


class _Calls(Policy):
    """Issues the given assistant messages in order."""

    name = "calls"

    def __init__(self, messages):
        self.messages, self.i = messages, 0

    def act(self, messages):
        self.i += 1
        return self.messages[min(self.i, len(self.messages)) - 1]


def _call(name, **args):
    return {"role": "assistant", "content": f"calling {name}.", "tool_call": {"name": name, "args": args}}


def test_invalid_calls_are_fed_back_and_counted():
    task = RepoTasks(seed=0).task(1)
    policy = _Calls(
        [
            _call("Ls", path="."),  # unknown tool
            _call("Read", offset="2"),  # missing file_path
            _call("Read", file_path=task.facts["module_path"], limit=5),  # valid (an int argument becomes "5")
            {"role": "assistant", "content": "oops", "tool_call_error": "error: unterminated tool call"},
        ]
    )
    episode = run_episode(task, policy, isolate=False)
    results = [m["content"] for m in episode.messages if m["role"] == "tool_result"]
    assert results[0].startswith("error: unknown tool 'Ls'") and "missing required argument 'file_path'" in results[1]
    assert results[2].startswith("    1→")
    assert episode.messages[6]["tool_call"]["args"]["limit"] == "5"
    assert (episode.tool_calls, episode.valid_tool_calls, episode.steps) == (4, 1, 4)
    assert episode.stop_reason == "malformed_call" and not episode.check.passed


def test_step_budget_and_script_mismatch():
    task = RepoTasks(seed=0).task(1)
    looping = _Calls([_call("Grep", pattern="def ")])
    episode = run_episode(task, looping, max_steps=3, isolate=False)
    assert episode.stop_reason == "budget" and episode.steps == 3 and episode.tool_calls == 3
    wrong = Script(
        (Step("running the tests, expecting a failure.", "Bash", {"command": "true"}, expect_error=True),), "done."
    )
    with pytest.raises(ScriptMismatch, match="expected an error"):
        run_episode(task, ScriptedPolicy(wrong), isolate=False)
    lenient = ScriptedPolicy(wrong, strict=False)
    run_episode(task, lenient, isolate=False)
    assert len(lenient.mismatches) == 1


def test_concurrent_builders_share_one_directory(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(lambda _: build_agentic_data(tmp_path, count=2, seed=9, workers=1, progress=False), [0, 1])
        )
    assert results[0] == results[1]
    assert len(read_jsonl(tmp_path / "sft_train.jsonl")) == 1 and len(read_jsonl(tmp_path / "sft_test.jsonl")) == 1
