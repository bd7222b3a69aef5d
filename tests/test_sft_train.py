"""Agentic SFT on a tiny model (2 layers, width 64, 512-id BPE, 64 tokens): the masked loss is the exact per-token
mean over micro-batches (an all-padding one included), the run learns, logs, evaluates (val bpb, tool-call
validity), samples, checkpoints, and resumes to exactly the straight run. Conversations are written by the test.
"""

import json
from pathlib import Path

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nanocode.cli.main import main
from nanocode.core import mesh as mesh_lib
from nanocode.core.checkpoint import Checkpointer
from nanocode.core.workspace import Workspace
from nanocode.data.conversation import ConversationCodec
from nanocode.data.sft import SFTPacker
from nanocode.models.gpt import GPT, GPTConfig
from nanocode.optim.adamw import AdamW
from nanocode.train.finetune import (
    first_system_prompt,
    has_valid_tool_call,
    names_requested_file,
    with_system_prompt,
)
from nanocode.train.sft import tool_prompts
from nanocode.train.state import init_train_state
from nanocode.train.step import make_train_step
from tests.helpers import experiment_gin, load_experiment, small_tokenizer

TINY = GPTConfig(sequence_len=64, vocab_size=512, n_layer=2, n_head=2, n_kv_head=2, n_embd=64)
TINY_GIN = [
    "GPTConfig.n_layer = 2",
    "GPTConfig.n_embd = 64",
    "GPTConfig.n_head = 2",
    "GPTConfig.n_kv_head = 2",
    "GPTConfig.sequence_len = 64",
    "GPTConfig.vocab_size = 512",
    "Experiment.system_prompt = ''",  # a 64-token context: train on the conversations as they are
]
NAMES = ["hello", "utils", "main", "app", "core", "test", "data", "model", "train", "io"]


# ------------------------------------------------------------------------------------------------ shared helpers
def tool_call(i: int) -> tuple[str, dict]:
    """The i-th request and the tool call that answers it (Read / Grep / Bash, cycling)."""
    name = NAMES[i % len(NAMES)]
    kind = (i // len(NAMES)) % 3
    if kind == 0:
        return f"Read {name}.py", {"name": "Read", "args": {"file_path": f"{name}.py"}}
    if kind == 1:
        return f"Find {name}", {"name": "Grep", "args": {"pattern": name}}
    return f"Run {name}.py", {"name": "Bash", "args": {"command": f"python {name}.py"}}


def conversation(i: int) -> dict:
    request, call = tool_call(i)
    return {
        "messages": [
            {"role": "user", "content": request},
            {"role": "assistant", "content": "", "tool_call": call},
            {"role": "tool_result", "content": "ok"},
            {"role": "assistant", "content": "Done."},
        ]
    }


def write_jsonl(path: Path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def save_stage_checkpoint(tag: str, stage: str, seed: int = 0) -> None:
    """The tokenizer and a checkpoint of freshly initialised tiny-model parameters, as a finished `stage` leaves."""
    ws = Workspace(tag)
    small_tokenizer().save(ws.tokenizer_dir)
    factory = mesh_lib.AxesMesh(shape=(1, 1, 1))
    mesh, rules = factory.make(), factory.rules
    with mesh_lib.activate(mesh, rules):
        params = nnx.state(nnx.eval_shape(lambda: GPT(TINY, rngs=nnx.Rngs(seed))), nnx.Param)
        tx = AdamW().build(params, 10)
        init = init_train_state(GPT, TINY, tx, seed=seed, mesh=mesh, rules=rules)
        with Checkpointer(ws.checkpoint_dir(stage)) as ckpt:
            ckpt.save(7, init.state, data={}, meta={"config": "", "tokenizer": "", "data_spec": ""})
            ckpt.wait()


def write_experiment(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def last_per_step(tag: str, stage: str, key: str) -> dict[int, float]:
    out = {}
    for line in (Workspace(tag).run_dir(stage) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if key in record:
            out[record["step"]] = record[key]
    return out


class Stop(Exception):
    pass


# ------------------------------------------------------------------------------------------------ the SFT experiment
def sft_lines(tmp_path: Path, tag: str, *extra: str) -> list[str]:
    train = write_jsonl(tmp_path / "sft_train.jsonl", [conversation(i) for i in range(60)])
    test = write_jsonl(tmp_path / "sft_test.jsonl", [conversation(i) for i in range(60, 72)])
    return [
        *experiment_gin("base/model/d3.gin", "base/mesh/cpu.gin", "base/sft/embedded.gin", keep=("sft",)),
        *TINY_GIN,
        f"Experiment.tag = '{tag}'",
        f"sft_data/jsonl_conversations.train = '{train}'",
        f"sft_data/jsonl_conversations.test = '{test}'",
        "SFTTraining.optimizer = @sft/adamw()",
        "sft/adamw.lr = 0.01",
        "SFTTraining.batch_size = 4",
        "SFTTraining.micro_batch_size = 2",
        "SFTTraining.num_steps = 8",
        "SFTTraining.eval_every = 4",
        "SFTTraining.eval_batches = 2",
        "SFTTraining.sample_every = 0",
        "SFTTraining.sample_tokens = 12",
        "SFTTraining.tool_eval_prompts = 4",
        "SFTTraining.checkpoint_every = 4",
        "SFTTraining.peak_flops = 1e12",
        *extra,
    ]


def sft_experiment(tmp_path: Path, tag: str, *extra: str):
    return load_experiment([write_experiment(tmp_path / f"{tag}.gin", sft_lines(tmp_path, tag, *extra))]).sft


@pytest.fixture
def clean_gin():
    yield
    gin.clear_config()


# ------------------------------------------------------------------------------------------------ tests
def test_masked_mean_is_exact_over_micro_batches_with_an_all_padding_one():
    """The SFT loss is the per-token mean over every valid target of the batch (numpy, float64), whatever the
    micro-batching; a micro-batch with no valid token adds nothing and a batch without any gives 0, not NaN."""
    codec = ConversationCodec(small_tokenizer())
    convs = [conversation(i)["messages"] for i in range(20)]
    tokens, mask = next(iter(SFTPacker(convs, codec, batch_size=8, seq_len=TINY.sequence_len)))
    tokens, mask = tokens.copy(), mask.copy()
    mask[[3, 7]] = 0  # micro-batch 3 of 4 (strided: rows 3 and 7) is padding only
    assert mask.sum() > 0

    factory = mesh_lib.AxesMesh(shape=(1, 1, 1))
    mesh, rules = factory.make(), factory.rules
    with mesh_lib.activate(mesh, rules):
        params = nnx.state(nnx.eval_shape(lambda: GPT(TINY, rngs=nnx.Rngs(0))), nnx.Param)
        tx = AdamW(lr=0.0).build(params, 10)
        init = init_train_state(GPT, TINY, tx, seed=0, mesh=mesh, rules=rules)
        model = nnx.merge(init.graphdef, init.state.params, init.state.rest)
        logits = np.asarray(model(jnp.asarray(tokens[:, :-1])), np.float64)
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        logp -= logits.max(-1, keepdims=True)
        picked = np.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
        valid = mask[:, 1:] != 0
        want = -picked[valid].mean()

        sharding = mesh_lib.batch_sharding(mesh, rules)
        losses = {}
        for accum in (1, 2, 4):
            step = make_train_step(
                init.graphdef, tx, accum_steps=accum, state_shardings=init.shardings, batch_sharding=sharding
            )
            state = jax.tree.map(jnp.copy, init.state)  # the step donates its state
            batch = mesh_lib.shard_batch({"tokens": tokens, "mask": mask}, mesh, rules)
            _, metrics = step(state, batch)
            losses[accum] = float(metrics["loss"])
            assert float(metrics["valid_tokens"]) == valid.sum()
        for accum, loss in losses.items():
            np.testing.assert_allclose(loss, want, rtol=2e-5, err_msg=f"accum_steps={accum}")

        empty = mesh_lib.shard_batch({"tokens": tokens, "mask": np.zeros_like(mask)}, mesh, rules)
        _, metrics = step(jax.tree.map(jnp.copy, init.state), empty)
        assert float(metrics["loss"]) == 0.0 and float(metrics["grad_norm"]) == 0.0


def test_tool_call_validity_needs_a_known_tool_with_its_required_arguments():
    codec = ConversationCodec(small_tokenizer())
    schemas = {"Read": ("file_path",), "Bash": ("command",)}

    def reply(call, text="Let me look."):
        return codec.tok.encode(text) + codec.render_tool_call(call) + [codec.ids["assistant_end"]]

    assert has_valid_tool_call(codec, reply({"name": "Read", "args": {"file_path": "a.py"}}), schemas)
    assert not has_valid_tool_call(codec, reply({"name": "Read", "args": {"path": "a.py"}}), schemas)  # missing
    assert not has_valid_tool_call(codec, reply({"name": "Open", "args": {"file_path": "a.py"}}), schemas)  # unknown
    assert not has_valid_tool_call(codec, codec.tok.encode("no call here"), schemas)
    cut = reply({"name": "Bash", "args": {"command": "ls"}})[:-3]  # no <|tool_call_end|>
    assert not has_valid_tool_call(codec, cut, schemas)
    # held-out prompts stop before the first assistant turn, preferring conversations whose reply calls a tool
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    prompts = tool_prompts([chat, conversation(0)["messages"], conversation(1)["messages"]], limit=5)
    assert prompts == [conversation(0)["messages"][:1], conversation(1)["messages"][:1]]
    assert tool_prompts([chat], limit=5) == [chat[:1]]
    # samples are prompted with the system message the data opens with (nanocode gives every conversation one)
    system = [{"role": "system", "content": "You are nanocode."}, *chat]
    assert first_system_prompt([system, chat]) == "You are nanocode."
    assert first_system_prompt([chat, system]) is None and first_system_prompt([]) is None
    assert (
        with_system_prompt(chat, "S")[0] == {"role": "system", "content": "S"}
        and with_system_prompt(system, "S") == system
    )


def test_a_reply_names_the_requested_file_by_base_name_in_its_call_or_its_text():
    codec = ConversationCodec(small_tokenizer())
    request = "The tests in tests/test_routes.py fail since yesterday; the code is in app/routes.py."

    def reply(path, text="Let me look."):
        return codec.tok.encode(text) + codec.render_tool_call({"name": "Read", "args": {"file_path": path}})

    assert names_requested_file(codec, request, reply("routes.py")) is True
    assert names_requested_file(codec, request, reply("x.py", text="I will run test_routes.py.")) is True
    assert names_requested_file(codec, request, reply("recipes.py")) is False  # a memorised opening
    assert names_requested_file(codec, "where is the cache defined?", reply("routes.py")) is None  # names no file


def test_sft_cli_learns_logs_evaluates_samples_and_checkpoints(tmp_path, clean_gin):
    save_stage_checkpoint("sft_run", "pretrain")
    cadence = ["SFTTraining.num_steps = 48", "SFTTraining.eval_every = 24", "SFTTraining.checkpoint_every = 24"]
    lines = sft_lines(tmp_path, "sft_run", *cadence, "SFTTraining.sample_every = 48", "SFTTraining.sample_tokens = 24")
    gin_file = write_experiment(tmp_path / "run.gin", lines)
    assert main(["sft", "--gin_file", gin_file, "--quiet"]) == 0

    run_dir = Workspace("sft_run").run_dir("sft")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "val_bpb" in r]
    assert [r["step"] for r in steps] == list(range(1, 49))
    for key in ("loss", "grad_norm", "lr", "tok_per_s", "mfu", "valid_tokens"):
        assert all(np.isfinite(r[key]) for r in steps), key
    assert all(0 < r["valid_tokens"] < 4 * 64 for r in steps)  # only assistant tokens train
    losses = [r["loss"] for r in steps]
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4]), losses
    assert [r["step"] for r in evals] == [0, 24, 48]
    assert evals[0]["val_bpb"] > evals[1]["val_bpb"] > evals[2]["val_bpb"]
    # greedy replies to held-out requests: no valid tool call from the start, some after training
    assert all(r["tool_call_prompts"] == 4 for r in evals)
    assert evals[0]["tool_call_valid"] == 0.0 and evals[-1]["tool_call_valid"] >= 0.5, evals
    assert all(0.0 <= r["names_file"] <= 1.0 for r in evals)  # the requests here name their files
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert [s["prompt"] for s in samples] == [
        "Can you fix the bug in hello.py?",
        "Can you implement a MLP layer for me?",
        "Where is the utils.py file located?",
    ]
    assert all(s["step"] == 48 for s in samples)
    assert "SFTTraining.batch_size = 4" in (run_dir / "config.gin").read_text()
    assert Checkpointer(Workspace("sft_run").checkpoint_dir("sft")).steps() == [24, 48]


def test_sft_resume_equals_the_straight_run(tmp_path, clean_gin):
    for tag in ("straight", "resumed"):
        save_stage_checkpoint(tag, "pretrain")
    sft_experiment(tmp_path, "straight", "SFTTraining.num_steps = 6", "SFTTraining.checkpoint_every = 3").run(
        Workspace("straight"), progress=False
    )

    def stop(step):
        raise Stop

    exp = sft_experiment(tmp_path, "resumed", "SFTTraining.num_steps = 6", "SFTTraining.checkpoint_every = 3")
    with pytest.raises(Stop):
        exp.run(Workspace("resumed"), progress=False, on_checkpoint=stop)
    assert sorted(last_per_step("resumed", "sft", "loss")) == [1, 2, 3]
    exp.run(Workspace("resumed"), resume=True, progress=False)

    assert last_per_step("resumed", "sft", "loss") == last_per_step("straight", "sft", "loss")
    a = Checkpointer(Workspace("straight").checkpoint_dir("sft")).restore(6).state
    b = Checkpointer(Workspace("resumed").checkpoint_dir("sft")).restore(6).state
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sft_replies_name_the_file_a_request_worded_unlike_training_names(tmp_path, clean_gin):
    """The conditioning the debug run's SFT model lacks (it cannot copy a name it has never seen, so it answers
    with a memorised opening): after SFT, greedy first replies to requests worded unlike any training request read the file each
    names. A reply that ignores the request names at most one of the ten files. This checks the SFT path (the
    request in context, the loss on the reply alone) on names the tiny model has seen; copying names it has never
    seen takes induction, which the debug-scale runs measure in benchmarks/sft_conditioning_results.md."""

    def read(request: str, name: str) -> dict:
        call = {"name": "Read", "args": {"file_path": f"{name}.py"}}
        return {
            "messages": [{"role": "user", "content": request}, {"role": "assistant", "content": "", "tool_call": call}]
        }

    save_stage_checkpoint("conditioned", "pretrain")
    wordings = ["Read {}.py", "Show me {}.py", "Look at {}.py please", "Can you read {}.py?"]
    train = write_jsonl(tmp_path / "read_train.jsonl", [read(w.format(n), n) for w in wordings for n in NAMES])
    test = write_jsonl(tmp_path / "read_test.jsonl", [read(f"Please open {n}.py now", n) for n in NAMES])
    lines = sft_lines(tmp_path, "conditioned", "SFTTraining.num_steps = 160", "SFTTraining.eval_every = 160")
    lines += [
        f"sft_data/jsonl_conversations.train = '{train}'",  # the later binding wins
        f"sft_data/jsonl_conversations.test = '{test}'",
        f"SFTTraining.tool_eval_prompts = {len(NAMES)}",
        "SFTTraining.sample_tokens = 32",  # room for the whole call
    ]
    assert main(["sft", "--gin_file", write_experiment(tmp_path / "run.gin", lines), "--quiet"]) == 0

    evals = last_per_step("conditioned", "sft", "names_file")
    assert evals[0] <= 0.1 and evals[160] >= 0.8, evals


def test_sft_without_a_pretraining_checkpoint_is_one_line(tmp_path, clean_gin, capsys):
    small_tokenizer().save(Workspace("nockpt").tokenizer_dir)
    gin_file = write_experiment(tmp_path / "run.gin", sft_lines(tmp_path, "nockpt"))
    assert main(["sft", "--gin_file", gin_file, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no complete pretrain checkpoint" in err[0], err
