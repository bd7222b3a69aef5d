"""The permission policy: Edit and Bash ask first; a refusal is exactly nanocode's `rejected by user`."""

from nanocode.agents.permissions import REJECTED, Permissions, describe_call
from nanocode.agents.sandbox import Sandbox
from nanocode.agents.tools import build_tools


class Recorder:
    """An `ask` callable that answers from a script and remembers the questions."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.questions = []

    def __call__(self, prompt):
        self.questions.append(prompt)
        return self.answers.pop(0)


def test_read_and_grep_never_ask(tmp_path):
    (tmp_path / "a.py").write_text("x\n")
    ask = Recorder()
    tools = build_tools()
    with Sandbox(tmp_path) as sb:
        assert Permissions(ask).call(tools["Read"], {"file_path": "a.py"}, sb).text == "    1→x"
        assert Permissions(ask).call(tools["Grep"], {"pattern": "x"}, sb).text == "./a.py:1:x"
    assert ask.questions == []


def test_rejection_is_nanocodes_tool_result_and_nothing_runs(tmp_path):
    ask = Recorder(False, False)
    tools = build_tools()
    with Sandbox(tmp_path) as sb:
        r = Permissions(ask).call(tools["Bash"], {"command": "touch made.txt"}, sb)
        assert r == REJECTED and r.text == "rejected by user" and r.rejected
        r = Permissions(ask).call(tools["Edit"], {"file_path": "new.py", "new_string": "x = 1\n"}, sb)
        assert r.text == "rejected by user"
    assert not (tmp_path / "made.txt").exists() and not (tmp_path / "new.py").exists()
    assert ask.questions[0] == "allow Bash: run `touch made.txt`\n[y/n] "
    assert ask.questions[1] == "allow Edit: create new.py:\nx = 1\n\n[y/n] "


def test_approval_runs_the_tool(tmp_path):
    ask = Recorder(True)
    with Sandbox(tmp_path) as sb:
        r = Permissions(ask).call(build_tools()["Bash"], {"command": "echo hi"}, sb)
    assert r.text == "hi" and not r.rejected and len(ask.questions) == 1


def test_yes_mode_never_asks(tmp_path):
    ask = Recorder()
    with Sandbox(tmp_path) as sb:
        r = Permissions(ask, auto_approve=True).call(build_tools()["Edit"], {"file_path": "f", "new_string": "1"}, sb)
    assert r.text == "f\n    1→1" and ask.questions == []


def test_invalid_calls_are_reported_before_asking(tmp_path):
    ask = Recorder()
    with Sandbox(tmp_path) as sb:
        r = Permissions(ask).call(build_tools()["Bash"], {"cmd": "ls"}, sb)
    assert r.text.startswith("error: unknown argument 'cmd' for Bash") and ask.questions == []


def test_describe_edit_shows_old_and_new():
    text = describe_call("Edit", {"file_path": "a.py", "old_string": "x = 1", "new_string": "x = 2"})
    assert text == "edit a.py:\n--- old\nx = 1\n+++ new\nx = 2"
