"""A hostile model against the tools: bad arguments, catastrophic patterns, FIFOs and devices, huge files and trees,
symlink races. Each attack must end in a one-line tool error or a bounded result, never outside the workspace.

Every attack goes through the path an agent's call takes (Permissions -> Tool -> files in the workspace). One
parametrized case is one attack; the race cases try 3000 times. The file tools do not depend on the sandbox's
command isolation. (The approval question and the terminal: test_terminal_attacks.py.)
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from nanocode.agents.permissions import Permissions
from nanocode.agents.tools import Edit, Grep, Read, Tool, ToolResult, build_tools
from tests.security.conftest import SECRET
from tests.security.test_terminal_attacks import Answers, make_loop
from tests.test_chat import scripted_model
from tests.test_model_policy import WIDE, render_call

TOOLS = build_tools()
YES = Permissions(auto_approve=True)


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
