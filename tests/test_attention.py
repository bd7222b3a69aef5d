"""Attention implementations: the XLA reference against JAX's own, causal offsets for decoding, and the kernels'
backend checks; splash runs in Pallas interpret mode on the CPU and must match XLA (values and gradients)."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nanocode.core.errors import ConfigError
from nanocode.core.kinds import ATTENTION
from nanocode.models import attention
from nanocode.models.attention import cudnn_attention, splash_attention, xla_attention
from nanocode.models.blocked_attention import block_size, blocked_attention
from nanocode.models.gpt import GPT, GPTConfig


def qkv(b=2, t=12, h=4, hkv=2, d=8, dtype=jnp.float32, seed=0):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    return (
        jax.random.normal(kq, (b, t, h, d), dtype),
        jax.random.normal(kk, (b, t, hkv, d), dtype),
        jax.random.normal(kv, (b, t, hkv, d), dtype),
    )


@pytest.mark.parametrize("hkv", [4, 2, 1])
def test_xla_matches_jax_dot_product_attention(hkv):
    q, k, v = qkv(hkv=hkv)
    ours = xla_attention(q, k, v, scale=0.3)
    theirs = jax.nn.dot_product_attention(q, k, v, scale=0.3, is_causal=True, implementation="xla")
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    assert ours.dtype == q.dtype


def test_first_position_sees_only_itself():
    q, k, v = qkv(hkv=1)
    out = xla_attention(q, k, v, scale=1.0)
    np.testing.assert_allclose(out[:, 0], jnp.broadcast_to(v[:, 0], out[:, 0].shape), rtol=1e-6)


def test_q_offset_decodes_like_the_full_sequence():
    """The last queries, placed at their absolute positions, attend exactly as in the full causal pass."""
    q, k, v = qkv(t=12)
    full = xla_attention(q, k, v, scale=0.35)
    tail = xla_attention(q[:, 9:], k, v, scale=0.35, q_offset=9)
    np.testing.assert_allclose(tail, full[:, 9:], rtol=1e-5, atol=1e-6)
    # one decode step per row, each row at its own position (a batch of different-length prompts)
    pos = jnp.array([4, 10])
    step = xla_attention(q[jnp.arange(2), pos][:, None], k, v, scale=0.35, q_offset=pos)
    np.testing.assert_allclose(step[:, 0], full[jnp.arange(2), pos], rtol=1e-5, atol=1e-6)


def test_bf16_inputs_give_bf16_output_close_to_fp32():
    q, k, v = qkv()
    out = xla_attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)), scale=0.35)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), xla_attention(q, k, v, scale=0.35), atol=5e-2)


def test_bad_shapes_are_named():
    q, k, v = qkv(h=4, hkv=3)
    with pytest.raises(ValueError, match="4 query heads is not a multiple of 3 kv heads"):
        xla_attention(q, k, v, scale=1.0)


def test_cudnn_needs_a_gpu():
    q, k, v = qkv(dtype=jnp.bfloat16)
    if jax.default_backend() == "gpu":
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="attention 'cudnn' needs an NVIDIA GPU"):
        cudnn_attention(q, k, v, scale=1.0)


def test_kernels_refuse_offsets():
    q, k, v = qkv()
    for fn in (cudnn_attention, splash_attention, blocked_attention):
        with pytest.raises(ValueError, match="use the 'xla' implementation for cached decoding"):
            fn(q[:, -1:], k, v, scale=1.0, q_offset=11)


def test_splash_needs_a_tpu():
    if jax.default_backend() == "tpu":
        pytest.skip("a TPU is present")
    with pytest.raises(ConfigError, match="attention 'splash' needs a TPU"):
        splash_attention(*qkv(t=128, d=128), scale=1.0)


def test_splash_interpreted_matches_xla_values_and_gradients():
    q, k, v = qkv(b=2, t=256, h=2, hkv=1, d=128)
    scale = 128**-0.5
    splash = functools.partial(splash_attention, scale=scale, interpret=True)
    xla = functools.partial(xla_attention, scale=scale)
    np.testing.assert_allclose(splash(q, k, v), xla(q, k, v), atol=1e-5)

    def loss(fn):
        return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))

    for a, b in zip(jax.grad(loss(splash), (0, 1, 2))(q, k, v), jax.grad(loss(xla), (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.slow
def test_splash_per_shard_under_a_mesh_and_as_a_model_attention(monkeypatch):
    """Splash runs per (batch, head) shard under a mesh, and a GPT selects it by name through the registry."""
    from jax.sharding import AxisType

    cfg = GPTConfig(sequence_len=128, vocab_size=64, n_layer=1, n_head=4, n_kv_head=2, n_embd=512)
    x = jax.random.randint(jax.random.key(1), (4, 128), 0, 64)
    ref_model = GPT(cfg, rngs=nnx.Rngs(0))
    ref_model.blocks[0].attn.c_proj[...] = jax.random.normal(jax.random.key(2), ref_model.blocks[0].attn.c_proj.shape)
    ref = ref_model(x)
    mesh = jax.make_mesh((2, 2), ("data", "tensor"), axis_types=(AxisType.Auto,) * 2)
    rules = (("batch", "data"), ("heads", "tensor"), ("kv_heads", "tensor"), ("embed", None), ("vocab", None))
    rules += (("mlp", None), ("seq", None), ("head_dim", None), ("layers", None))
    interpreted = functools.partial(splash_attention, interpret=True)
    local_shapes = []
    run_local = attention._splash_local
    monkeypatch.setattr(
        attention, "_splash_local", lambda q, *a, **kw: local_shapes.append(q.shape) or run_local(q, *a, **kw)
    )
    with ATTENTION.temporary("splash_interpret", interpreted):
        model = GPT(dataclasses.replace(cfg, attention="splash_interpret"), rngs=nnx.Rngs(0))
        model.blocks[0].attn.c_proj[...] = ref_model.blocks[0].attn.c_proj[...]
        np.testing.assert_allclose(model(x), ref, atol=1e-4)  # single device
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            graphdef, state = nnx.split(model)
            sharded = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))(state, x)
        np.testing.assert_allclose(sharded, ref, atol=1e-4)
    assert local_shapes == [(4, 128, 4, 128), (2, 128, 2, 128)]  # whole batch, then one (batch, heads) shard


def sin_loss(fn):
    return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))


@pytest.mark.parametrize("hkv,block", [(4, 8), (2, 16), (1, 32)])
def test_blocked_matches_xla_values_and_gradients(hkv, block):
    """Skipping the upper triangle block by block, with the hand-written backward, changes nothing in fp32."""
    q, k, v = qkv(b=2, t=64, h=4, hkv=hkv, d=16)
    blocked = functools.partial(blocked_attention, scale=0.25, block=block)
    xla = functools.partial(xla_attention, scale=0.25)
    np.testing.assert_allclose(blocked(q, k, v), xla(q, k, v), atol=1e-5)
    grads = jax.grad(sin_loss(blocked), (0, 1, 2))(q, k, v)
    for a, b in zip(grads, jax.grad(sin_loss(xla), (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_blocked_bf16_keeps_the_dtype_and_stays_close():
    q, k, v = (x.astype(jnp.bfloat16) for x in qkv(t=64))
    out = blocked_attention(q, k, v, scale=0.35, block=16)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        out.astype(jnp.float32), xla_attention(q, k, v, scale=0.35).astype(jnp.float32), atol=2e-2
    )
    dq, dk, dv = jax.grad(sin_loss(functools.partial(blocked_attention, scale=0.35, block=16)), (0, 1, 2))(q, k, v)
    assert dq.dtype == dk.dtype == dv.dtype == jnp.bfloat16


def test_block_size_splits_into_at_most_eight_blocks_or_none():
    assert [block_size(t) for t in (16, 32, 64, 256, 512, 2048, 4096)] == [None, None, 32, 32, 64, 256, 512]
    assert block_size(100) is None  # 3 blocks of 33.3 rows: not a multiple, runs unblocked
    q, k, v = qkv(t=12)  # shorter than a block: the xla implementation, same numbers
    np.testing.assert_allclose(blocked_attention(q, k, v, scale=0.3), xla_attention(q, k, v, scale=0.3), atol=1e-6)


def test_blocked_trains_a_model_under_a_mesh_like_xla():
    """Selected by name in GPTConfig, the blocked attention gives xla's loss and gradients on a (data, tensor) mesh."""
    from jax.sharding import AxisType

    cfg = GPTConfig(sequence_len=64, vocab_size=64, n_layer=1, n_head=4, n_kv_head=2, n_embd=64)
    x = jax.random.randint(jax.random.key(1), (4, 64), 0, 64)
    mesh = jax.make_mesh((2, 2), ("data", "tensor"), axis_types=(AxisType.Auto,) * 2, devices=jax.devices()[:4])
    rules = (("batch", "data"), ("heads", "tensor"), ("kv_heads", "tensor"), ("embed", None), ("vocab", None))
    rules += (("mlp", None), ("seq", None), ("head_dim", None), ("layers", None))

    def loss_and_grads(name):
        model = GPT(dataclasses.replace(cfg, attention=name), rngs=nnx.Rngs(0))
        model.blocks[0].attn.c_proj[...] = jax.random.normal(jax.random.key(2), model.blocks[0].attn.c_proj.shape)
        graphdef, params = nnx.split(model)
        loss = lambda p: jnp.mean(nnx.merge(graphdef, p)(x) ** 2)  # noqa: E731
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return jax.jit(jax.value_and_grad(loss))(params)

    (loss, grads), (ref_loss, ref_grads) = loss_and_grads("blocked"), loss_and_grads("xla")
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(a, b, atol=1e-5)
