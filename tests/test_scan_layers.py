"""GPTConfig.scan_layers: the scanned model is the unscanned one (logits, loss, gradients, a Muon step, counts), remat
reaches into the scan, it trains on a mesh and from gin, the engine decodes it, and a checkpoint saved in the other
layout is refused in one line (or converted on purpose)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals

from nanocode.core import mesh as mesh_lib
from nanocode.core.checkpoint import Checkpointer
from nanocode.core.errors import CheckpointError, ConfigError
from nanocode.models import counting, scan
from nanocode.models.engine import Engine
from nanocode.models.gpt import GPT, GPTConfig
from nanocode.models.sampling import GREEDY
from nanocode.optim import groups
from nanocode.optim.muon import MuonAdamW
from nanocode.train.loss import loss_sums
from nanocode.train.state import TrainState, init_train_state
from nanocode.train.step import REMAT_POLICIES, accumulate, make_train_step
from tests.test_engine import tiny_model

TINY = GPTConfig(sequence_len=16, vocab_size=128, n_layer=3, n_head=4, n_kv_head=2, n_embd=32)
SCANNED = dataclasses.replace(TINY, scan_layers=True)


def random_model(config: GPTConfig = TINY, seed: int = 0) -> GPT:
    """Every weight random (the zero-initialised projections would make each block the identity)."""
    return tiny_model(config, seed, scale=0.3)


def batch(rows: int = 4, seed: int = 0, config: GPTConfig = TINY) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, config.vocab_size, (rows, config.sequence_len + 1), dtype=np.int32)


def pure(tree) -> dict:
    return jax.tree.map(np.asarray, nnx.to_pure_dict(tree))


def assert_trees_close(a, b, atol: float) -> None:
    paths_a = [p for p, _ in jax.tree_util.tree_leaves_with_path(a)]
    assert paths_a == [p for p, _ in jax.tree_util.tree_leaves_with_path(b)]
    for path, x, y in zip(paths_a, jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=jax.tree_util.keystr(path))


def test_scanned_model_is_the_same_function_with_stacked_weights():
    model = random_model()
    scanned = scan.convert(model, scan_layers=True)
    params = dict(nnx.to_flat_state(nnx.state(scanned, nnx.Param)))
    assert params[("blocks", "attn", "c_q")].shape == (3, 32, 32)
    assert params[("blocks", "attn", "c_q")].get_metadata()["out_sharding"] == ("layers", "embed", "heads")
    assert params[("blocks", "mlp", "c_proj")].get_metadata()["out_sharding"] == ("layers", "mlp", "embed")
    np.testing.assert_array_equal(params[("blocks", "mlp", "c_fc")][...][1], model.blocks[1].mlp.c_fc[...])

    x = jnp.asarray(batch()[:, :-1])
    np.testing.assert_allclose(scanned(x), model(x), atol=1e-5, rtol=0)
    assert scanned.param_counts() == model.param_counts() == counting.param_counts(SCANNED)
    assert scanned.flops_per_token() == model.flops_per_token() == counting.flops_per_token(SCANNED)
    assert_trees_close(pure(nnx.state(scan.convert(scanned, scan_layers=False))), pure(nnx.state(model)), atol=0)

    fresh = GPT(SCANNED, rngs=nnx.Rngs(0)).blocks.attn.c_q[...]  # built scanned: every layer has its own weights
    assert not np.allclose(fresh[0], fresh[1])
    with pytest.raises(ConfigError, match="scan_layers must be True or False"):
        dataclasses.replace(TINY, scan_layers="yes")


def one_step(model: GPT, remat: str | None = None):
    """(metrics, gradients, new params) of one Muon+AdamW train step (fp32 Newton–Schulz) on a fixed batch."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(jnp.copy, params)  # the step donates its state: keep the model's own arrays alive
    tx = MuonAdamW(ns_dtype="float32").build(params, 10)
    tokens = {"tokens": jnp.asarray(batch())}
    grads, _, count = accumulate(graphdef, params, rest, tokens, 1, remat=remat)
    grads = jax.tree.map(lambda g: g / count, grads)
    state = TrainState(params, rest, tx.init(params), jnp.zeros((), jnp.int32), jax.random.key_data(jax.random.key(0)))
    state, metrics = make_train_step(graphdef, tx, remat=remat)(state, tokens)
    return {k: float(v) for k, v in metrics.items()}, pure(grads), pure(state.params), tx


def test_one_muon_train_step_matches_layer_by_layer():
    model = random_model()
    reference, ref_grads, ref_params, _ = one_step(model)
    for remat in (None, "dots"):
        metrics, grads, params, tx = one_step(scan.convert(model, scan_layers=True), remat)
        assert metrics["loss"] == pytest.approx(reference["loss"], abs=1e-5)
        assert metrics["grad_norm"] == pytest.approx(reference["grad_norm"], rel=1e-5)
        assert_trees_close(grads, scan.stack_blocks(ref_grads), atol=1e-5)
        # Muon orthogonalises each layer's matrix on its own, with that matrix's shape scale: the same update.
        assert_trees_close(params, scan.stack_blocks(ref_params), atol=1e-5)
    leaves = groups.labelled_leaves(nnx.state(scan.convert(model, scan_layers=True), nnx.Param))
    labels = {path: label for path, label, _ in leaves}
    assert labels["blocks/attn/c_q"] == labels["blocks/mlp/c_fc"] == groups.MUON and labels["wte"] == groups.EMBEDDING


def saved_residuals(model: GPT, remat: str | None, capsys) -> list[tuple[int, ...]]:
    """Shapes of the activations the backward pass keeps from the forward (jax's print_saved_residuals; the
    parameters, also kept, are left out)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tokens = jnp.asarray(batch())

    def loss(p):
        return loss_sums(nnx.merge(graphdef, p, rest), tokens, None)[0]

    if remat is not None:  # as train.step does: the policy wraps the whole loss
        loss = jax.checkpoint(loss, policy=REMAT_POLICIES[remat])
    capsys.readouterr()
    print_saved_residuals(loss, params)
    shapes = []
    for line in capsys.readouterr().out.splitlines():
        if " output of " in line or " named " in line:
            dims = line.split()[0].split("[", 1)[1].split("]")[0]
            shapes.append(tuple(int(d) for d in dims.split(",") if d))
    return shapes


def test_remat_saves_what_the_unrolled_blocks_save(capsys):
    """Under remat 'dots' the scan keeps, per layer, exactly the unrolled blocks' residuals: the matmul outputs."""
    model = random_model()
    scanned = scan.convert(model, scan_layers=True)
    unrolled_dots = saved_residuals(model, "dots", capsys)
    scanned_dots = saved_residuals(scanned, "dots", capsys)
    scanned_all = saved_residuals(scanned, None, capsys)
    assert sum(map(np.prod, scanned_dots)) == sum(map(np.prod, unrolled_dots)) < 0.5 * sum(map(np.prod, scanned_all))
    assert sum(s[0] == TINY.n_layer for s in scanned_dots) == 6  # q, k, v, attention out, MLP in and out


def scan_outputs(fn, *args) -> list[tuple[int, ...]]:
    """Shapes of every output of every scan in fn's jaxpr, nested ones included."""
    shapes = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan":
                shapes.extend(tuple(v.aval.shape) for v in eqn.outvars)
            for value in eqn.params.values():
                for sub in value if isinstance(value, tuple | list) else (value,):
                    if hasattr(sub, "eqns"):
                        walk(sub)
                    elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                        walk(sub.jaxpr)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return shapes


def test_train_step_remat_applies_per_layer_inside_the_scan():
    """A checkpoint around the whole loss alone makes the backward pass recompute the entire scan and stack every
    layer's attention probabilities; train.step's remat (scan.checkpoint) checkpoints each layer's body instead."""
    scanned = scan.convert(random_model(), scan_layers=True)
    graphdef, params, rest = nnx.split(scanned, nnx.Param, ...)
    tokens = {"tokens": jnp.asarray(batch())}
    probabilities = (TINY.n_layer, 4, TINY.n_kv_head, 2, TINY.sequence_len, TINY.sequence_len)  # [L, b, n, g, t, t]

    def loss(p):
        return loss_sums(nnx.merge(graphdef, p, rest), tokens["tokens"], None)[0]

    outer_only = scan_outputs(jax.grad(jax.checkpoint(loss, policy=REMAT_POLICIES["dots"])), params)
    assert probabilities in outer_only
    step = scan_outputs(lambda p: accumulate(graphdef, p, rest, tokens, 1, remat="dots"), params)
    assert probabilities not in step
    assert probabilities in scan_outputs(lambda p: accumulate(graphdef, p, rest, tokens, 1), params)  # no remat


def mesh_losses(shape, config: GPTConfig, n_steps: int = 2):
    factory = mesh_lib.AxesMesh(shape=shape)
    mesh, rules = factory.make(), factory.rules
    with mesh_lib.activate(mesh, rules):
        abstract = nnx.state(nnx.eval_shape(lambda: GPT(config, rngs=nnx.Rngs(0))), nnx.Param)
        mesh_lib.validate(abstract, mesh, rules)
        tx = MuonAdamW(ns_dtype="float32").build(abstract, 10)
        init = init_train_state(GPT, config, tx, seed=0, mesh=mesh, rules=rules)
        step = make_train_step(
            init.graphdef, tx, state_shardings=init.shardings, batch_sharding=mesh_lib.batch_sharding(mesh, rules)
        )
        state, losses = init.state, []
        for _ in range(n_steps):  # the same batch: the second loss must be lower
            state, metrics = step(state, mesh_lib.shard_batch({"tokens": batch(8)}, mesh, rules))
            losses.append(float(metrics["loss"]))
    return losses, state


def test_scanned_model_trains_on_a_mesh_like_on_one_device():
    config = dataclasses.replace(SCANNED, n_embd=64, n_head=4, n_kv_head=4)
    reference, _ = mesh_losses((1, 1, 1), config)
    losses, state = mesh_losses((2, 2, 2), config)
    assert losses[1] < losses[0]
    np.testing.assert_allclose(losses, reference, atol=1e-5, rtol=0)
    c_fc = state.params["blocks"]["mlp"]["c_fc"][...]
    assert c_fc.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")  # 'layers' is not sharded
    assert c_fc.addressable_shards[0].data.shape == (3, 32, 128)


def test_gin_binding_through_the_pretraining_experiment(gin_clean):
    from tests.helpers import load_experiment

    tiny = ["GPTConfig.n_layer = 3", "GPTConfig.n_embd = 32", "GPTConfig.n_head = 2", "GPTConfig.n_kv_head = 2"]
    tiny += ["Pretraining.sequence_len = 16", "GPTConfig.vocab_size = 128", "Pretraining.num_steps = 2"]
    tiny += ["Experiment.tokenizer_training = None"]  # no tokenizer is trained for a 128-id vocabulary
    tiny += ["Pretraining.batch_size = 4", "Pretraining.micro_batch_size = 2", "Pretraining.remat = 'dots'"]
    exp = load_experiment(["experiments/debug_cpu.gin"], [*tiny, "GPTConfig.scan_layers = True"]).pretraining
    assert exp.model_config.scan_layers and exp.model_config.sequence_len == 16
    plan = exp.plan()
    unscanned = dataclasses.replace(exp.model_config, scan_layers=False)
    assert plan.params == counting.param_counts(unscanned)
    assert plan.flops_per_token == counting.flops_per_token(unscanned)
    mesh, rules = exp.mesh.make(), exp.mesh.rules
    with mesh_lib.activate(mesh, rules):
        init, step = exp.build_step(plan, mesh, rules, abstract=False)
        assert init.state.params["blocks"]["attn"]["c_q"][...].shape == (3, 32, 32)
        state, losses = init.state, []
        for i in range(2):
            state, metrics = step(state, mesh_lib.shard_batch({"tokens": batch(4, seed=i)}, mesh, rules))
            losses.append(float(metrics["loss"]))
    assert all(np.isfinite(losses)) and int(state.step) == 2


def test_engine_decodes_a_scanned_model_like_the_unscanned_one():
    config = dataclasses.replace(TINY, sequence_len=64)
    model = random_model(config)
    scanned = scan.convert(model, scan_layers=True)
    prompt = batch(1, config=config)[0, :9].tolist()
    outs = []
    for m in (model, scanned):
        engine = Engine(m, min_bucket=4, max_bucket=16)
        outs.append([col[0] for col in engine.generate(engine.new_cache(1), [prompt], GREEDY, max_new_tokens=8)])
        np.testing.assert_allclose(
            engine.logits(engine.new_cache(1), [prompt])[0], np.asarray(model(jnp.asarray([prompt])))[0, -1], atol=1e-4
        )
    assert outs[0] == outs[1] and len(outs[0]) == 8


def save_params(directory, model: GPT) -> None:
    _, params, rest = nnx.split(model, nnx.Param, ...)
    state = TrainState(params, rest, {}, jnp.zeros((), jnp.int32), jax.random.key_data(jax.random.key(0)))
    with Checkpointer(directory) as checkpointer:
        checkpointer.save(1, state)


def test_checkpoint_of_the_other_layout_is_refused_in_one_line_or_converted(tmp_path):
    from nanocode.agents.loading import load_model  # reads through the fine-tuning loop's restore_params

    model = random_model()
    save_params(tmp_path / "unscanned", model)
    save_params(tmp_path / "scanned", scan.convert(model, scan_layers=True))
    for saved, config in (("unscanned", SCANNED), ("scanned", TINY)):
        with pytest.raises(
            CheckpointError,
            match=r"no parameter (params/)?blocks/.*does the experiment's model config \(n_layer, scan_layers",
        ) as e:
            load_model(GPT, config, tmp_path / saved / "1")
        assert "\n" not in str(e.value)
    # Converting on purpose: read the checkpoint in its own layout, then stack the blocks.
    loaded = load_model(GPT, TINY, tmp_path / "unscanned" / "1")
    converted = scan.convert(loaded, scan_layers=True)
    x = jnp.asarray(batch()[:, :-1])
    np.testing.assert_allclose(converted(x), model(x), atol=1e-5, rtol=0)
