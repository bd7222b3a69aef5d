"""The agentic eval: held-out templates disjoint from training, oracle 100%, read-only 0%, metrics and the log."""

import json

import pytest

from nanocode.agents.eval_suite import AgenticEval, AgenticResult, TaskOutcome
from nanocode.agents.policy import ReadOnlyPolicy
from nanocode.agents.tasks import EVAL_TEMPLATES, TRAIN_TEMPLATES, RepoTasks
from nanocode.agents.tasks.base import AnswerCheck
from nanocode.agents.tasks.bugs import EVAL_BUGS, TRAIN_BUGS
from nanocode.agents.tasks.functions import TRAIN_FAMILIES
from nanocode.agents.tasks.heldout_functions import EVAL_FAMILIES
from nanocode.agents.tasks.vocab import DOMAINS
from nanocode.core.errors import ConfigError
from nanocode.core.kinds import EVAL_SUITES

N = len(EVAL_TEMPLATES)  # one task per held-out template


@pytest.fixture(scope="module")
def suite():
    return AgenticEval(n_tasks=N, seed=1)


def test_eval_and_training_templates_are_disjoint():
    assert not set(EVAL_TEMPLATES) & set(TRAIN_TEMPLATES)
    assert not set(EVAL_FAMILIES) & set(TRAIN_FAMILIES) and not set(EVAL_BUGS) & set(TRAIN_BUGS)
    # no function a training family can produce is ever a function of a held-out repository, and vice versa
    for d in DOMAINS:
        train_names = {f.fn(d) for f in TRAIN_FAMILIES.values()}
        eval_names = {f.fn(d) for f in EVAL_FAMILIES.values()}
        assert not train_names & eval_names
    train_fns = {f.fn(d) for d in DOMAINS for f in TRAIN_FAMILIES.values()}
    for task in RepoTasks(seed=1, templates="heldout").tasks(2 * N):
        text = "\n".join(task.files.values())
        assert not [fn for fn in train_fns if f"def {fn}(" in text], task.id
    assert {t.template for t in RepoTasks(seed=1, templates="heldout").tasks(N)} == set(EVAL_TEMPLATES)


def test_every_eval_task_needs_an_edit_or_an_answer_only_a_search_finds():
    assert {t.kind for t in EVAL_TEMPLATES.values()} == {"fix_bug", "implement", "rename", "locate"}
    for task in RepoTasks(seed=1, templates="heldout").tasks(N):
        if task.kind == "locate":
            assert isinstance(task.check, AnswerCheck) and any(s.tool == "Grep" for s in task.solution.steps)
            assert task.check.path not in task.request  # the answer is not in the question
        else:  # an Edit, or (renames) a `sed -i` over the files that mention the old name
            assert any(s.tool == "Edit" or "sed -i" in s.args.get("command", "") for s in task.solution.steps)


def test_tasks_per_kind_samples_one_kind_more_and_extends_the_even_suite():
    even = AgenticEval(n_tasks=3 * N, seed=1).tasks()
    skewed = AgenticEval(seed=1, tasks_per_kind={"locate": 5, "rename": 2}).tasks()
    assert [t.kind for t in skewed].count("locate") == 5 and [t.kind for t in skewed].count("rename") == 2
    assert len({t.id for t in skewed}) == len(skewed) == 7  # distinct tasks (the oracle keys scripts by id)
    # the even suite's locate tasks are the first ones of the larger sample, so results stay comparable
    even_locate = [t.id for t in even if t.kind == "locate"]
    assert [t.id for t in skewed if t.kind == "locate"][: len(even_locate)] == even_locate
    with pytest.raises(ConfigError, match="no 'debug' template"):
        RepoTasks(seed=1, templates="heldout").kind_indices("debug", 2)


def test_registered():
    assert EVAL_SUITES.get("agentic") is AgenticEval


def test_oracle_passes_everything(suite, tmp_path):
    log = tmp_path / "oracle.jsonl"
    result = suite.run(suite.oracle(), log_path=log)
    m = result.metrics()
    assert m["tasks"] == N and m["success_rate"] == 1.0
    assert m["valid_tool_call_rate"] == 1.0 and m["violations_per_task"] == 0.0 and m["budget_exhausted"] == 0
    assert m["mean_steps"] == sum(len(t.solution.steps) + 1 for t in suite.tasks()) / N
    assert set(m["success_by_kind"]) == {"fix_bug", "implement", "rename", "locate"}
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["task_id"] for r in lines] == [t.id for t in suite.tasks()]
    assert all(r["success"] and r["policy"] == "oracle" and r["messages"][0]["role"] == "system" for r in lines)


def test_read_only_passes_nothing(suite):
    result = suite.run(ReadOnlyPolicy())
    m = result.metrics()
    assert m["success_rate"] == 0.0 and m["valid_tool_call_rate"] == 1.0
    for outcome in result.outcomes:
        assert (
            outcome.stop_reason == "end_turn"
            and 2 <= outcome.tool_calls <= 4
            and outcome.steps == outcome.tool_calls + 1
        )


def test_metrics_arithmetic():
    def outcome(kind, success, steps, calls, valid, violations):
        return TaskOutcome("t", kind, f"{kind}:x", success, "", steps, calls, valid, "end_turn", violations)

    result = AgenticResult(
        "p",
        [
            outcome("fix_bug", True, 4, 3, 3, {}),
            outcome("fix_bug", False, 2, 1, 0, {"think-out-loud": "silent"}),
            outcome("rename", False, 6, 4, 3, {"think-out-loud": "x", "verify-before-done": "y"}),
        ],
    )
    m = result.metrics()
    assert m["success_rate"] == pytest.approx(1 / 3) and m["valid_tool_call_rate"] == pytest.approx(6 / 8)
    assert m["mean_steps"] == 4.0 and m["violations_per_task"] == 1.0
    assert m["violation_rates"] == {"think-out-loud": pytest.approx(2 / 3), "verify-before-done": pytest.approx(1 / 3)}
    assert m["success_by_kind"] == {"fix_bug": 0.5, "rename": 0.0}
    assert AgenticResult("p", [outcome("fix_bug", False, 1, 0, 0, {})]).metrics()["valid_tool_call_rate"] is None
