import json
import subprocess
import sys
import time

import pytest

import nanocode.registry as registry
from nanocode.align.synth import JsonlStore, SynthPipeline, synthesize
from nanocode.align.teacher import TeacherError
from tests.teacher_server import ScriptedTeacher


def teacher(url, **kw):
    kw = {"retries": 2, "backoff_s": 0.01, "timeout_s": 1.0, "retry_budget_s": 2.0, **kw}
    return registry.get("teacher", "openai_compatible")(base_url=url, **kw)


def pipeline(t):
    return SynthPipeline(t, registry.get("constitution", "soul_md")(), max_attempts=3)


SCENARIOS = [{"id": f"s{i}", "prompt": "fix the bug in calc.py"} for i in range(3)]


def test_pairs_reject_a_named_principle_that_chosen_passes(tmp_path):
    soul = registry.get("constitution", "soul_md")()
    with ScriptedTeacher() as server:
        summary = synthesize(pipeline(teacher(server.url)), SCENARIOS, tmp_path, workers=2, progress=False)
    assert summary["counts"]["accepted"] == 3 and summary["counts"]["pairs"] == 3
    pairs = JsonlStore(tmp_path).read("pairs.jsonl")
    assert len(pairs) == 3
    for pair in pairs:
        failed = {name for name, _ in soul.violations(pair["rejected"]["messages"])}
        assert {"read-before-edit", "no-follow-up-offers"} <= failed
        assert set(pair["rejected_fails"]) >= failed
        assert soul.violations(pair["chosen"]["messages"]) == []


def test_interrupted_run_resumes_without_duplicates(tmp_path):
    with ScriptedTeacher() as server:
        synthesize(pipeline(teacher(server.url)), SCENARIOS[:2], tmp_path, workers=1, progress=False)
        pairs = (tmp_path / "pairs.jsonl").read_text().splitlines()
        with open(tmp_path / "pairs.jsonl", "a") as f:  # killed between s2's pair and its rollout line
            f.write(pairs[0].replace('"s0"', '"s2"') + "\n")
        with open(tmp_path / "rollouts.jsonl", "a") as f:
            f.write('{"id": "s2", "prom')  # a torn line, as a kill mid-write leaves
        summary = synthesize(pipeline(teacher(server.url)), SCENARIOS, tmp_path, workers=1, progress=False)
    assert summary["counts"]["skipped_done"] == 2 and summary["counts"]["accepted"] == 1
    ids = [r["id"] for r in JsonlStore(tmp_path).read("rollouts.jsonl")]
    assert sorted(ids) == ["s0", "s1", "s2"]
    assert sorted(r["id"] for r in JsonlStore(tmp_path).read("pairs.jsonl")) == ["s0", "s1", "s2"]


KILLED_RUN = """
import sys
from nanocode.align.constitution import SoulConstitution
from nanocode.align.synth import SynthPipeline, synthesize
from nanocode.align.teacher import OpenAICompatibleTeacher
url, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
scenarios = [{"id": f"s{i}", "prompt": "fix the bug in calc.py"} for i in range(n)]
t = OpenAICompatibleTeacher(base_url=url, backoff_s=0.01, timeout_s=10.0)
synthesize(SynthPipeline(t, SoulConstitution(), max_attempts=3), scenarios, out, workers=3, progress=False)
"""


def lines(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_run_killed_twice_resumes_with_every_rollout_once(tmp_path):
    """kill -9 while rollouts are in flight (twice, at different points), resume: each requested id exactly once."""
    n = 12
    with ScriptedTeacher(delay_s=0.05) as server:
        for kill_after in (2, 6):
            proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, server.url, str(tmp_path), str(n)])
            deadline = time.monotonic() + 120
            while lines(tmp_path / "rollouts.jsonl") < kill_after and proc.poll() is None:
                assert time.monotonic() < deadline, "the synth run wrote nothing"
                time.sleep(0.01)
            proc.kill()
            proc.wait()
        assert lines(tmp_path / "rollouts.jsonl") < n  # it was interrupted
        summary = synthesize(pipeline(teacher(server.url)), [{"id": f"s{i}", "prompt": "fix"} for i in range(n)],
                             tmp_path, workers=3, progress=False)  # fmt: skip
    ids = [r["id"] for r in JsonlStore(tmp_path).read("rollouts.jsonl")]
    assert len(ids) == len(set(ids)) == n and summary["counts"]["skipped_done"] >= 6
    pair_ids = [r["id"] for r in JsonlStore(tmp_path).read("pairs.jsonl")]
    assert sorted(pair_ids) == sorted(ids)  # one pair per rollout: none duplicated, none lost


@pytest.mark.parametrize("fault", ["timeout", "invalid_json", "http500"])
def test_transient_teacher_faults_are_retried(tmp_path, fault):
    with ScriptedTeacher(faults=[fault]) as server:
        t = teacher(server.url)
        summary = synthesize(pipeline(t), SCENARIOS[:1], tmp_path, workers=1, progress=False)
    assert summary["counts"]["accepted"] == 1
    assert t.stats["retries"] >= 1


def test_persistent_failure_and_unreachable_teacher_are_counted_not_fatal(tmp_path):
    with ScriptedTeacher(faults=["http500"] * 50) as server:
        summary = synthesize(pipeline(teacher(server.url)), SCENARIOS[:2], tmp_path, workers=1, progress=False)
    assert summary["counts"]["teacher_failed"] == 2
    summary = synthesize(pipeline(teacher("http://127.0.0.1:9")), SCENARIOS[:1], tmp_path / "u", progress=False)
    assert summary["counts"]["teacher_failed"] == 1
    assert json.loads((tmp_path / "u" / "summary.json").read_text())["counts"]["teacher_failed"] == 1
    with pytest.raises(TeacherError, match="unreachable"):
        teacher("http://127.0.0.1:9").complete([{"role": "user", "content": "hi"}])


def test_restyle_keeps_tools_identical_and_fixes_prose():
    original = [
        {"role": "user", "content": "make a prime checker"},
        {
            "role": "assistant",
            "content": "Sure! I'll create it.",
            "tool_call": {"name": "Edit", "args": {"file_path": "prime.py", "new_string": "def is_prime(n): ..."}},
        },
        {"role": "tool_result", "content": "prime.py\n    1→def is_prime(n): ..."},
        {"role": "assistant", "content": "Done!"},
    ]
    with ScriptedTeacher() as server:
        restyled, orig = pipeline(teacher(server.url)).restyle_one(original)
    assert [m.get("tool_call") for m in restyled.messages] == [m.get("tool_call") for m in original]
    assert restyled.messages[2] == original[2]
    assert "lowercase-prose" in {n for n, _ in orig.violations}
    assert "lowercase-prose" not in {n for n, _ in restyled.violations}


def test_synth_cli_end_to_end_from_gin(tmp_path, gin_clean, workspace_base):
    from nanocode.cli.main import main

    with ScriptedTeacher() as server:
        params = [
            f"--gin_param=openai_compatible.base_url = '{server.url}'",
            "--gin_param=Synthesis.seeds = 1",
            "--gin_param=Synthesis.workers = 1",
            "--gin_param=openai_compatible.backoff_s = 0.01",
        ]
        files = ["--gin_file=experiments/debug_cpu.gin", "--gin_file=experiments/base/synth/openai_teacher.gin"]
        argv = [*files, *params, "--quiet"]
        scenarios = tmp_path / "s.jsonl"
        scenarios.write_text("".join(json.dumps(s) + "\n" for s in SCENARIOS))
        assert main(["synth", "rollouts", *argv, f"--input={scenarios}"]) == 0
    out = workspace_base / "debug" / "synth"
    assert len(JsonlStore(out).read("pairs.jsonl")) == 3
    assert (out / "config.gin").exists() and (out / "summary.json").exists()


def test_scenarios_cut_off_within_a_seed_are_asked_again_not_duplicated(gin_clean, workspace_base):
    from nanocode.cli.main import main

    with ScriptedTeacher() as server:
        argv = [
            "synth",
            "scenarios",
            "--gin_file=experiments/debug_cpu.gin",
            "--gin_file=experiments/base/synth/openai_teacher.gin",
            f"--gin_param=openai_compatible.base_url = '{server.url}'",
            "--gin_param=Synthesis.seeds = 2",
            "--quiet",
        ]
        assert main(argv) == 0
        out = workspace_base / "debug" / "synth"
        first = JsonlStore(out).read("scenarios.jsonl")
        assert len(first) == 6 and server.requests == 2
        # killed after the second seed's second scenario line, before its third and its seed line
        (out / "scenarios.jsonl").write_text("".join(json.dumps(s) + "\n" for s in first[:5]))
        (out / "scenario_seeds.jsonl").write_text(json.dumps({"id": first[0]["seed_id"]}) + "\n")
        assert main(argv) == 0
        assert server.requests == 3  # only the cut-off seed was asked again
    ids = [s["id"] for s in JsonlStore(out).read("scenarios.jsonl")]
    assert sorted(ids) == sorted(s["id"] for s in first) and len(ids) == len(set(ids))


def test_pipeline_against_nanocode_serve_counts_unusable_replies_and_keeps_going(tmp_path):
    """The synth pipeline driving a real `nanocode serve` (a tiny untrained GPT): its replies are not the JSON a
    rollout needs, so each scenario is retried and counted as a teacher failure — nothing crashes or is written
    half. (A teacher that can write rollouts, e.g. a large model behind any OpenAI-compatible server, yields pairs
    exactly as the scripted teacher above shows.)"""
    from nanocode.agents.server import CompletionServer
    from nanocode.data.conversation import ConversationCodec
    from nanocode.models.engine import Engine
    from nanocode.models.gpt import GPTConfig
    from tests.helpers import small_tokenizer
    from tests.test_engine import tiny_model

    # room for the pipeline's max_tokens = 8192 after its prompt: the server refuses a budget beyond the context
    config = GPTConfig(sequence_len=16384, vocab_size=512, n_layer=1, n_head=2, n_kv_head=2, n_embd=32)
    engine = Engine(tiny_model(config), min_bucket=64, max_bucket=1024)
    with CompletionServer(engine, ConversationCodec(small_tokenizer()), model_name="default", port=0) as server:
        t = teacher(server.url + "/v1", retries=1, timeout_s=60.0)
        summary = synthesize(pipeline(t), SCENARIOS[:2], tmp_path, workers=1, progress=False)
    # Each scenario ends on a call that got 1 + retries unusable replies. Random text can hold a stray JSON object
    # ("{}"), which is usable JSON judged as a rollout without messages, so a scenario may make more calls than one.
    assert summary["counts"]["teacher_failed"] == 2 and t.stats["unusable"] >= 4
    refused = t.stats["schema_refused"]  # `nanocode serve` refuses the JSON schema (once per request then in flight)
    assert refused >= 1 and not t.json_schema
    calls = t.stats["requests"] - t.stats["retries"] - refused  # every request is a first try, a retry or refused
    assert calls >= 2 and t.stats["unusable"] <= t.stats["requests"] - refused
    assert JsonlStore(tmp_path).read("rollouts.jsonl") == [] and (tmp_path / "summary.json").exists()
