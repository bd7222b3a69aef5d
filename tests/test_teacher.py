"""The OpenAI-compatible teacher against a local server that rate-limits, drops connections and answers garbage:
retries within a time budget honouring Retry-After, only the parameters a model accepts, both OpenAI APIs."""

import sys
import threading

import pytest

from nanocode.align.constitution import SoulConstitution
from nanocode.align.synth import JsonlStore, SynthPipeline, synthesize
from nanocode.align.teacher import OpenAICompatibleTeacher, TeacherError, is_reasoning_model, retry_after_s
from nanocode.core.errors import ConfigError
from tests.teacher_server import ScriptedTeacher

SCENARIOS = [{"id": f"s{i}", "prompt": "fix the bug in calc.py"} for i in range(3)]
HI = [{"role": "user", "content": "hi"}]


def teacher(url, **kw):
    kw = {"retries": 2, "backoff_s": 0.01, "timeout_s": 1.0, "retry_budget_s": 30.0, **kw}
    return OpenAICompatibleTeacher(base_url=url, **kw)


def run(t, out, scenarios=SCENARIOS, workers=2):
    pipeline = SynthPipeline(t, SoulConstitution(), max_attempts=3)
    return synthesize(pipeline, scenarios, out, workers=workers, progress=False)


def test_a_rate_limited_teacher_is_waited_out_and_nothing_is_lost(tmp_path):
    """429 + Retry-After: 1 for the first 3 s (the by-hand run in the README: 60 s), then answers."""
    with ScriptedTeacher(rate_limited_for_s=3.0, retry_after="1") as server:
        t = teacher(server.url)
        summary = run(t, tmp_path)
    assert summary["counts"]["accepted"] == 3 and "teacher_failed" not in summary["counts"]
    assert sorted(r["id"] for r in JsonlStore(tmp_path).read("rollouts.jsonl")) == ["s0", "s1", "s2"]
    assert t.stats["rate_limited"] == server.rate_limited > 0
    # each worker slept the 1 s the server asked for between tries (backoff_s = 0.01 would have made hundreds)
    assert server.rate_limited <= 2 * (3 + 2)


def test_a_rate_limit_longer_than_the_budget_fails_in_one_line(tmp_path):
    with ScriptedTeacher(rate_limited_for_s=600.0, retry_after="120") as server:
        with pytest.raises(TeacherError, match=r"gave up after \d+ s of retries \(retry_budget_s = 2\): HTTP 429") as e:
            teacher(server.url, retry_budget_s=2.0).complete(HI)
        summary = run(teacher(server.url, retry_budget_s=2.0), tmp_path, SCENARIOS[:1])
    assert "\n" not in str(e.value) and server.requests == 2  # the 120 s wait is not started: over budget
    assert summary["counts"]["teacher_failed"] == 1  # counted, retried on the next run


def test_5xx_and_dropped_connections_are_retried(tmp_path):
    with ScriptedTeacher(faults=["drop", "http500", "drop", "timeout"]) as server:
        t = teacher(server.url, timeout_s=0.5)
        summary = run(t, tmp_path, SCENARIOS[:1], workers=1)
    assert summary["counts"]["accepted"] == 1 and t.stats["retries"] == 4


def test_malformed_replies_are_counted_unusable_and_the_job_keeps_going(tmp_path):
    # retries = 1: two unusable replies end the first scenario; the other two go through
    with ScriptedTeacher(faults=["malformed", "invalid_json"]) as server:
        t = teacher(server.url, retries=1)
        summary = run(t, tmp_path, workers=1)
    assert summary["counts"]["teacher_failed"] == 1 and summary["counts"]["accepted"] == 2
    assert t.stats["unusable"] == 2 and "unusable replies" in next(iter(summary["failed_principles"]))
    assert sorted(r["id"] for r in JsonlStore(tmp_path).read("rollouts.jsonl")) == ["s1", "s2"]
    with ScriptedTeacher() as server:  # the next run makes the one that failed
        summary = run(teacher(server.url), tmp_path)
    assert summary["counts"] == {"skipped_done": 2, "accepted": 1, "pairs": 1}


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_both_apis_make_the_same_pairs(tmp_path, api):
    with ScriptedTeacher() as server:
        t = teacher(server.url, api=api)
        summary = run(t, tmp_path)
    assert summary["counts"]["accepted"] == summary["counts"]["pairs"] == 3
    assert {path for path, _ in server.bodies} == {f"/v1/{'chat/completions' if api == 'chat' else 'responses'}"}
    assert summary["teacher"]["tokens_in"] > 0 and summary["teacher"]["tokens_out"] > 0
    _, body = server.bodies[0]
    schema = body["response_format"]["json_schema"] if api == "chat" else body["text"]["format"]
    assert schema["schema"]["required"] == ["messages"]


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("model, reasoning", [("o3-mini", None), ("openai/gpt-5-mini", None), ("default", True)])
def test_reasoning_models_get_only_the_parameters_they_accept(model, reasoning, api):
    with ScriptedTeacher() as server:
        teacher(server.url, model=model, reasoning=reasoning, api=api).complete(HI, temperature=0.3, max_tokens=99)
    ((_, body),) = server.bodies
    assert "temperature" not in body and "max_tokens" not in body
    assert body["max_completion_tokens" if api == "chat" else "max_output_tokens"] == 99


def test_other_models_get_max_tokens_and_temperature():
    with ScriptedTeacher() as server:
        teacher(server.url, model="gpt-4o").complete(HI, temperature=0.3, max_tokens=99)
        teacher(server.url, model="o3", reasoning=False, api="responses").complete(HI, temperature=0.3, max_tokens=9)
    (_, chat), (_, responses) = server.bodies
    assert chat["max_tokens"] == 99 and chat["temperature"] == 0.3 and "max_completion_tokens" not in chat
    assert responses["max_output_tokens"] == 9 and responses["temperature"] == 0.3


def test_reasoning_model_names():
    reasoning = ["o1", "o1-mini", "o3", "o3-mini", "o4-mini", "gpt-5", "gpt-5-mini", "gpt-5.1", "openai/o3"]
    assert all(is_reasoning_model(m) for m in reasoning)
    assert not any(is_reasoning_model(m) for m in ["gpt-4o", "gpt-4.1-mini", "default", "qwen3-32b", "llama-o1x"])


def test_retry_after_header_forms():
    assert retry_after_s({"retry-after": "7"}) == 7.0
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "7"}) == 0.25
    assert 50 < retry_after_s({"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"})
    assert retry_after_s({}) is None and retry_after_s({"retry-after": "soon"}) is None


def test_an_unreachable_server_and_a_refused_key_fail_fast_in_one_line():
    with pytest.raises(TeacherError, match="unreachable"):
        teacher("http://127.0.0.1:9/v1").complete(HI)
    with ScriptedTeacher() as server, pytest.raises(TeacherError, match=r"HTTP 404 .*no such endpoint"):
        teacher(server.url.removesuffix("/v1") + "/v2").complete(HI)


def test_without_the_openai_package_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)  # what `import openai` sees when it is not installed
    with pytest.raises(ConfigError, match=r"pip install 'nanocode\[teacher\]'"):
        teacher("http://127.0.0.1:9/v1").complete(HI)


def test_a_bad_api_name_is_one_line():
    with pytest.raises(ConfigError, match="'chat' or 'responses'"):
        OpenAICompatibleTeacher(api="completions")


def test_a_teacher_that_restarts_mid_run_is_waited_for_within_the_budget():
    """Once the server has answered, refused connections are an outage (a restarting vLLM), not a wrong URL."""
    first = ScriptedTeacher()
    with first:
        t = teacher(first.url, retry_budget_s=1.0)
        t.complete(HI)
    with pytest.raises(TeacherError, match=r"gave up after \d+ s of retries .*unreachable"):
        t.complete(HI)
    port = int(first.url.rsplit(":", 1)[1].split("/")[0])
    t.retry_budget_s = 30.0
    restarted = ScriptedTeacher(port=port)
    comeback = threading.Timer(0.5, restarted.thread.start)  # back up while the call below is retrying
    comeback.start()
    try:
        assert t.complete(HI)
    finally:
        comeback.join()
        restarted.__exit__()
    assert restarted.requests == 1 and t.stats["retries"] >= 2
