"""`nanocode agent` in a real terminal (tmux): a tiny model trained to make one Edit proposes it, "n" leaves the file
as it was and hands the turn back, "y" edits it and the model goes on to end its turn; the transcript is saved.

The model is really trained (the SFT step functions, a few dozen steps on copies of one conversation whose
assistant makes that Edit, with nanocode's system prompt), so greedy decoding reproduces the call.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from nanocode.agents.agent_loop import AgentLoop, TurnOutcome
from nanocode.agents.agent_session import AgentSession
from nanocode.agents.permissions import Permissions
from nanocode.agents.policy import system_prompt
from nanocode.agents.sandbox import Sandbox
from nanocode.agents.tools import build_tools
from nanocode.cli.main import main
from nanocode.core import mesh as mesh_lib
from nanocode.core.checkpoint import Checkpointer, make_meta
from nanocode.core.workspace import Workspace
from nanocode.data.conversation import ConversationCodec
from nanocode.data.sft import SFTPacker
from nanocode.models.engine import Engine
from nanocode.models.gpt import GPT, GPTConfig
from nanocode.models.sampling import GREEDY, SamplingParams
from nanocode.optim.adamw import AdamW
from nanocode.train.state import init_train_state
from nanocode.train.step import make_train_step
from tests.helpers import experiment_gin, small_tokenizer
from tests.test_chat import scripted_model, text_chain
from tests.test_model_policy import WIDE, babbling_model, malformed_chain, render_call

# Long enough for nanocode's system prompt (~600 ids with the 512-id test tokenizer) and the whole exchange.
EDIT_CONFIG = GPTConfig(sequence_len=768, vocab_size=512, n_layer=2, n_head=2, n_kv_head=2, n_embd=64)
EDIT_GIN = (
    "\n".join(experiment_gin("base/mesh/cpu.gin", "base/eval/nanocode.gin", keep=("eval",)))
    + """
GPTConfig.sequence_len = 768
GPTConfig.vocab_size = 512
GPTConfig.n_layer = 2
GPTConfig.n_head = 2
GPTConfig.n_kv_head = 2
GPTConfig.n_embd = 64
Experiment.tag = '{tag}'
"""
)
ORIGINAL = "print('helo, world')\n"
REQUEST = "fix the typo in hello.py"
CALL = {"name": "Edit", "args": {"file_path": "hello.py", "old_string": "helo", "new_string": "hello"}}
FINAL = "fixed the typo."


def edit_conversation() -> list[dict]:
    """The request, the Edit, the real Edit tool's result on the file, and the closing words."""
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "hello.py").write_text(ORIGINAL)
        with Sandbox(root, isolate=False) as box:
            result = build_tools()["Edit"](CALL["args"], box).text
    return [
        {"role": "system", "content": system_prompt()},
        {"role": "user", "content": REQUEST},
        {"role": "assistant", "content": "", "tool_call": CALL},
        {"role": "tool_result", "content": result},
        {"role": "assistant", "content": FINAL},
    ]


def train_edit_model(directory: Path, *, steps: int = 40, seed: int = 0) -> float:
    """Train the tiny model on copies of `edit_conversation()` and save it into the checkpoints `directory` as the
    trainer does; returns the last loss."""
    codec = ConversationCodec(small_tokenizer())
    batches = iter(SFTPacker([edit_conversation()] * 4, codec, batch_size=4, seq_len=EDIT_CONFIG.sequence_len))
    factory = mesh_lib.AxesMesh(shape=(1, 1, 1))
    mesh, rules = factory.make(), factory.rules
    with mesh_lib.activate(mesh, rules):
        params = nnx.state(nnx.eval_shape(lambda: GPT(EDIT_CONFIG, rngs=nnx.Rngs(seed))), nnx.Param)
        tx = AdamW(lr=0.01, warmdown_ratio=0.0).build(params, steps)
        init = init_train_state(GPT, EDIT_CONFIG, tx, seed=seed, mesh=mesh, rules=rules)
        step = make_train_step(
            init.graphdef, tx, state_shardings=init.shardings, batch_sharding=mesh_lib.batch_sharding(mesh, rules)
        )
        state = init.state
        for _ in range(steps):
            tokens, mask = next(batches)
            state, metrics = step(state, mesh_lib.shard_batch({"tokens": tokens, "mask": mask}, mesh, rules))
        loss = float(jax.device_get(metrics["loss"]))
    with Checkpointer(directory) as ckpt:
        ckpt.save(steps, state, meta=make_meta(config=EDIT_GIN.format(tag="edit"), tokenizer="test", data_spec="edit"))
        ckpt.wait()
    return loss


@pytest.fixture(scope="module")
def edit_checkpoint(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("edit_model") / "checkpoints"
    assert train_edit_model(directory) < 0.2
    return directory


def agent_setup(tmp_path: Path, tag: str = "agent") -> tuple[Path, Path]:
    """(gin file, workspace directory with hello.py) for a test; the tokenizer goes into the test's workspace."""
    small_tokenizer().save(Workspace(tag).tokenizer_dir)
    gin_file = tmp_path / "agent.gin"
    gin_file.write_text(textwrap.dedent(EDIT_GIN.format(tag=tag)))
    root = tmp_path / "project"
    root.mkdir()
    (root / "hello.py").write_text(ORIGINAL)
    return gin_file, root


def agent_argv(gin_file: Path, root: Path, checkpoint: Path, transcript: Path, *extra: str) -> list[str]:
    return [
        "agent", "--gin_file", str(gin_file), "--checkpoint", str(checkpoint), "--workspace", str(root),
        "--temperature", "0", "--max_new_tokens", "64", "--transcript", str(transcript), *extra,
    ]  # fmt: skip


def read_transcript(path: Path) -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ in process
@pytest.mark.slow
def test_one_request_with_y_and_n_answers(tmp_path, gin_clean, edit_checkpoint, monkeypatch, capsys):
    gin_file, root = agent_setup(tmp_path)
    for answer, expected in (("n", ORIGINAL), ("y", ORIGINAL.replace("helo", "hello"))):
        transcript = tmp_path / f"{answer}.jsonl"
        monkeypatch.setattr("sys.stdin", io.StringIO(f"{answer}\n"))
        argv = agent_argv(gin_file, root, edit_checkpoint, transcript, "--prompt", REQUEST)
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "-> Edit(file_path='hello.py', old_string='helo', new_string='hello')" in out
        assert "allow Edit: edit hello.py:" in out and "[y/n]" in out
        assert (root / "hello.py").read_text() == expected
        (messages,) = read_transcript(transcript)
        assert messages[0]["content"] == system_prompt() and messages[1] == {"role": "user", "content": REQUEST}
        assert messages[2]["tool_call"] == CALL
        if answer == "n":
            assert messages[3:] == [{"role": "tool_result", "content": "rejected by user"}]
            assert "the call was not run; back to you" in out
        else:
            assert messages[3]["content"].startswith("hello.py\n") and messages[4]["content"] == FINAL
            assert FINAL in out


# ------------------------------------------------------------------------------------------------ in tmux
class Tmux:
    """A private tmux server (its own socket) running one command in a pane we type into and read."""

    def __init__(self, socket: str):
        self.socket = socket

    def tmux(self, *args: str) -> str:
        cmd = ["tmux", "-L", self.socket, "-f", "/dev/null", *args]
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

    def start(self, argv: list[str]) -> None:
        # the pane stays after the command ends and shows its exit status
        self.tmux(
            "new-session", "-d", "-s", "t", "-x", "200", "-y", "50", f'{shlex.join(argv)}; echo "[exit $?]"; sleep 600'
        )

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "t", "-l", text)
        self.tmux("send-keys", "-t", "t", "Enter")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-t", "t", "-S", "-2000")

    def wait_for(self, what: str, predicate, timeout_s: float = 240.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline or "[exit " in screen:
                raise AssertionError(f"waiting for {what}; the terminal shows:\n{screen}")
            time.sleep(0.3)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def at_prompt(count: int):
    """The pane shows the input prompt for the count-th time (capture-pane drops the trailing space)."""
    return lambda screen: screen.rstrip().endswith("\n>") and screen.count("\n>") >= count


def asking(count: int):
    return lambda screen: screen.rstrip().endswith("[y/n]") and screen.count("[y/n]") >= count


@pytest.fixture
def tmux():
    if shutil.which("tmux") is None:
        installed = subprocess.run(["apt-get", "install", "-y", "tmux"], capture_output=True)
        if installed.returncode != 0 or shutil.which("tmux") is None:
            pytest.skip("tmux is not installed and `apt-get install -y tmux` failed (needs root and a package mirror)")
    session = Tmux(f"nanocode-test-{os.getpid()}-{time.monotonic_ns()}")
    yield session
    session.close()


@pytest.mark.slow
def test_agent_in_a_real_terminal_edits_after_y_and_not_after_n(tmp_path, edit_checkpoint, tmux):
    gin_file, root = agent_setup(tmp_path)
    transcript = tmp_path / "transcript.jsonl"
    argv = [sys.executable, "-m", "nanocode.cli.main", *agent_argv(gin_file, root, edit_checkpoint, transcript)]
    tmux.start(["env", f"NANOCODE_BASE_DIR={os.environ['NANOCODE_BASE_DIR']}", *argv])
    screen = tmux.wait_for("the first prompt", at_prompt(1))
    assert "nanocode agent:" in screen and "Edit and Bash ask first" in screen

    tmux.type(REQUEST)
    screen = tmux.wait_for("the approval question", asking(1))
    assert "-> Edit(file_path='hello.py', old_string='helo', new_string='hello')" in screen
    assert "--- old\nhelo\n+++ new\nhello" in screen
    tmux.type("n")
    screen = tmux.wait_for("the turn back after n", at_prompt(2))
    assert "rejected by user" in screen
    assert (root / "hello.py").read_text() == ORIGINAL  # untouched

    tmux.type("/clear")
    tmux.wait_for("a new conversation", at_prompt(3))
    tmux.type(REQUEST)
    tmux.wait_for("the second approval question", asking(2))
    tmux.type("y")
    screen = tmux.wait_for("the end of the turn after y", at_prompt(4))
    assert (root / "hello.py").read_text() == "print('hello, world')\n"  # edited
    assert "1→print('hello, world')" in screen and FINAL in screen.split("[y/n]")[-1]

    tmux.type("/quit")
    tmux.wait_for("the agent to exit", lambda s: "[exit 0]" in s, timeout_s=60)
    refused, done = read_transcript(transcript)
    assert refused[-1] == {"role": "tool_result", "content": "rejected by user"}
    assert [m["role"] for m in done] == ["system", "user", "assistant", "tool_result", "assistant"]
    assert done[2]["tool_call"] == CALL and done[4]["content"] == FINAL


# ------------------------------------------------------------------------------------------------ the loop itself
def make_loop(model, codec, root: Path, answers: list[bool] | None = None, **kw) -> tuple[AgentLoop, io.StringIO]:
    out = io.StringIO()
    asked = iter(answers or [])
    session = AgentSession(Engine(model, max_len=1024), codec, sampling=kw.pop("sampling", GREEDY), max_new_tokens=40)
    sandbox = Sandbox(root)
    loop = AgentLoop(session, sandbox, permissions=Permissions(lambda prompt: next(asked)), out=out, **kw)
    return loop, out


@pytest.fixture
def codec():
    return ConversationCodec(small_tokenizer())


def test_loop_answers_bad_calls_and_keeps_its_step_budget(tmp_path, codec):
    for chain, first_result in (
        (render_call(codec, "Dig", file_path="q.md"), "error: unknown tool 'Dig' (tools: Read, Edit, Grep, Bash)"),
        (render_call(codec, "Read", file="q.md"), "error: unknown argument 'file' for Read"),
        (malformed_chain(codec), "error: argument 'x' has no <|tool_val|>"),
    ):
        loop, out = make_loop(
            scripted_model(chain, WIDE), codec, tmp_path, max_steps=3, transcript=tmp_path / "t.jsonl"
        )
        outcome = loop.run_turn("go")
        assert (outcome.steps, outcome.stop) == (3, "budget")
        results = [m["content"] for m in loop.history if m["role"] == "tool_result"]
        assert len(results) == 3 and all(r.startswith(first_result) for r in results[:2]), results
        if "tool_call" in loop.history[-2]:  # a call on the last reply is not run (a malformed one has its reason)
            assert results[2] == "error: step budget of 3 replies reached; the call was not run"
        assert "[step budget reached: 3 model replies this turn; back to you]" in out.getvalue()
        assert read_transcript(tmp_path / "t.jsonl") == [loop.history]
        # the session saw every result, in order, and the conversation goes on
        assert [m["role"] for m in loop.session.messages] == ["user"] + ["assistant", "tool_result"] * 3
        assert loop.run_turn("again").stop == "budget"


def test_loop_never_dies_on_babble_and_saves_every_conversation(tmp_path, codec):
    """A sampled model that strings tool-call syntax together at random, random y/n answers, several turns."""
    answers = [bool(b) for b in np.random.default_rng(0).integers(0, 2, 200)]
    loop, out = make_loop(
        babbling_model(codec), codec, tmp_path, answers, max_steps=4, transcript=tmp_path / "t.jsonl",
        sampling=SamplingParams(1.0, seed=1),
    )  # fmt: skip
    stops = []
    for turn in range(6):
        if turn == 3:
            loop.clear()
        outcome = loop.run_turn(f"request {turn}")
        assert 1 <= outcome.steps <= 4 and outcome.stop in ("end_turn", "rejected", "budget")
        stops.append(outcome.stop)
    conversations = read_transcript(tmp_path / "t.jsonl")
    assert len(conversations) == 2 and conversations[1] == loop.history
    for messages in conversations:
        for prev, message in zip(messages, messages[1:]):
            if message["role"] == "tool_result":  # every result answers a call, well-formed or not
                assert prev["role"] == "assistant" and ("tool_call" in prev or "tool_call_error" in prev)
    assert sum(m["role"] == "tool_result" for c in conversations for m in c) > 0


def test_loop_reports_a_message_too_long_for_the_context(tmp_path, codec):
    loop, out = make_loop(scripted_model(text_chain(codec), WIDE), codec, tmp_path)
    assert loop.run_turn("word " * 1000).stop == "context_full"
    assert "[message too long:" in out.getvalue() and len(loop.history) == 1 and loop.session.messages == []
    assert loop.run_turn("hi") == TurnOutcome(1, 0, "end_turn")
    assert loop.history[-1] == {"role": "assistant", "content": "hi there"}
