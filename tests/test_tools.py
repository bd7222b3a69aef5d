"""The four tools' exact output formats, on real files in a temporary sandbox."""

import os

import pytest

from nanocode.agents.sandbox import Sandbox
from nanocode.agents.tools import NANOCODE_TOOLS, Bash, Edit, Grep, Read, Tool, ToolResult, build_tools, tools_prompt
from nanocode.core.kinds import TOOLS


@pytest.fixture
def sandbox(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    with Sandbox(root, timeout_s=10) as sb:
        yield sb


def write(sandbox, rel, text):
    path = sandbox.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- registry and schema ------------------------------------------------------------------------------------------
def test_tools_are_registered_under_nanocode_names():
    for name in NANOCODE_TOOLS:
        assert TOOLS.get(name).name == name
    assert list(build_tools())[:4] == ["Read", "Edit", "Grep", "Bash"]


def test_prompt_templates_match_nanocode_system_prompt():
    prompt = tools_prompt(build_tools(NANOCODE_TOOLS))
    assert prompt.splitlines() == [
        "Read:  <|tool_call_start|>Read<|tool_arg|>file_path<|tool_val|>...<|tool_arg|>offset<|tool_val|>..."
        "<|tool_arg|>limit<|tool_val|>...<|tool_call_end|>",
        "Edit:  <|tool_call_start|>Edit<|tool_arg|>file_path<|tool_val|>...<|tool_arg|>old_string<|tool_val|>..."
        "<|tool_arg|>new_string<|tool_val|>...<|tool_call_end|>",
        "Grep:  <|tool_call_start|>Grep<|tool_arg|>pattern<|tool_val|>...<|tool_arg|>path<|tool_val|>...<|tool_call_end|>",
        "Bash:  <|tool_call_start|>Bash<|tool_arg|>command<|tool_val|>...<|tool_call_end|>",
    ]


def test_openai_schema():
    schema = Read().openai_schema()
    assert schema["type"] == "function"
    fn = schema["function"]
    assert fn["name"] == "Read"
    assert fn["parameters"]["required"] == ["file_path"]
    assert fn["parameters"]["properties"]["offset"]["type"] == "integer"
    assert set(Grep().openai_schema()["function"]["parameters"]["properties"]) == {"pattern", "path", "-A", "-B"}


def test_fork_adds_a_tool_by_registering_it(sandbox):
    class Pwd(Tool):
        """Print the workspace root."""

        name = "Pwd"
        description = "print the workspace root"

        def run(self, args, sandbox):
            return ToolResult(str(sandbox.root))

    with TOOLS.temporary("Pwd", Pwd):
        tools = build_tools()
        assert list(tools)[-1] == "Pwd"
        assert tools["Pwd"]({}, sandbox).text == str(sandbox.root)


# -- validation ---------------------------------------------------------------------------------------------------
def test_validation_errors(sandbox):
    read = Read()
    assert read({}, sandbox).text == "error: missing required argument 'file_path' for Read"
    r = read({"file_path": "a", "colour": "red"}, sandbox)
    assert r.is_error and r.text == "error: unknown argument 'colour' for Read (arguments: file_path, offset, limit)"
    assert read({"file_path": "a", "limit": "ten"}, sandbox).text == (
        "error: argument 'limit' must be an integer, got 'ten'"
    )


def test_int_args_coerced_from_strings_and_str_args_from_ints(sandbox):
    write(sandbox, "n.txt", "".join(f"line {i}\n" for i in range(1, 11)))
    assert Read()({"file_path": "n.txt", "offset": "2", "limit": " 2 "}, sandbox).text == "    3→line 3\n    4→line 4"
    # nanocode's parser turned int-looking values into ints; a str argument gets its text back
    assert Bash()({"command": 123}, sandbox).text.startswith("error: command failed: exit code 127")


# -- Read -----------------------------------------------------------------------------------------------------------
def test_read_numbers_lines(sandbox):
    write(sandbox, "src/a.py", "import os\n\ndef f():\n    return 1\n")
    r = Read()({"file_path": "src/a.py"}, sandbox)
    assert not r.is_error
    assert r.text == "    1→import os\n    2→\n    3→def f():\n    4→    return 1"


def test_read_offset_and_limit(sandbox):
    write(sandbox, "big.txt", "".join(f"row{i}\n" for i in range(1, 301)))
    r = Read()({"file_path": "big.txt"}, sandbox)
    lines = r.text.splitlines()
    assert len(lines) == 100 and lines[0] == "    1→row1" and lines[-1] == "  100→row100"
    r = Read()({"file_path": "big.txt", "offset": 250, "limit": 3}, sandbox)
    assert r.text == "  251→row251\n  252→row252\n  253→row253"
    r = Read()({"file_path": "big.txt", "offset": 298}, sandbox)
    assert r.text == "  299→row299\n  300→row300"
    r = Read()({"file_path": "big.txt", "offset": 300}, sandbox)
    assert r.is_error and r.text == "error: offset 300 is past the end of the file (300 lines)"
    assert Read()({"file_path": "big.txt", "limit": 0}, sandbox).text == "error: limit must be 1 or more"


def test_read_wide_numbers_and_crlf(sandbox):
    write(sandbox, "w.txt", "".join(f"{i}\r\n" for i in range(1, 100002)))
    r = Read()({"file_path": "w.txt", "offset": 99999, "limit": 2}, sandbox)
    assert r.text == "100000→100000\n100001→100001"  # > 5 digits: the field just widens, as f"{i:>5}" does


def test_read_errors(sandbox):
    assert Read()({"file_path": "missing.py"}, sandbox).text == "error: file not found"
    (sandbox.root / "d").mkdir()
    assert Read()({"file_path": "d"}, sandbox).text == "error: path is a directory, not a file"
    write(sandbox, "empty.txt", "")
    assert Read()({"file_path": "empty.txt"}, sandbox).text == "(empty file)"


def test_read_refuses_binary(sandbox):
    (sandbox.root / "blob.bin").write_bytes(bytes(range(256)) * 100)
    r = Read()({"file_path": "blob.bin"}, sandbox)
    assert r.is_error and r.text == "error: binary file (25.0 KiB), not shown"
    (sandbox.root / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 10)
    assert Read()({"file_path": "latin1.txt"}, sandbox).text.startswith("error: binary file")


def test_read_cuts_huge_lines(sandbox):
    write(sandbox, "min.js", "x" * 5_000_000 + "\nsecond\n")
    r = Read(max_line_chars=100)({"file_path": "min.js"}, sandbox)
    first, second = r.text.splitlines()
    assert first == "    1→" + "x" * 100 + "… [line cut]"
    assert second == "    2→second"


# -- Edit -----------------------------------------------------------------------------------------------------------
def test_edit_creates_a_file(sandbox):
    r = Edit()({"file_path": "pkg/new.py", "new_string": "a = 1\nb = 2\n"}, sandbox)
    assert not r.is_error
    assert r.text == "pkg/new.py\n    1→a = 1\n    2→b = 2"
    assert (sandbox.root / "pkg/new.py").read_text() == "a = 1\nb = 2\n"
    # an empty old_string also means "create"
    r = Edit()({"file_path": "other.py", "old_string": "", "new_string": "x"}, sandbox)
    assert r.text == "other.py\n    1→x"


def test_edit_create_refuses_existing_file(sandbox):
    write(sandbox, "a.py", "keep\n")
    r = Edit()({"file_path": "a.py", "new_string": "clobber"}, sandbox)
    assert r.is_error and r.text == "error: file already exists, use old_string to edit"
    assert (sandbox.root / "a.py").read_text() == "keep\n"


def test_edit_replaces_unique_string_and_shows_whole_file(sandbox):
    path = write(sandbox, "hello.py", 'def hello():\n    print("helo")\n\nhello()\n')
    os.chmod(path, 0o755)
    r = Edit()({"file_path": "hello.py", "old_string": 'print("helo")', "new_string": 'print("hello")'}, sandbox)
    assert r.text == 'hello.py\n    1→def hello():\n    2→    print("hello")\n    3→\n    4→hello()'
    assert path.read_text() == 'def hello():\n    print("hello")\n\nhello()\n'
    assert os.stat(path).st_mode & 0o777 == 0o755  # the atomic rewrite keeps the mode


def test_edit_not_found_and_multiple_matches(sandbox):
    path = write(sandbox, "m.py", "x = 1\nx = 1\ny = 2\n")
    r = Edit()({"file_path": "m.py", "old_string": "z = 3", "new_string": "z = 4"}, sandbox)
    assert r.is_error and r.text == "error: old_string not found in file"
    r = Edit()({"file_path": "m.py", "old_string": "x = 1", "new_string": "x = 9"}, sandbox)
    assert r.is_error
    assert r.text == "error: old_string matches 2 times in file; include more surrounding lines to make it unique"
    assert path.read_text() == "x = 1\nx = 1\ny = 2\n"
    r = Edit()({"file_path": "m.py", "old_string": "x = 1\ny = 2", "new_string": "x = 1\ny = 3"}, sandbox)
    assert not r.is_error and path.read_text() == "x = 1\nx = 1\ny = 3\n"
    r = Edit()({"file_path": "nope.py", "old_string": "a", "new_string": "b"}, sandbox)
    assert r.text == "error: file not found"


def test_edit_strips_copied_line_number_prefixes(sandbox):
    path = write(sandbox, "s.py", "def f():\n    return 1\n")
    old = "    1→def f():\n    2→    return 1"
    new = "    1→def f():\n    2→    return 2"
    r = Edit()({"file_path": "s.py", "old_string": old, "new_string": new}, sandbox)
    assert not r.is_error
    assert path.read_text() == "def f():\n    return 2\n"


def test_edit_crlf_file_and_binary(sandbox):
    path = sandbox.root / "w.py"
    path.write_bytes(b"a = 1\r\nb = 2\r\n")
    r = Edit()({"file_path": "w.py", "old_string": "a = 1\nb = 2", "new_string": "a = 1\nb = 3"}, sandbox)
    assert not r.is_error and path.read_bytes() == b"a = 1\r\nb = 3\r\n"
    (sandbox.root / "b.bin").write_bytes(b"\x00\x01abc")
    r = Edit()({"file_path": "b.bin", "old_string": "abc", "new_string": "x"}, sandbox)
    assert r.is_error and r.text.startswith("error: binary file")


# -- Grep -----------------------------------------------------------------------------------------------------------
@pytest.fixture
def repo(sandbox):
    write(sandbox, "src/utils.py", "import os\n\ndef helper():\n    return os.getcwd()\n")
    write(sandbox, "src/main.py", "from utils import helper\n\n\ndef main():\n    helper()\n    helper()\n")
    write(sandbox, "README.md", "# demo\nuse helper() from utils\n")
    write(sandbox, ".git/objects/x", "helper in git internals\n")
    (sandbox.root / "data.bin").write_bytes(b"\x00helper\x00")
    return sandbox


def test_grep_matches(repo):
    r = Grep()({"pattern": "def \\w+"}, repo)
    assert r.text == "./src/main.py:4:def main():\n./src/utils.py:3:def helper():"
    r = Grep()({"pattern": "helper", "path": "src"}, repo)
    assert r.text.splitlines() == [
        "src/main.py:1:from utils import helper",
        "src/main.py:5:    helper()",
        "src/main.py:6:    helper()",
        "src/utils.py:3:def helper():",
    ]


def test_grep_single_file_and_no_matches(repo):
    assert Grep()({"pattern": "getcwd", "path": "src/utils.py"}, repo).text == "src/utils.py:4:    return os.getcwd()"
    r = Grep()({"pattern": "no_such_symbol"}, repo)
    assert r.text == "no matches found" and not r.is_error
    assert Grep()({"pattern": "x", "path": "nowhere"}, repo).text == "error: path not found"
    assert Grep()({"pattern": "("}, repo).text.startswith("error: invalid regex: ")


def test_grep_context(repo):
    r = Grep()({"pattern": "def main", "path": "src", "-B": "2", "-A": 1}, repo)
    assert r.text.splitlines() == [
        "src/main.py-2-",
        "src/main.py-3-",
        "src/main.py:4:def main():",
        "src/main.py-5-    helper()",
    ]
    r = Grep()({"pattern": "import|return", "path": "src", "-A": 0, "-B": 1}, repo)
    assert r.text.splitlines() == [
        "src/main.py:1:from utils import helper",
        "--",
        "src/utils.py:1:import os",
        "--",
        "src/utils.py-3-def helper():",
        "src/utils.py:4:    return os.getcwd()",
    ]


def test_grep_skips_binary_and_vcs_and_bounds_output(repo):
    r = Grep()({"pattern": "helper"}, repo)
    assert ".git" not in r.text and "data.bin" not in r.text
    write(repo, "many.txt", "hit\n" * 1000)
    r = Grep(max_output_lines=10)({"pattern": "hit", "path": "many.txt"}, repo)
    lines = r.text.splitlines()
    assert lines[:10] == [f"many.txt:{i}:hit" for i in range(1, 11)]
    assert lines[10:] == ["[output truncated at 10 lines]"]


# -- Bash -----------------------------------------------------------------------------------------------------------
def test_bash_output_and_exit_codes(sandbox):
    bash = Bash()
    r = bash({"command": "echo out; echo err >&2"}, sandbox)
    assert not r.is_error and r.text == "out\nerr"
    assert bash({"command": "true"}, sandbox).text == "(no output)"
    r = bash({"command": "echo partial; exit 3"}, sandbox)
    assert r.is_error and r.text == "error: command failed: exit code 3\npartial"
    assert bash({"command": "false"}, sandbox).text == "error: command failed: exit code 1"
    r = bash({"command": "no_such_command_xyz"}, sandbox)
    assert r.text.startswith("error: command failed: exit code 127\n") and "not found" in r.text
    assert bash({"command": "  "}, sandbox).text == "error: empty command"


def test_bash_runs_in_the_workspace(sandbox):
    write(sandbox, "f.txt", "content\n")
    assert Bash()({"command": "pwd && cat f.txt"}, sandbox).text == f"{sandbox.root}\ncontent"
    assert Bash()({"command": "echo new > g.txt && cat g.txt"}, sandbox).text == "new"
    assert (sandbox.root / "g.txt").read_text() == "new\n"


def test_bash_timeout_and_truncation_formats(tmp_path):
    with Sandbox(tmp_path, timeout_s=1, max_output_bytes=100) as sb:
        r = Bash()({"command": "echo started; sleep 30"}, sb)
        assert r.is_error and r.text == "error: command failed: timed out after 1 s\nstarted"
        r = Bash()({"command": "yes"}, sb)
        head, *body, tail = r.text.splitlines()
        assert head == "error: command failed: output exceeded 100 bytes; command stopped"
        assert tail == "[output truncated at 100 bytes]" and set(body) == {"y"}
