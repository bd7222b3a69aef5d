"""The RL stage on a tiny model: the GRPO loss and gradient against a hand computation on a fixed batch, the engine
taking new weights without recompiling, episode rows whose mask covers exactly the model's own tokens, a toy task
whose reward rises, `nanocode rl` on real repo tasks in sandboxes, a resumed run that continues exactly as the
straight one, and a plugin objective chosen by name in gin."""

from __future__ import annotations

import dataclasses
import itertools
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nanocode.agents.chat_session import stop_ids
from nanocode.agents.rl import RLTraining, episode_batch
from nanocode.agents.rl_episodes import sample_episodes
from nanocode.agents.tasks import AnswerCheck, RepoTasks, Script, Task
from nanocode.agents.tools import build_tools
from nanocode.align.objectives.grpo import GRPO, group_advantages
from nanocode.cli.main import main
from nanocode.core.interfaces import RLObjective
from nanocode.core.kinds import RL_OBJECTIVES
from nanocode.core.workspace import Workspace
from nanocode.data.conversation import ConversationCodec
from nanocode.models.engine import Engine
from nanocode.models.gpt import GPT
from nanocode.registry import load_builtins
from nanocode.train.rl_step import RLLoss
from nanocode.train.state import split_model
from tests.helpers import experiment_gin, load_experiment, small_tokenizer
from tests.test_sft_train import TINY, TINY_GIN, Stop, last_per_step, save_stage_checkpoint, write_experiment

load_builtins()


# ------------------------------------------------------------------------------------------------ the loss
def test_group_advantages_by_hand():
    rewards = np.array([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(
        group_advantages(rewards), [[0.5, -0.5, -0.5, 0.5], [0, 0, 0, 0], [0.75, -0.25, -0.25, -0.25]]
    )
    scaled = group_advantages(rewards, scale_by_std=True, eps=1e-4)
    np.testing.assert_allclose(scaled[0], np.array([0.5, -0.5, -0.5, 0.5]) / (0.5 + 1e-4), rtol=1e-6)
    np.testing.assert_allclose(scaled[2], np.array([0.75, -0.25, -0.25, -0.25]) / (np.sqrt(3) / 4 + 1e-4), rtol=1e-6)
    assert RL_OBJECTIVES.get("grpo") is GRPO


def fixed_batch():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, TINY.vocab_size, (4, 13)).astype(np.int32)
    mask = np.zeros((4, 13), np.int32)
    mask[0, 5:9] = 1
    mask[1, 3:13] = 1
    mask[2, 7:8] = 1
    mask[3, 2:6] = 1
    mask[3, 9:12] = 1
    return {"tokens": tokens, "mask": mask, "advantages": np.array([0.5, -0.5, 1.25, -1.25], np.float32)}


def hand_loss(model, ref_model, batch, kl_coef):
    """The GRPO loss written out: per target token t of row i whose mask[i, t+1] is 1, -A_i log pi(x_t+1 | x<=t) +
    kl_coef * (exp(ref - logp) - (ref - logp) - 1); the mean over all those tokens of the batch."""
    tokens, mask, adv = batch["tokens"], batch["mask"], batch["advantages"]

    def logps(m):
        logits = m(jnp.asarray(tokens[:, :-1])).astype(jnp.float32)
        logp = logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)
        return jnp.take_along_axis(logp, jnp.asarray(tokens[:, 1:])[..., None], axis=-1)[..., 0]

    lp, ref = logps(model), jax.lax.stop_gradient(logps(ref_model))
    kl = jnp.exp(ref - lp) - (ref - lp) - 1.0
    valid = jnp.asarray(mask[:, 1:], jnp.float32)
    per_token = -jnp.asarray(adv)[:, None] * lp + kl_coef * kl
    return jnp.sum(per_token * valid) / jnp.sum(valid), jnp.sum(kl * valid) / jnp.sum(valid)


@pytest.mark.parametrize("accum_steps", [1, 2])
def test_policy_gradient_loss_and_gradient_equal_a_hand_computation(accum_steps):
    graphdef, params, rest = split_model(GPT(TINY, rngs=nnx.Rngs(0)))
    # a reference well away from the policy (two fresh inits both predict nearly uniformly: their KL is ~1e-5)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    ref_params = jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    batch = fixed_batch()
    objective = GRPO(kl_coef=0.1)
    loss = RLLoss(graphdef, objective, accum_steps=accum_steps)
    grads, loss_sum, sums = jax.jit(loss.accumulate)(params, rest, ref_params, batch)
    n = float(batch["mask"][:, 1:].sum())
    assert float(sums["tokens"]) == n

    def hand(p):
        return hand_loss(nnx.merge(graphdef, p, rest), nnx.merge(graphdef, ref_params, rest), batch, 0.1)

    (want, want_kl), want_grads = jax.value_and_grad(hand, has_aux=True)(params)
    np.testing.assert_allclose(float(loss_sum) / n, float(want), rtol=1e-5)
    np.testing.assert_allclose(float(sums["kl"]) / n, float(want_kl), rtol=1e-5)
    assert float(want_kl) > 0.01  # the penalty is live
    chex.assert_trees_all_close(jax.tree.map(lambda g: g / n, grads), want_grads, rtol=2e-4, atol=1e-7)


def test_no_reference_without_a_kl_penalty_and_kl_tracked_without_one():
    graphdef, params, rest = split_model(GPT(TINY, rngs=nnx.Rngs(0)))
    batch = fixed_batch()
    _, loss_sum, sums = jax.jit(RLLoss(graphdef, GRPO()).accumulate)(params, rest, None, batch)
    assert "kl" not in sums and not GRPO().needs_reference and GRPO(kl_coef=0.1).needs_reference
    want, _ = hand_loss(nnx.merge(graphdef, params, rest), nnx.merge(graphdef, params, rest), batch, 0.0)
    np.testing.assert_allclose(float(loss_sum) / float(sums["tokens"]), float(want), rtol=1e-5)
    # track_kl: the KL to a reference is measured, not penalised
    _, ref_params, _ = split_model(GPT(TINY, rngs=nnx.Rngs(1)))
    tracked = GRPO(track_kl=True)
    assert tracked.needs_reference
    _, loss_sum, sums = jax.jit(RLLoss(graphdef, tracked).accumulate)(params, rest, ref_params, batch)
    want, want_kl = hand_loss(nnx.merge(graphdef, params, rest), nnx.merge(graphdef, ref_params, rest), batch, 0.0)
    np.testing.assert_allclose(float(loss_sum) / float(sums["tokens"]), float(want), rtol=1e-5)
    np.testing.assert_allclose(float(sums["kl"]) / float(sums["tokens"]), float(want_kl), rtol=1e-3)


# ------------------------------------------------------------------------------------------------ the episodes
def test_engine_load_weights_decodes_as_a_fresh_engine_without_recompiling():
    first, second = GPT(TINY, rngs=nnx.Rngs(0)), GPT(TINY, rngs=nnx.Rngs(5))

    def greedy(engine):
        return [c[0] for c in engine.generate(engine.new_cache(1), [[1, 2, 3, 4]], max_new_tokens=10)]

    engine = Engine(first)
    assert greedy(engine) == greedy(Engine(first))
    traces = engine.traces
    engine.load_weights(second)
    assert greedy(engine) == greedy(Engine(second)) != greedy(Engine(first))
    assert engine.traces == traces
    with pytest.raises(ValueError, match="differ in structure or shape"):
        engine.load_weights(GPT(dataclasses.replace(TINY, n_embd=32), rngs=nnx.Rngs(0)))


def test_episode_rows_mask_exactly_the_models_sampled_tokens():
    tokenizer = small_tokenizer()
    codec = ConversationCodec(tokenizer)
    engine = Engine(GPT(dataclasses.replace(TINY, sequence_len=256), rngs=nnx.Rngs(0)))
    tasks = RepoTasks(seed=3, kinds=["locate"]).tasks(2)
    rollouts = sample_episodes(
        engine, codec, tasks, samples=2, tools=build_tools(), system="", max_steps=2, max_new_tokens=12,
        isolate=False, timeout_s=10,
    )  # fmt: skip
    assert [(r.task.id, r.sample) for r in rollouts] == [(t.id, g) for t in tasks for g in range(2)]
    assert rollouts[0].tokens != rollouts[1].tokens  # each sample draws from its own seed
    stoppers = set(stop_ids(codec))
    for r in rollouts:
        prompt = codec.render_prompt([{"role": "user", "content": r.task.request}])
        assert r.tokens[: len(prompt)] == prompt and not any(r.mask[: len(prompt)])
        assert len(r.tokens) == len(r.mask) and 1 <= r.steps <= 2 and r.reward == 0.0
        # one run of sampled tokens per reply, each ended by a turn stopper or the token budget, then what the
        # harness wrote (masked): <|assistant_end|> unless the model sampled it, a tool result, <|assistant_start|>
        runs = [list(g) for m, g in itertools.groupby(zip(r.tokens, r.mask), key=lambda x: x[1]) if m]
        assert len(runs) == r.steps
        at = len(prompt)
        for run in runs:
            ids = [t for t, _ in run]
            assert r.tokens[at : at + len(ids)] == ids and all(r.mask[at : at + len(ids)])
            assert ids[-1] in stoppers or len(ids) == 12
            at += len(ids)
            if at < len(r.tokens):
                harness = r.tokens[at:]
                if ids[-1] != codec.ids["assistant_end"]:
                    assert harness[0] == codec.ids["assistant_end"]
                    harness = harness[1:]
                if harness:
                    assert harness[0] == codec.ids["tool_result_start"]
                    end = harness.index(codec.ids["tool_result_end"])
                    assert harness[end + 1] == codec.ids["assistant_start"]
                    at = len(r.tokens) - len(harness) + end + 2
    batch = episode_batch(rollouts, np.array([1.0, -1.0, 0.5, -0.5]), max_len=256)
    assert batch["tokens"].shape == batch["mask"].shape and batch["tokens"].shape[1] - 1 in (64, 128, 256)
    assert batch["mask"].sum() == sum(sum(r.mask) for r in rollouts)


# ------------------------------------------------------------------------------------------------ the stage
class DigitTasks:
    """The toy task: one request, rewarded by the share of digits in what the model answers."""

    seed = 0

    def task(self, index: int) -> Task:
        return Task(
            id=f"digits-{index}",
            kind="toy",
            template="toy:digits",
            repo="digits",
            files={"README.md": "toy\n"},
            request="Reply with a number.",
            check=AnswerCheck("README.md", 1),
            solution=Script((), "42"),
        )


def digit_share(task, messages, sandbox) -> float:
    text = "".join(m.get("content") or "" for m in messages if m["role"] == "assistant")
    return sum(c.isdigit() for c in text) / max(len(text), 1)


def rl_lines(tag: str, *extra: str) -> list[str]:
    return [
        *experiment_gin("base/model/d3.gin", "base/mesh/cpu.gin", "base/rl/grpo.gin", keep=("rl",)),
        *TINY_GIN,
        f"Experiment.tag = '{tag}'",
        "RLTraining.optimizer = @rl/adamw()",
        "rl/adamw.lr = 0.01",
        "rl/adamw.warmdown_ratio = 0.0",
        "RLTraining.init_from = 'sft'",
        "RLTraining.batch_size = 8",
        "RLTraining.micro_batch_size = 4",
        "RLTraining.samples_per_task = 4",
        "RLTraining.num_steps = 4",
        "RLTraining.max_steps = 2",
        "RLTraining.max_new_tokens = 12",
        "RLTraining.isolate = False",
        "RLTraining.checkpoint_every = 2",
        "RLTraining.sample_every = 2",
        "RLTraining.peak_flops = 1e12",
        *extra,
    ]


def rl_stage(tmp_path, tag: str, *extra: str, **replace) -> RLTraining:
    save_stage_checkpoint(tag, "sft")
    stage = load_experiment([write_experiment(tmp_path / f"{tag}.gin", rl_lines(tag, *extra))]).rl
    return dataclasses.replace(stage, **replace) if replace else stage


@pytest.mark.slow
def test_rl_raises_the_reward_on_a_toy_task(tmp_path, gin_clean):
    stage = rl_stage(tmp_path, "toy", "RLTraining.num_steps = 30", tasks=DigitTasks(), reward=digit_share)
    stage.run(Workspace("toy"), progress=False)
    rewards = last_per_step("toy", "rl", "reward")
    assert sorted(rewards) == list(range(1, 31))
    first, last = np.mean([rewards[s] for s in range(1, 6)]), np.mean([rewards[s] for s in range(26, 31)])
    assert last > 2 * first + 0.05, rewards
    records = [json.loads(x) for x in (Workspace("toy").run_dir("rl") / "metrics.jsonl").read_text().splitlines()]
    last_record = [r for r in records if r.get("step") == 30][-1]
    for key in ("success", "mean_steps", "entropy", "loss", "grad_norm", "groups_with_signal", "episodes_per_s"):
        assert np.isfinite(last_record[key]), key


def test_rl_resumes_exactly_after_an_interruption(tmp_path, gin_clean):
    stage = rl_stage(tmp_path, "straight", tasks=DigitTasks(), reward=digit_share)
    stage.run(Workspace("straight"), progress=False)

    def stop(step):
        raise Stop

    stage = rl_stage(tmp_path, "resumed", tasks=DigitTasks(), reward=digit_share)
    with pytest.raises(Stop):
        stage.run(Workspace("resumed"), progress=False, on_checkpoint=stop)
    assert sorted(last_per_step("resumed", "rl", "reward")) == [1, 2]
    stage.run(Workspace("resumed"), resume=True, progress=False)
    # the same tasks, seeds and parameters after the resume: the same episodes, rewards and losses
    for key in ("reward", "loss", "entropy"):
        assert last_per_step("resumed", "rl", key) == last_per_step("straight", "rl", key), key


def test_nanocode_rl_runs_repo_tasks_in_sandboxes(tmp_path, gin_clean, capsys):
    save_stage_checkpoint("cli", "sft")
    extra = ["RLTraining.sequence_len = 256", "RLTraining.num_steps = 2", "rl/repo_tasks.kinds = ['locate']"]
    gin_file = write_experiment(tmp_path / "cli.gin", rl_lines("cli", *extra))
    assert main(["rl", "--gin_file", gin_file, "--quiet"]) == 0, capsys.readouterr().err[-2000:]
    run_dir = Workspace("cli").run_dir("rl")
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(r["reward"] == 0.0 for r in steps)  # a random model
    samples = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["template"] == "locate:definition" for s in samples)
    assert (Workspace("cli").checkpoint_dir("rl") / "2").is_dir()


def test_rl_settings_are_checked_in_one_line(tmp_path, gin_clean):
    from nanocode.core.errors import ConfigError

    for binding, message in [
        ("RLTraining.samples_per_task = 3", "samples_per_task = 3: must be >= 2"),
        ("RLTraining.num_steps = -1", "num_steps = -1: an RL run has no data"),
        ("RLTraining.objective = @ipo()", "objective: expected an RLObjective"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_experiment([write_experiment(tmp_path / "bad.gin", rl_lines("bad", binding))])


class SignOnly(RLObjective):
    """A plugin objective: the sign of each advantage (a REINFORCE variant), registered by name and chosen in gin."""

    def advantages(self, rewards):
        return np.sign(group_advantages(rewards))

    def __call__(self, batch):
        return -batch.advantages[:, None] * batch.logps, {}


def test_a_plugin_rl_objective_trains_by_name_from_gin(tmp_path, gin_clean):
    with RL_OBJECTIVES.temporary("sign_only", SignOnly):
        stage = rl_stage(
            tmp_path, "plugin", "RLTraining.objective = @sign_only()", "RLTraining.num_steps = 2",
            tasks=DigitTasks(), reward=digit_share,
        )  # fmt: skip
        assert type(stage.objective) is SignOnly
        stage.run(Workspace("plugin"), progress=False)
    assert sorted(last_per_step("plugin", "rl", "loss")) == [1, 2]
    assert "RLTraining.objective = @sign_only()" in (Workspace("plugin").run_dir("rl") / "config.gin").read_text()
