"""`nanocode chat` end to end: a checkpoint saved as the trainer saves it (8-way sharded train state), loaded onto one
device, one-shot and interactive chats, overflow handling and one-line errors."""

import io
import textwrap

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from nanocode.agents.chat_session import ChatSession
from nanocode.agents.loading import InferenceModel, load
from nanocode.cli.main import main
from nanocode.core import mesh as mesh_lib
from nanocode.core.checkpoint import Checkpointer, make_meta
from nanocode.core.errors import CheckpointError
from nanocode.core.workspace import Workspace
from nanocode.data.conversation import ConversationCodec
from nanocode.models.engine import Engine
from nanocode.models.gpt import GPT, GPTConfig
from nanocode.models.sampling import GREEDY
from nanocode.train.state import init_train_state
from tests.helpers import experiment_gin, small_tokenizer

CONFIG = GPTConfig(sequence_len=128, vocab_size=512, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)
GIN = (
    "\n".join(experiment_gin("base/mesh/cpu.gin"))
    + """
Experiment.system_prompt = ''
GPTConfig.sequence_len = 128
GPTConfig.vocab_size = 512
GPTConfig.n_layer = 2
GPTConfig.n_head = 4
GPTConfig.n_kv_head = 2
GPTConfig.n_embd = 32
Experiment.tag = 'cli'
"""
)


def make_run(tmp_path, stage="sft", step=7):
    """A tokenizer and a checkpoint in the workspace, as tok-train and the trainer write them."""
    workspace = Workspace("cli")
    small_tokenizer().save(workspace.tokenizer_dir)
    factory = mesh_lib.AxesMesh(shape=(1, -1, 1))  # all 8 simulated devices: the params are saved sharded
    mesh = factory.make()
    with mesh_lib.activate(mesh, factory.rules):
        init = init_train_state(GPT, CONFIG, optax.adamw(1e-3), seed=3, mesh=mesh, rules=factory.rules)
        # non-zero output projections, so the replies depend on the whole context
        params = jax.tree.map(
            lambda p: p + 0.3 * jax.random.normal(jax.random.key(1), p.shape, p.dtype), init.state.params
        )
        init.state.params = params
    with Checkpointer(workspace.checkpoint_dir(stage), async_save=False) as ckpt:
        ckpt.save(step, init.state, meta=make_meta(config=GIN, tokenizer="t", data_spec="d"))
        ckpt.wait()
    gin_file = tmp_path / "chat.gin"
    gin_file.write_text(textwrap.dedent(GIN))
    return str(gin_file), init.state.params


def expected_reply(text: str, max_new: int, **kwargs) -> str:
    loaded = load(InferenceModel(model_config=CONFIG), Workspace("cli"), stage="sft")
    session = ChatSession(
        Engine(loaded.model, **kwargs), ConversationCodec(loaded.tokenizer), sampling=GREEDY, max_new_tokens=max_new
    )
    shown: list[str] = []
    session.send(text, on_text=shown.append)
    return "".join(shown)


def test_loaded_parameters_are_the_saved_ones(tmp_path, gin_clean):
    _, saved = make_run(tmp_path)
    loaded = load(InferenceModel(model_config=CONFIG), Workspace("cli"), stage="sft")
    assert loaded.step == 7 and loaded.checkpoint.name == "7"
    got = nnx.state(loaded.model, nnx.Param)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(saved), strict=True):
        assert len(a.sharding.device_set) == 1  # onto one device, whatever mesh it was saved from
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ckpt = Workspace("cli").checkpoint_dir("sft")
    assert load(InferenceModel(model_config=CONFIG), Workspace("cli"), stage="x", checkpoint=ckpt / "7").step == 7
    with pytest.raises(CheckpointError, match="step 99"):
        load(InferenceModel(model_config=CONFIG), Workspace("cli"), stage="sft", step=99)


def test_loading_is_read_only(tmp_path, gin_clean):
    """A chat started while the stage still trains must not touch its checkpoints: a save in flight (orbax's
    temporary directory) survives, and a stage without checkpoints gets no directory created."""
    make_run(tmp_path)
    in_flight = Workspace("cli").checkpoint_dir("sft") / "8.orbax-checkpoint-tmp-1234"
    in_flight.mkdir()
    assert load(InferenceModel(model_config=CONFIG), Workspace("cli"), stage="sft").step == 7
    assert in_flight.is_dir()
    with pytest.raises(CheckpointError, match="no complete align checkpoint"):
        load(InferenceModel(model_config=CONFIG), Workspace("cli"), stage="align")
    assert not Workspace("cli").run_dir("align").exists()


def test_one_shot_prompt(tmp_path, gin_clean, capsys):
    gin_file, _ = make_run(tmp_path)
    argv = ["chat", "--gin_file", gin_file, "--prompt", "hello there", "--temperature", "0", "--max_new_tokens", "8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(expected_reply("hello there", 8))


def test_interactive_chat_commands_and_overflow(tmp_path, gin_clean, capsys, monkeypatch):
    gin_file, _ = make_run(tmp_path)
    lines = ["hello", "/tokens", "/clear", "/help", "/bogus", "", "first question here please"]
    lines += [f"another question number {i} with more words" for i in range(6)]
    lines += ["word " * 200]  # longer than the whole context
    lines += ["still alive?"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))  # then EOF: Ctrl-D
    argv = ["chat", "--gin_file", gin_file, "--temperature", "0", "--max_new_tokens", "8", "--max_len", "64"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "of 64 tokens used" in out and "[new conversation]" in out and "/clear" in out
    assert "unknown command /bogus" in out
    assert "[context full: dropped the" in out
    assert "[message too long" in out
    assert out.count("> ") == len(lines) + 1


def test_without_a_stage_the_latest_stage_is_loaded_and_named(tmp_path, gin_clean, capsys):
    """chat/agent/serve default to the last stage with a checkpoint (align over sft here) and say which they read."""
    gin_file, _ = make_run(tmp_path, stage="sft", step=7)
    make_run(tmp_path, stage="align", step=3)
    assert main(["chat", "--gin_file", gin_file, "--prompt", "hi", "--max_new_tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert "loaded the align checkpoint, step 3" in err
    empty = Workspace("nothing")
    with pytest.raises(CheckpointError, match="no complete checkpoint of any stage"):
        load(InferenceModel(model_config=CONFIG), empty, stage="latest")


def test_missing_checkpoint_is_a_one_line_error(tmp_path, gin_clean, capsys):
    gin_file, _ = make_run(tmp_path)
    assert main(["chat", "--gin_file", gin_file, "--stage", "align", "--prompt", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nanocode chat: error:") and "align" in err and "\n" not in err


def test_a_checkpoint_of_another_model_is_a_one_line_error(tmp_path, gin_clean, capsys):
    gin_file, _ = make_run(tmp_path)
    argv = ["chat", "--gin_file", gin_file, "--gin_param", "GPTConfig.n_embd = 64", "--prompt", "x"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot read the model parameters" in err and "\n" not in err
    assert "the model wants" in err  # refused from the checkpoint's record, before any read starts


def test_the_one_line_is_all_a_real_process_prints(tmp_path, gin_clean):
    """As a user runs it: the wrong-model error is the whole of stderr (orbax's abandoned reads print nothing)."""
    import subprocess
    import sys

    gin_file, _ = make_run(tmp_path)
    argv = ["chat", "--gin_file", gin_file, "--gin_param", "GPTConfig.n_embd = 64", "--prompt", "x"]
    done = subprocess.run(
        [sys.executable, "-m", "nanocode.cli.main", *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2
    err = done.stderr.strip()
    assert "cannot read the model parameters" in err and "\n" not in err, err


def test_bad_sampling_flags_are_refused(tmp_path, gin_clean, capsys):
    gin_file, _ = make_run(tmp_path)
    assert main(["chat", "--gin_file", gin_file, "--temperature", "-1", "--prompt", "x"]) == 2
    assert "temperature" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _quiet_orbax(caplog):
    caplog.set_level("ERROR")
