"""The functional train step: exact token means under accumulation and masks, and the same numbers on any mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nanocode.core import mesh as mesh_lib
from nanocode.models.gpt import GPT, GPTConfig
from nanocode.optim.adamw import AdamW
from nanocode.optim.muon import MuonAdamW
from nanocode.train.loss import loss_sums, token_nll
from nanocode.train.state import init_train_state
from nanocode.train.step import make_train_step, micro_batches

TINY = GPTConfig(sequence_len=64, vocab_size=512, n_layer=2, n_head=2, n_kv_head=2, n_embd=64)


def batch(rows: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, TINY.vocab_size, (rows, TINY.sequence_len + 1), dtype=np.int32)


def setup(shape=(1, 1, 1), optimizer=None, accum_steps=1, total_steps=10):
    factory = mesh_lib.AxesMesh(shape=shape)
    mesh, rules = factory.make(), factory.rules
    with mesh_lib.activate(mesh, rules):
        abstract_params = nnx.state(nnx.eval_shape(lambda: GPT(TINY, rngs=nnx.Rngs(0))), nnx.Param)
        tx = (optimizer or AdamW()).build(abstract_params, total_steps)
        init = init_train_state(GPT, TINY, tx, seed=0, mesh=mesh, rules=rules)
        step = make_train_step(
            init.graphdef,
            tx,
            accum_steps=accum_steps,
            state_shardings=init.shardings,
            batch_sharding=mesh_lib.batch_sharding(mesh, rules),
        )
    return mesh, rules, init, step


def run_steps(shape, n_steps=3, accum_steps=2, optimizer=None, mask=None):
    mesh, rules, init, step = setup(shape, optimizer, accum_steps)
    state, losses = init.state, []
    with mesh_lib.activate(mesh, rules):
        for _ in range(n_steps):
            host = {"tokens": batch()} | ({} if mask is None else {"mask": mask})
            state, metrics = step(state, mesh_lib.shard_batch(host, mesh, rules))
            losses.append(float(metrics["loss"]))
    return losses, jax.tree.map(np.asarray, state.params), metrics


def test_micro_batches_are_strided_and_complete():
    x = np.arange(12)
    mb = np.asarray(micro_batches(x, 3))
    assert mb.tolist() == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    with pytest.raises(ValueError):
        micro_batches(x, 5)


def test_same_losses_on_every_mesh():
    """3 steps of Muon+AdamW (fp32 Newton-Schulz) with 2 micro-batches on (1,1,1), (1,8,1) and (2,2,2)."""
    optimizer = MuonAdamW(ns_dtype="float32")
    results = {shape: run_steps(shape, optimizer=optimizer) for shape in [(1, 1, 1), (1, 8, 1), (2, 2, 2)]}
    reference, ref_params, _ = results[(1, 1, 1)]
    assert reference[2] < reference[0]  # it trains
    for shape, (losses, params, _) in results.items():
        np.testing.assert_allclose(losses, reference, atol=1e-5, rtol=0, err_msg=str(shape))
        # Weights agree less tightly than losses: Adam (eps 1e-10) divides tiny gradients by their own scale, so
        # fp32 reduction-order noise in a near-zero embedding gradient can move its row by ~lr * 1e-3.
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
            np.testing.assert_allclose(a, b, atol=1e-3, rtol=0, err_msg=str(shape))


def test_loss_is_exact_token_mean_across_micro_batches_and_masks():
    """Rows with no valid target, uneven valid counts: the loss is sum(nll)/count, whatever the micro-batching."""
    tokens = batch()
    rng = np.random.default_rng(1)
    mask = (rng.random(tokens.shape) < 0.3).astype(np.int32)
    mask[:4] = 0  # micro-batches of accum 8 = rows {i, i+8}: rows 0-3 alone would be empty; with 4-7 too, some are
    mask[8:12] = 0
    # the reference: one forward over the whole batch, masked mean over tokens
    model = GPT(TINY, rngs=nnx.Rngs(0))
    nll = np.asarray(token_nll(model(jnp.asarray(tokens[:, :-1])), jnp.asarray(tokens[:, 1:])))
    valid = mask[:, 1:] != 0
    expected = nll[valid].sum() / valid.sum()
    loss_sum, count = loss_sums(model, jnp.asarray(tokens), jnp.asarray(mask))
    assert int(count) == valid.sum()
    np.testing.assert_allclose(float(loss_sum) / float(count), expected, rtol=1e-6)

    by_accum = {}
    for accum in (1, 2, 8):
        mesh, rules, init, step = setup((1, 8, 1), accum_steps=accum)
        with mesh_lib.activate(mesh, rules):
            state, metrics = step(init.state, mesh_lib.shard_batch({"tokens": tokens, "mask": mask}, mesh, rules))
        by_accum[accum] = (metrics, jax.tree.map(np.asarray, state.params))
        np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)
        assert int(metrics["valid_tokens"]) == valid.sum()
    for accum in (2, 8):
        np.testing.assert_allclose(
            float(by_accum[accum][0]["grad_norm"]), float(by_accum[1][0]["grad_norm"]), rtol=1e-5
        )
        for a, b in zip(jax.tree.leaves(by_accum[accum][1]), jax.tree.leaves(by_accum[1][1])):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_batch_without_valid_tokens_is_a_no_op_not_nan():
    mask = np.zeros((16, TINY.sequence_len + 1), np.int32)
    mesh, rules, init, step = setup((1, 1, 1), accum_steps=4)
    before = jax.tree.map(np.asarray, init.state.params)
    with mesh_lib.activate(mesh, rules):
        state, metrics = step(init.state, mesh_lib.shard_batch({"tokens": batch(), "mask": mask}, mesh, rules))
    assert float(metrics["loss"]) == 0.0 and float(metrics["grad_norm"]) == 0.0 and float(metrics["valid_tokens"]) == 0
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(before)):
        assert np.isfinite(np.asarray(a)).all()
        np.testing.assert_array_equal(np.asarray(a), b)
    assert int(state.step) == 1


def test_state_is_sharded_by_logical_names_and_donated():
    mesh, rules, init, step = setup((1, 8, 1))
    wte = init.state.params["wte"][...]
    assert wte.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    assert wte.addressable_shards[0].data.shape == (TINY.vocab_size, TINY.n_embd // 8)
    with mesh_lib.activate(mesh, rules):
        state, _ = step(init.state, mesh_lib.shard_batch({"tokens": batch()}, mesh, rules))
    assert wte.is_deleted()  # the old state's buffers were donated to the new one
    assert state.params["wte"][...].sharding.spec == wte.sharding.spec


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_head_loss_matches_plain_autodiff(dtype, monkeypatch):
    """GPT's loss fused with its head (custom VJP, chunked) against autodiff of logits -> token_nll."""
    from nanocode.train import loss as loss_lib

    monkeypatch.setattr(loss_lib, "CHUNK_BYTES", 64 * TINY.vocab_size * 4)  # 64 rows per chunk: 8 chunks here
    assert loss_lib.batch_shards() == 1  # no mesh active
    config = GPTConfig(**{**TINY.__dict__, "compute_dtype": dtype})
    model = GPT(config, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tokens = jnp.asarray(batch(rows=8))
    mask = jnp.asarray(np.random.default_rng(2).random(tokens.shape) < 0.7)

    def fused(p):
        return loss_sums(nnx.merge(graphdef, p, rest), tokens, mask)

    def plain(p):
        m = nnx.merge(graphdef, p, rest)
        nll = token_nll(m(tokens[:, :-1]), tokens[:, 1:])
        valid = mask[:, 1:]
        return jnp.sum(jnp.where(valid, nll, 0.0)), jnp.sum(valid, dtype=jnp.float32)

    assert loss_lib.has_gpt_head(model) and loss_lib.num_chunks(8 * 64, TINY.vocab_size) == 8
    (a, count_a), grads_a = jax.value_and_grad(fused, has_aux=True)(params)
    (b, count_b), grads_b = jax.value_and_grad(plain, has_aux=True)(params)
    tol = 1e-5 if dtype == "float32" else 2e-2
    assert count_a == count_b
    np.testing.assert_allclose(float(a), float(b), rtol=tol)
    for ga, gb in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
        scale = float(jnp.abs(gb).max()) + 1e-12
        np.testing.assert_allclose(np.asarray(ga) / scale, np.asarray(gb) / scale, atol=tol)
