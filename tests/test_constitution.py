import pytest

import nanocode.registry as registry
from nanocode.align.constitution import parse_soul
from nanocode.core.errors import ConfigError


def soul():
    return registry.get("constitution", "soul_md")()


def read(path):
    return {
        "role": "assistant",
        "content": f"i'll read {path} first.",
        "tool_call": {"name": "Read", "args": {"file_path": path}},
    }


def edit(path, old="x = 1", content="fixing the off-by-one."):
    args = {"file_path": path, "old_string": old, "new_string": "x = 2"}
    return {"role": "assistant", "content": content, "tool_call": {"name": "Edit", "args": args}}


def bash(cmd="python -m pytest -q"):
    return {
        "role": "assistant",
        "content": "running the tests.",
        "tool_call": {"name": "Bash", "args": {"command": cmd}},
    }


def result(text="ok"):
    return {"role": "tool_result", "content": text}


GOOD = [
    {"role": "user", "content": "fix the bug in calc.py"},
    read("calc.py"),
    result(),
    edit("calc.py"),
    result(),
    bash(),
    result("1 passed"),
    {"role": "assistant", "content": "done — the loop now stops at n, and the test passes."},
]


def test_soul_md_parses_into_named_principles():
    names = [p.name for p in soul().principles()]
    for expected in ("identity", "read-before-edit", "verify-before-done", "lowercase-prose", "no-follow-up-offers"):
        assert expected in names
    assert all(p.text for p in soul().principles())
    assert "nanocode" in soul().text


def test_good_rollout_passes_every_check():
    assert soul().violations(GOOD) == []


@pytest.mark.parametrize(
    "broken, principle",
    [
        ([GOOD[0], GOOD[3], GOOD[4], GOOD[5], GOOD[6], GOOD[7]], "read-before-edit"),
        (GOOD[:5] + [GOOD[7]], "verify-before-done"),
        (
            GOOD[:-1] + [{"role": "assistant", "content": "done. anything else you'd like me to do?"}],
            "no-follow-up-offers",
        ),
        (GOOD[:-1] + [{"role": "assistant", "content": "Done. The test passes now."}], "lowercase-prose"),
        (GOOD[:-1] + [{"role": "assistant", "content": "you're absolutely right, fixed."}], "no-sycophancy"),
        ([GOOD[0], {**GOOD[1], "content": ""}, *GOOD[2:]], "think-out-loud"),
    ],
)
def test_each_check_catches_its_violation(broken, principle):
    names = [name for name, _ in soul().violations(broken)]
    assert principle in names


def test_code_and_identifiers_do_not_count_as_uppercase_prose():
    msgs = GOOD[:-1] + [{"role": "assistant", "content": "fixed the `KeyError` in `Parser.run` — JSON loads fine now."}]
    assert soul().violations(msgs) == []


def test_unknown_check_and_empty_soul_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"SOUL.md:2: unknown check 'nope'"):
        parse_soul("## a\n<!-- check: nope -->\ntext\n")
    with pytest.raises(ConfigError, match="no principles"):
        parse_soul("just prose\n")
