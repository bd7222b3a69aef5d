"""Repo tasks: deterministic generation, hidden checks that fail before and pass after the scripted solution, and
SOUL-breaking variants."""

import builtins
import json
import random
import re
import sys

import pytest

from nanocode.agents.rollouts import replay
from nanocode.agents.tasks import (
    EVAL_TEMPLATES,
    PRINCIPLES,
    TRAIN_TEMPLATES,
    AnswerCheck,
    CommandCheck,
    RepoTasks,
    open_sandbox,
    run_check,
    task_workspace,
    variant,
)
from nanocode.agents.tasks.heldout_functions import EVAL_FAMILIES
from nanocode.agents.tasks.reference_words import REFERENCE_WORDS
from nanocode.agents.tasks.script import unique_span
from nanocode.agents.tasks.templates import FRESH_WORDS, _mentions
from nanocode.agents.tasks.vocab import DOMAINS, varied_domain
from nanocode.core.errors import ConfigError
from nanocode.core.kinds import TASK_GENERATORS


def test_registered_and_deterministic():
    assert TASK_GENERATORS.get("repo_tasks") is RepoTasks
    a, b = RepoTasks(seed=3), RepoTasks(seed=3)
    first = [t.to_dict() for t in a.tasks(12)]
    assert first == [t.to_dict() for t in b.tasks(12)]
    assert first[:5] == [t.to_dict() for t in b.tasks(5)]  # a larger count extends a smaller one
    assert a.task(7).to_dict() == first[7]  # any task rebuilt alone
    other = [t.to_dict() for t in RepoTasks(seed=4).tasks(12)]
    assert sum(x["files"] == y["files"] for x, y in zip(first, other)) < 3
    assert len({t["id"] for t in first}) == 12


def test_generation_covers_kinds_and_varies():
    tasks = RepoTasks(seed=0).tasks(80)
    assert {t.kind for t in tasks} == {"fix_bug", "implement", "rename", "locate"}
    assert len({t.template for t in tasks}) >= 9
    assert len({t.repo for t in tasks}) >= 12
    assert len({t.request for t in tasks}) >= 0.9 * len(tasks)  # same domain, template and phrasing can meet
    for t in tasks:
        assert t.files and all(text.count("\n") < 100 for text in t.files.values())
        assert t.solution.final and "?" not in t.solution.final
        assert all(s.say == s.say.lower() or "`" in s.say for s in t.solution.steps)
        edits = [i for i, s in enumerate(t.solution.steps) if s.tool == "Edit"]
        if edits:  # read before edit, verify after
            assert any(s.tool == "Read" for s in t.solution.steps[: edits[0]])
            assert any(s.tool == "Bash" for s in t.solution.steps[edits[-1] :])


def test_training_names_vary_and_heldout_keeps_the_fixed_domains():
    """Training repositories take their names from thousands of combinations (so a request's names must be copied,
    not recalled); the held-out set keeps the 24 hand-written domains; a domain choice is checked."""
    train = RepoTasks(seed=0).tasks(60)
    assert len({t.facts["module_path"].split("/")[-1] for t in train}) >= 40
    assert len({(t.facts["domain"], t.facts["module_path"]) for t in train}) >= 55
    for d in (varied_domain(random.Random(i)) for i in range(500)):
        names = (d.ent, d.ents, d.label, d.module, d.repo)
        assert all(n.isidentifier() and n not in sys.stdlib_module_names and not hasattr(builtins, n) for n in names)
        assert len({d.ent, d.ents, d.num, d.label}) == 4 and d.high - d.low >= 11
    assert {t.repo for t in RepoTasks(seed=0, templates="heldout").tasks(40)} <= {d.repo for d in DOMAINS}
    assert RepoTasks(seed=0, domains="fixed").task(3).repo in {d.repo for d in DOMAINS}
    with pytest.raises(ConfigError, match="domains must be"):
        RepoTasks(domains="random")


def test_kinds_filter_and_errors():
    assert {t.kind for t in RepoTasks(seed=1, kinds=["locate"]).tasks(6)} == {"locate"}
    with pytest.raises(ConfigError, match="unknown task kinds"):
        RepoTasks(kinds=["refactor"])
    with pytest.raises(ConfigError, match="templates must be one of"):
        RepoTasks(templates="test")
    with pytest.raises(ConfigError, match="no template"):
        RepoTasks().task(0, template="fix_bug:exclusive_bound")  # a held-out template is not in the train set


def test_locate_answers_from_its_grep_and_describes_only_what_it_read():
    """A locate script greps for the `def` line and answers with path:line; it says what the function does only
    when it read the function (mostly it does not: a locate that reads on looks like a fix's start to a small
    model). Its grep says the match is the answer, and a fix's grep says it will read on, so the two differ."""
    tasks = [t for t in RepoTasks(seed=2, kinds=["locate"]).tasks(60) if t.solution.steps[0].train]  # no miss
    reads, forms = 0, set()
    for t in tasks:
        tools = [s.tool for s in t.solution.steps]
        assert tools in (["Grep"], ["Grep", "Read"])
        assert f"{t.facts['module_path']}:{t.facts['line']}" in t.solution.final
        # the grep writes the name as the request did (after a backtick or after a space: different first tokens)
        fn, grep = t.facts["function"], t.solution.steps[0]
        backticked = f"`{fn}`" in t.request
        assert (f"`{fn}`" if backticked else f"`def {fn}`") in grep.say
        assert grep.args["pattern"] == (rf"def\s+{fn}\(" if backticked else rf"def {fn}\(")
        forms.add(backticked)
        described = len(t.solution.final) > len(t.facts["module_path"]) + len(t.facts["function"]) + 40
        assert described == (tools == ["Grep", "Read"]), t.solution.final
        reads += tools == ["Grep", "Read"]
    assert 0 < reads < len(tasks) / 2 and forms == {True, False}
    fixes = RepoTasks(seed=2, kinds=["fix_bug"]).tasks(40)
    locate_says = {t.solution.steps[0].say.replace(t.facts["function"], "F") for t in tasks}
    fix_says = {s.say.replace(f.facts["function"], "F") for f in fixes for s in f.solution.steps if s.tool == "Grep"}
    assert fix_says and not locate_says & fix_says


def test_some_training_locates_recover_from_a_misremembered_name_and_heldout_ones_never_miss():
    """A third of the training locate scripts first grep the name with a wrong first word (a turn kept out of the
    loss), find nothing, and grep the name's last word: the same tokens as in the request. The replay through the real
    Grep confirms both results; held-out scripts never include a miss."""
    tasks = RepoTasks(seed=4, kinds=["locate"]).tasks(30)
    recovering = [t for t in tasks if not t.solution.steps[0].train]
    assert 0 < len(recovering) < len(tasks) / 2
    for t in recovering[:3]:
        fn, (miss, rest, *_) = t.facts["function"], t.solution.steps
        wrong = re.search(r"def(?: |\\s\+)(\w+)\\\(", miss.args["pattern"]).group(1)
        assert wrong != fn and wrong.split("_", 1)[1] == fn.split("_", 1)[1]
        assert miss.message()["train"] is False and rest.train and "train" not in rest.message()
        assert rest.args["pattern"] == "_" + fn.split("_")[-1] + r"\("
        episode = replay(t, t.solution, isolate=False, timeout_s=20)  # ScriptMismatch unless the miss finds nothing
        results = [m["content"] for m in episode.messages if m["role"] == "tool_result"]
        assert episode.check.passed and results[0] == "no matches found"
        assert f"{t.facts['module_path']}:{t.facts['line']}:def {fn}(" in results[1]
        assert [m.get("train", True) for m in episode.messages if m["role"] == "assistant"][:2] == [False, True]
    heldout = RepoTasks(seed=4, templates="heldout", kinds=["locate"]).tasks(12)
    assert all(s.train for t in heldout for s in t.solution.steps)


def test_training_locate_renames_its_target_to_fresh_names_that_no_heldout_family_starts():
    """Most training locate targets get a fresh name (in every file, so the repository's tests still pass), which a
    model cannot recall from the families' name shapes; no fresh name starts like a held-out family or alias."""
    tasks = RepoTasks(seed=3, kinds=["locate"]).tasks(24)
    fresh = [t for t in tasks if t.facts["function"] != t.facts["family_name"]]
    assert len(tasks) / 2 < len(fresh) < len(tasks)
    for t in fresh[:3]:
        assert sum(f"def {t.facts['function']}(" in text for text in t.files.values()) == 1
        assert not any(re.search(rf"\b{t.facts['family_name']}\b", text) for text in t.files.values())
        with task_workspace(t) as root, open_sandbox(root, timeout_s=20, isolate=False) as box:
            assert box.run(f"python {t.facts['test_path']}").exit_code == 0
    heldout_starts = {re.split(r"[_$]", n.strip("$"))[0] for f in EVAL_FAMILIES.values() for n in (f.name, *f.aliases)}
    assert {"median", "top", "tally"} <= heldout_starts
    assert len(FRESH_WORDS) > 1000 and not heldout_starts & set(FRESH_WORDS)
    # nor a word that starts as one does (`sorting` begins with `sorted`'s first token)
    assert "sorting" in REFERENCE_WORDS and not [w for w in FRESH_WORDS if w[:4] in {s[:4] for s in heldout_starts}]
    firsts = {t.facts["function"].split("_")[0] for t in fresh}
    assert not [w for w in firsts if w.startswith(tuple(heldout_starts))]
    assert firsts & set(FRESH_WORDS) and firsts - set(FRESH_WORDS)  # vocabulary words and made-up ones
    assert {t.template for t in RepoTasks(seed=3, templates="heldout", kinds=["locate"]).tasks(6)} == {"locate:heldout"}


def _fails_before(task) -> bool:
    with task_workspace(task) as root, open_sandbox(root, timeout_s=20, isolate=False) as box:
        return not run_check(task, [], box).passed


@pytest.mark.parametrize(
    "set_name, template",
    [("train", name) for name in TRAIN_TEMPLATES] + [("heldout", name) for name in EVAL_TEMPLATES],
)
def test_hidden_check_fails_before_and_passes_after_the_solution(set_name, template):
    task = RepoTasks(seed=11, templates=set_name).task(5, template=template)
    assert task.template == template
    assert _fails_before(task)
    episode = replay(task, task.solution, isolate=False, timeout_s=20)  # ScriptMismatch if a result disagrees
    assert episode.check.passed, episode.check.detail
    assert episode.stop_reason == "end_turn" and episode.valid_tool_calls == len(task.solution.steps)


def test_editing_the_visible_tests_does_not_pass_the_check():
    task = RepoTasks(seed=2).task(0, template="fix_bug:skip_first")
    assert isinstance(task.check, CommandCheck)
    test_path = task.facts["test_path"]
    with task_workspace(task) as root, open_sandbox(root, timeout_s=20, isolate=False) as box:
        (root / test_path).write_text('print("all tests passed")\n')
        assert box.run(f"python {test_path}").exit_code == 0
        assert not run_check(task, [], box).passed


def test_answer_check_is_precise():
    check = AnswerCheck("inventory/stock.py", 12)

    def says(text):
        return check.judge([{"role": "user", "content": "q"}, {"role": "assistant", "content": text}]).passed

    assert says("it is defined at `inventory/stock.py:12` — it sums things.")
    assert says("see ./inventory/stock.py:12")
    assert not says("inventory/stock.py:123")
    assert not says("inventory/stock.py:11")
    assert not says("other/inventory/stock.py:12")
    assert not says("stock.py:12")
    assert not check.judge([{"role": "user", "content": "q"}]).passed


def test_unique_span_widens_until_unique():
    text = "a = 1\nb = 2\nx = 0\na = 1\nc = 3\n"
    start = text.index("a = 1", 1)
    s, e = unique_span(text, start, start + 5)
    assert text[s:e] == "x = 0\na = 1" and text.count(text[s:e]) == 1
    s, e = unique_span(text, text.index("c = 3"), text.index("c = 3") + 5)
    assert text[s:e] == "c = 3"


def test_variants_break_one_rule_each():
    tasks = RepoTasks(seed=5, kinds=["fix_bug"]).tasks(2) + RepoTasks(seed=5, kinds=["locate"]).tasks(1)
    for task in tasks:
        rng = random.Random(0)
        good = task.solution
        no_read = variant(task, "read-before-edit", rng)
        no_verify = variant(task, "verify-before-done", rng)
        follow_up = variant(task, "no-follow-up-offers", rng)
        silent = variant(task, "think-out-loud", rng)
        if task.kind == "locate":  # nothing is edited: no edit to read before or to verify after
            assert no_read is None and no_verify is None
        else:
            assert [s.tool for s in no_read.steps] == [s.tool for s in good.steps if s.tool != "Read"]
            assert no_verify.steps[-1].tool == "Edit" and no_verify.final != good.final
        assert (
            follow_up.steps == good.steps and follow_up.final.startswith(good.final) and follow_up.final != good.final
        )
        assert [s.args for s in silent.steps] == [s.args for s in good.steps] and all(s.say == "" for s in silent.steps)
    with pytest.raises(ValueError, match="unknown principle"):
        variant(tasks[0], "be-nice", random.Random(0))
    assert set(PRINCIPLES) == {"read-before-edit", "verify-before-done", "no-follow-up-offers", "think-out-loud"}


def test_training_scripts_use_only_paths_and_names_the_agent_has_seen():
    """A script that runs a test file its request never named teaches the model to invent one (the d6 model ran
    `python test_trucks.py` in a repository without it, and grepped `def total_lavor` for a request that named no
    function). Every file a fix, implement or rename step reads, edits or runs, and the function it is about, is
    named in the request or in an earlier tool result; a request that names only the module opens with it."""
    tasks = RepoTasks(seed=3, kinds=["fix_bug", "implement", "rename"]).tasks(48)
    openings = set()
    for task in tasks:
        seen, calls = task.request, []
        for m in replay(task, task.solution, isolate=False, timeout_s=20).messages:
            call = m.get("tool_call")
            if m["role"] == "assistant" and call:
                paths = re.findall(r"[\w/.]+\.py\b", call["args"].get("file_path") or call["args"].get("command", ""))
                assert all(path in seen for path in paths), (task.template, task.request, call)
                fn = task.facts.get("function")
                if fn and re.search(rf"\b{fn}\b", m["content"] + json.dumps(call)):
                    assert re.search(rf"\b{fn}\b", seen), (task.template, task.request, m)
                calls.append(call)
            elif m["role"] == "tool_result":
                seen += m["content"]
        openings.add(calls[0]["name"])
        module, tests = task.facts["module_path"], task.facts["test_path"]
        if _mentions(task.request, module) and not _mentions(task.request, tests):
            assert calls[0]["name"] == "Grep" or calls[0]["args"]["file_path"] == module, (task.request, calls[0])
    assert openings == {"Grep", "Read", "Bash"}  # find the file, read the named module, run the named tests
