"""A research fork outside the package (examples/swiglu.py, docs/extending.md) swaps the MLP, registers `gpt_swiglu`,
and a gin experiment selects it by name (Experiment.model): it builds, counts itself from abstract shapes, and trains."""

import jax
import jax.numpy as jnp
from flax import nnx

import nanocode.registry as registry
from nanocode.models import counting
from nanocode.models.gpt import MLP
from tests.helpers import experiment_gin, load_experiment


def test_fork_selected_by_name_from_gin_builds_counts_and_trains(tmp_path, gin_clean):
    gin_file = tmp_path / "fork.gin"
    lines = ["import examples.swiglu", *experiment_gin("base/model/d3.gin", "base/mesh/cpu.gin")]
    lines += ["Experiment.tag = 'fork'", "Experiment.model = 'gpt_swiglu'", "Experiment.system_prompt = ''"]
    lines += [
        "GPTConfig.n_layer = 2",
        "GPTConfig.n_embd = 48",
        "GPTConfig.vocab_size = 64",
        "GPTConfig.sequence_len = 16",
    ]
    gin_file.write_text("\n".join(lines) + "\n")
    experiment = load_experiment([str(gin_file)])
    name, cfg = experiment.model, experiment.model_config
    assert name == "gpt_swiglu" and cfg.n_head == 2  # the rest comes from d3.gin
    model_class = registry.get("model", name)
    model = model_class(cfg, rngs=nnx.Rngs(0))

    from examples.swiglu import SwiGLU

    assert all(isinstance(b.mlp, SwiGLU) and isinstance(b.mlp, MLP) for b in model.blocks)
    hidden = 2 * 4 * 48 // 3
    assert model.blocks[0].mlp.c_gate.shape == (48, hidden)
    counts = counting.param_counts(cfg, name)  # abstract shapes, through the registry name
    assert counts == model.param_counts()
    assert counts["blocks"] == 2 * (4 * 48 * 48 + 3 * 48 * hidden)
    assert model.flops_per_token() == 6 * (counts["total"] - counts["embedding"]) + 12 * 2 * 48 * 16

    # Two SGD steps on a fixed batch, the way a trainer does it: split once, differentiate the parameter state.
    batch = jax.random.randint(jax.random.key(0), (4, cfg.sequence_len + 1), 0, cfg.vocab_size)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def loss_and_grad(params):
        def loss_fn(params):
            logits = nnx.merge(graphdef, params, rest)(batch[:, :-1])
            targets = batch[:, 1:, None]
            return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, targets, -1)[..., 0])

        return jax.value_and_grad(loss_fn)(params)

    losses = []
    for _ in range(3):
        loss, grads = loss_and_grad(params)
        losses.append(float(loss))
        params = jax.tree.map(lambda p, g: p - 1.0 * g, params, grads)
    assert losses[2] < losses[1] < losses[0], losses
    # the fork's own weights get gradients once the zero-initialised projection has moved
    _, grads = loss_and_grad(params)
    assert float(jnp.sum(jnp.abs(grads["blocks"][0]["mlp"]["c_gate"][...]))) > 0
