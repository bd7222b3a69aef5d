"""Preference optimisation on a tiny model and a synthetic preference set written by the test (chosen = the right
tool call, rejected = a refusal): exact per-sequence log-probs and pair-preserving micro-batches, only the forward
passes an objective declares, accuracy rising while the reference stays frozen, precomputed reference log-probs,
KTO on unpaired data, exact resume, and a plugin objective outside the package trained by name from gin.
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
from nanocode.core.errors import ConfigError
from nanocode.core.kinds import PREFERENCE_OBJECTIVES
from nanocode.core.workspace import Workspace
from nanocode.data.conversation import ConversationCodec
from nanocode.data.preference import Pair, PreferenceBatcher
from nanocode.models.gpt import GPT
from nanocode.optim.adamw import AdamW
from nanocode.registry import load_builtins
from nanocode.train.finetune import restore_params
from nanocode.train.preference_step import (
    PreferenceLoss,
    make_preference_step,
    make_reference_logps,
    pair_micro_batches,
    split_pairs,
)
from nanocode.train.state import init_train_state
from tests.helpers import experiment_gin, load_experiment, small_tokenizer
from tests.test_sft_train import (
    TINY,
    TINY_GIN,
    Stop,
    conversation,
    last_per_step,
    save_stage_checkpoint,
    tool_call,
    write_experiment,
    write_jsonl,
)

load_builtins()


def pair(i: int) -> dict:
    """Chosen: the tool call that answers the request; rejected: a refusal."""
    request, call = tool_call(i)
    prompt = [{"role": "user", "content": request}]
    chosen = prompt + [
        {"role": "assistant", "content": "", "tool_call": call},
        {"role": "tool_result", "content": "ok"},
        {"role": "assistant", "content": "Done."},
    ]
    rejected = prompt + [{"role": "assistant", "content": "I cannot do that."}]
    return {"chosen": {"messages": chosen}, "rejected": {"messages": rejected}}


def align_lines(tmp_path: Path, tag: str, objective: str = "dpo", *extra: str) -> list[str]:
    files = {
        "pref_data/jsonl_preferences.train": write_jsonl(tmp_path / "pairs_train.jsonl", [pair(i) for i in range(40)]),
        "pref_data/jsonl_preferences.test": write_jsonl(
            tmp_path / "pairs_test.jsonl", [pair(i) for i in range(40, 48)]
        ),
        "sft_data/jsonl_conversations.train": write_jsonl(
            tmp_path / "sft_train.jsonl", [conversation(i) for i in range(20)]
        ),
        "sft_data/jsonl_conversations.test": write_jsonl(
            tmp_path / "sft_test.jsonl", [conversation(i) for i in range(60, 72)]
        ),
    }
    objective_file = [f"base/align/{objective}.gin"] if objective else []
    includes = ["base/model/d3.gin", "base/mesh/cpu.gin", "base/align/common.gin", *objective_file]
    return [
        *experiment_gin(*includes, "base/align/embedded.gin", keep=("align",)),
        *TINY_GIN,
        f"Experiment.tag = '{tag}'",
        *[f"{binding} = '{path}'" for binding, path in files.items()],
        "Alignment.optimizer = @align/adamw()",
        "align/adamw.lr = 0.003",
        "Alignment.batch_size = 4",
        "Alignment.micro_batch_size = 2",
        "Alignment.num_steps = 12",
        "Alignment.eval_every = 6",
        "Alignment.eval_batches = 2",
        "Alignment.sample_tokens = 0",
        "Alignment.checkpoint_every = 6",
        "Alignment.peak_flops = 1e12",
        *extra,
    ]


def align_experiment(tmp_path: Path, tag: str, objective: str = "dpo", *extra: str):
    lines = align_lines(tmp_path, tag, objective, *extra)
    return load_experiment([write_experiment(tmp_path / f"{tag}.gin", lines)]).align


def run_align(tmp_path: Path, tag: str, objective: str = "dpo", *extra: str, **kwargs):
    """The finished AlignRun (its loss, reference and init for inspection)."""
    from nanocode.train.align import AlignRun

    save_stage_checkpoint(tag, "sft")
    exp = align_experiment(tmp_path, tag, objective, *extra)
    run = AlignRun(exp, Workspace(tag), resume=False, force=False, progress=False)
    run.run()
    return run


@pytest.fixture
def clean_gin():
    yield
    gin.clear_config()


def tiny_state(seed: int = 0, shape=(1, 1, 1)):
    factory = mesh_lib.AxesMesh(shape=shape)
    mesh, rules = factory.make(), factory.rules
    with mesh_lib.activate(mesh, rules):
        params = nnx.state(nnx.eval_shape(lambda: GPT(TINY, rngs=nnx.Rngs(seed))), nnx.Param)
        tx = AdamW(lr=0.003).build(params, 10)
        return init_train_state(GPT, TINY, tx, seed=seed, mesh=mesh, rules=rules), tx


def numpy_logps(graphdef, params, rest, tokens, mask) -> np.ndarray:
    """Per-row completion log-prob sums in float64, from the model's logits."""
    logits = np.asarray(nnx.merge(graphdef, params, rest)(jnp.asarray(tokens[:, :-1])), np.float64)
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    return np.where(mask[:, 1:] != 0, picked, 0.0).sum(-1)


# ------------------------------------------------------------------------------------------------ the step
def test_pair_micro_batches_keep_pairs_together():
    rows = np.arange(2 * 2 * 4)  # 2 groups of [4 chosen; 4 rejected]
    micro = np.asarray(pair_micro_batches(jnp.asarray(rows), 2, groups=2))
    for m in micro:
        chosen, rejected = (np.asarray(x) for x in split_pairs(jnp.asarray(m), groups=2))
        assert (rejected - chosen == 4).all()  # row r of a group's chosen block pairs with row r + 4
    assert sorted(micro.ravel().tolist()) == rows.tolist()


def test_dpo_loss_is_exact_for_any_micro_batching():
    """Sequence log-probs (fp32 log-softmax summed over completion tokens) and the DPO loss against numpy float64,
    identical for 1, 2 and 4 micro-batches."""
    init, _ = tiny_state(0)
    ref, _ = tiny_state(1)  # another set of weights as the reference, so log-ratios are not zero
    codec = ConversationCodec(small_tokenizer())
    items = [Pair(pair(i)["chosen"]["messages"], pair(i)["rejected"]["messages"]) for i in range(8)]
    batch = next(iter(PreferenceBatcher(items, codec, batch_size=4, seq_len=TINY.sequence_len, cycle=False)))
    g, p, r = init.graphdef, init.state.params, init.state.rest
    policy = numpy_logps(g, p, r, batch["tokens"], batch["mask"])
    reference = numpy_logps(g, ref.state.params, r, batch["tokens"], batch["mask"])
    delta = (policy[:4] - reference[:4]) - (policy[4:] - reference[4:])
    want = np.mean(np.log1p(np.exp(-0.1 * delta)))
    np.testing.assert_allclose(
        np.asarray(make_reference_logps(g)(p, r, batch["tokens"], batch["mask"])), policy, rtol=1e-5
    )
    dpo = PREFERENCE_OBJECTIVES.get("dpo")(beta=0.1)
    for accum in (1, 2, 4):
        loss = PreferenceLoss(g, dpo, accum_steps=accum)
        _, total, sums = jax.jit(lambda b, loss=loss: loss.accumulate(p, r, ref.state.params, b, grad=False))(batch)
        np.testing.assert_allclose(float(total) / 4, want, rtol=1e-5, err_msg=f"accum {accum}")
        np.testing.assert_allclose(float(sums["rewards/accuracy"]) / 4, np.mean(delta > 0))
        np.testing.assert_allclose(float(sums["rewards/margins"]) / 4, 0.1 * delta.mean(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "name, precomputed, want",
    [
        ("dpo", False, {"policy": 1, "reference": 1}),
        ("dpo", True, {"policy": 1}),
        ("simpo", False, {"policy": 1}),
        ("orpo", False, {"policy": 1}),
        ("kto", False, {"policy": 1, "reference": 1, "mismatched_policy": 1, "mismatched_reference": 1}),
    ],
)
def test_step_runs_only_the_forwards_the_objective_declares(name, precomputed, want):
    """Counted in the traced train step (2 micro-batches): a reference-free objective never runs a reference
    forward, precomputed reference log-probs replace it, and only KTO scores mismatched pairs."""
    init, tx = tiny_state(0)
    objective = PREFERENCE_OBJECTIVES.get(name)()
    codec = ConversationCodec(small_tokenizer())
    items = [Pair(pair(i)["chosen"]["messages"], pair(i)["rejected"]["messages"]) for i in range(8)]
    batcher = PreferenceBatcher(items, codec, 4, TINY.sequence_len, paired=objective.paired, cycle=False)
    batch = next(iter(batcher))
    if precomputed:
        batch["ref_logps"] = np.zeros(batch["tokens"].shape[0], np.float32)
    loss = PreferenceLoss(init.graphdef, objective, accum_steps=2, precomputed_reference=precomputed)
    step = make_preference_step(loss, tx)
    needs_params = objective.needs_reference and not precomputed
    step.lower(init.state, init.state.params if needs_params else None, batch)
    assert dict(loss.forwards) == want


def test_sharded_preference_step_matches_one_device():
    """Two DPO steps with 2 micro-batches on a (2, 2, 2) mesh (rows split 4 ways, parameters sharded) give the
    single-device losses and metrics."""
    codec = ConversationCodec(small_tokenizer())
    items = [Pair(pair(i)["chosen"]["messages"], pair(i)["rejected"]["messages"]) for i in range(16)]
    batches = list(PreferenceBatcher(items, codec, 8, TINY.sequence_len, cycle=False))
    dpo = PREFERENCE_OBJECTIVES.get("dpo")(beta=0.1)
    results = {}
    for shape in ((1, 1, 1), (2, 2, 2)):
        init, tx = tiny_state(0, shape)
        mesh, rules = jax.tree.leaves(init.shardings)[0].mesh, mesh_lib.AxesMesh(shape=shape).rules
        with mesh_lib.activate(mesh, rules):
            loss = PreferenceLoss(
                init.graphdef, dpo, accum_steps=2, micro_sharding=mesh_lib.batch_sharding(mesh, rules)
            )
            step = make_preference_step(loss, tx, state_shardings=init.shardings, ref_shardings=init.shardings.params)
            reference = jax.tree.map(jnp.copy, init.state.params)  # the state is donated, the reference is not
            state, out = init.state, []
            for b in batches:
                state, m = step(state, reference, mesh_lib.shard_batch(b, mesh, rules))
                out.append({k: float(v) for k, v in m.items()})
        results[shape] = out
    for one, sharded in zip(results[(1, 1, 1)], results[(2, 2, 2)]):
        for key in ("loss", "rewards/margins", "rewards/accuracy", "grad_norm"):
            np.testing.assert_allclose(sharded[key], one[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert results[(1, 1, 1)][1]["rewards/margins"] > 0  # the second step sees the first one's update


# ------------------------------------------------------------------------------------------------ runs
def test_dpo_accuracy_rises_and_the_reference_stays_frozen(tmp_path, clean_gin):
    run = run_align(tmp_path, "dpo_run", "dpo")
    records = [json.loads(line) for line in (Workspace("dpo_run").run_dir("align") / "metrics.jsonl").open()]
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 13))
    for key in ("loss", "grad_norm", "lr", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracy"):
        assert all(np.isfinite(r[key]) for r in steps), key
    # step 1 is scored with the initial policy, which equals the reference: every pair ties, accuracy 0
    assert steps[0]["rewards/accuracy"] == 0.0 and abs(steps[0]["rewards/margins"]) < 1e-6
    assert np.mean([r["rewards/accuracy"] for r in steps[-3:]]) > 0.5
    assert steps[-1]["rewards/margins"] > 0
    assert steps[-1]["lr"] < steps[0]["lr"]  # nanocode's linear decay
    assert [r["step"] for r in evals] == [0, 6, 12]
    assert evals[0]["val_rewards/accuracy"] == 0.0 and evals[-1]["val_rewards/accuracy"] > 0.5
    assert all(np.isfinite(r["val_bpb"]) for r in evals)
    assert dict(run.loss.forwards) == {"policy": 1, "reference": 1}

    # the reference is the SFT checkpoint, unchanged: same parameters, same log-probs; the policy moved
    sft = restore_params(Workspace("dpo_run").checkpoint_dir("sft") / "7", run.init.state.params)
    for a, b in zip(jax.tree.leaves(run.ref_params), jax.tree.leaves(sft), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    batch = run.val_preference[0]
    logps = make_reference_logps(run.init.graphdef)
    np.testing.assert_array_equal(
        np.asarray(logps(run.ref_params, run.init.state.rest, batch["tokens"], batch["mask"])),
        np.asarray(logps(sft, run.init.state.rest, batch["tokens"], batch["mask"])),
    )
    policy = Checkpointer(Workspace("dpo_run").checkpoint_dir("align")).restore(12).state
    trained = jax.tree.leaves(policy["params"])
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(trained, jax.tree.leaves(sft)))


def test_precomputed_reference_trains_like_the_live_reference(tmp_path, clean_gin):
    short = ("Alignment.num_steps = 3", "Alignment.eval_every = 3", "Alignment.checkpoint_every = 3")
    live = run_align(tmp_path, "live", "dpo", *short)
    assert dict(live.loss.forwards) == {"policy": 1, "reference": 1}
    pre = run_align(tmp_path, "pre", "dpo", *short, "Alignment.precompute_reference = True")
    assert pre.ref_params is None and dict(pre.loss.forwards) == {"policy": 1}
    distinct = {json.dumps(pair(i)) for i in range(48)}  # the synthetic requests repeat after 30
    assert len(pre.table) == 2 * len(distinct)  # every distinct training and held-out row, computed once
    a, b = last_per_step("live", "align", "loss"), last_per_step("pre", "align", "loss")
    assert sorted(a) == sorted(b) == [1, 2, 3]
    np.testing.assert_allclose([b[s] for s in a], [a[s] for s in a], rtol=1e-5)
    va, vb = last_per_step("live", "align", "val_loss"), last_per_step("pre", "align", "val_loss")
    np.testing.assert_allclose([vb[s] for s in va], [va[s] for s in va], rtol=1e-5)


def test_kto_trains_on_unpaired_completions(tmp_path, clean_gin):
    run = run_align(tmp_path, "kto_run", "kto", "Alignment.batch_size = 4", "Alignment.num_steps = 6")
    assert not run.paired and run.ref_params is not None
    losses = last_per_step("kto_run", "align", "loss")
    accuracy = last_per_step("kto_run", "align", "rewards/accuracy")
    assert sorted(losses) == list(range(1, 7)) and all(np.isfinite(v) for v in losses.values())
    assert losses[6] < losses[1]
    assert np.isfinite(last_per_step("kto_run", "align", "val_rewards/accuracy")[6]) and accuracy[6] > 0.5


def test_precompute_is_refused_for_kto_in_one_line(tmp_path, clean_gin):
    with pytest.raises(ConfigError, match=r"^\S*bad.gin: Alignment.precompute_reference: KTO's mismatched-pair KL"):
        align_experiment(tmp_path, "bad", "kto", "Alignment.precompute_reference = True")


@pytest.mark.slow
def test_align_resume_equals_the_straight_run(tmp_path, clean_gin):
    run_align(tmp_path, "a_straight", "ipo")
    save_stage_checkpoint("a_resumed", "sft")

    def stop(step):
        raise Stop

    exp = align_experiment(tmp_path, "a_resumed", "ipo")
    with pytest.raises(Stop):
        exp.run(Workspace("a_resumed"), progress=False, on_checkpoint=stop)
    exp.run(Workspace("a_resumed"), resume=True, progress=False)
    assert last_per_step("a_resumed", "align", "loss") == last_per_step("a_straight", "align", "loss")


# ------------------------------------------------------------------------------------------------ the plugin
def test_plugin_objective_outside_the_package_trains_by_name_from_gin(tmp_path, clean_gin):
    """examples/ln_dpo.py registers `ln_dpo`; a gin file imports it and selects it by name: no nanocode file
    knows about it."""
    save_stage_checkpoint("plugin", "sft")
    lines = align_lines(tmp_path, "plugin", "", "Alignment.num_steps = 2", "Alignment.eval_every = 0")
    lines = ["import examples.ln_dpo", *lines, "Alignment.objective = @ln_dpo()"]
    gin_file = write_experiment(tmp_path / "plugin.gin", lines)
    assert main(["align", "--gin_file", gin_file, "--quiet"]) == 0
    assert PREFERENCE_OBJECTIVES.get("ln_dpo").__module__ == "examples.ln_dpo"
    losses = last_per_step("plugin", "align", "loss")
    assert sorted(losses) == [1, 2] and all(np.isfinite(v) for v in losses.values())
    assert np.isclose(losses[1], np.log(2.0), atol=1e-5)  # policy == reference at step 1: -log sigmoid(0)
    assert "Alignment.objective = @ln_dpo()" in (Workspace("plugin").run_dir("align") / "config.gin").read_text()


@pytest.mark.parametrize("objective, cls, beta", [("ipo", "IPO", 0.5), ("dpo", "DPO", 0.1), ("kto", "KTO", 0.1)])
def test_shipped_gin_files_build_nanocode_settings(objective, cls, beta, clean_gin):
    """Each objective file on top of an experiment: the objective by name, nanocode's DPO optimizer (Muon 5e-5,
    AdamW 0.003 / 0.0001, linear decay to 0), and the SFT files' constant-LR optimizer and nanocode mixture."""
    files = ["experiments/debug_cpu.gin", "experiments/base/sft/nanocode.gin"]
    files += [f"experiments/base/align/{objective}.gin", "experiments/base/align/nanocode.gin"]
    experiment = load_experiment(files, ["SFTTraining.batch_size = 16"])
    align, sft = experiment.align, experiment.sft
    assert type(align.objective).__name__ == cls and align.objective.beta == beta
    opt = align.optimizer
    assert (opt.lr, opt.embedding_lr, opt.head_lr, opt.warmup_ratio, opt.warmdown_ratio, opt.final_lr_frac) == (
        5e-5,
        0.003,
        0.0001,
        0.0,
        1.0,
        0.0,
    )
    assert [float(opt.schedule(10)(s)) for s in (0, 5, 9)] == pytest.approx([1.0, 0.5, 0.1])
    assert align.init_from == "sft" and sft.init_from == "pretrain"
    assert sft.optimizer.warmdown_ratio == 0.0 and list(sft.epochs) == [2, 5]
    assert [d.name for d in sft.datasets] == ["nanocode-tulu-selfoss-evol", "nanocode-long-context"]
