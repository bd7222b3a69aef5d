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

# Tolerances are relative to the reference's magnitude (see assert_close): fp32 implementations that differ only in
# summation order agree to ~1e-6 of the largest value (measured <= 1e-6 for every comparison here), so 1e-5 leaves
# an order of magnitude for other CPUs and XLA versions, while a real bug (a mask one key off, a scale 0.1% off)
# exceeds it 15x or more (test_the_tolerances_catch_real_bugs). bf16 keeps 8 significant bits
# (eps 2**-8): a few roundings on the way to an output add up to ~2**-8 of its largest value (measured 4e-3 against
# fp32, 3e-3 between two bf16 implementations).
FP32 = 1e-5


def assert_close(actual, desired, *, rtol=FP32, atol=None):
    """|actual - desired| <= rtol * |desired| + atol * max|desired| elementwise (atol defaults to rtol).

    An absolute tolerance alone fails on large values (a gradient of magnitude 20 whose fp32 rounding is 1.3e-5) and
    passes anything on tiny ones (model gradients of magnitude 1e-6 against atol 1e-5); scaling it by the
    reference's largest value keeps the same precision at any magnitude, for elements near zero too.
    """
    actual, desired = np.asarray(actual, np.float32), np.asarray(desired, np.float32)
    scale = float(np.max(np.abs(desired), initial=0.0))
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=(rtol if atol is None else atol) * scale)


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
    assert_close(ours, theirs)
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
    assert_close(tail, full[:, 9:])
    # one decode step per row, each row at its own position (a batch of different-length prompts)
    pos = jnp.array([4, 10])
    step = xla_attention(q[jnp.arange(2), pos][:, None], k, v, scale=0.35, q_offset=pos)
    assert_close(step[:, 0], full[jnp.arange(2), pos])


def test_bf16_inputs_give_bf16_output_close_to_fp32():
    q, k, v = qkv()
    out = xla_attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)), scale=0.35)
    assert out.dtype == jnp.bfloat16
    assert_close(out, xla_attention(q, k, v, scale=0.35), rtol=0, atol=2**-6)  # 4 bf16 eps of the largest value


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
    assert_close(splash(q, k, v), xla(q, k, v))

    def loss(fn):
        return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))

    for a, b in zip(jax.grad(loss(splash), (0, 1, 2))(q, k, v), jax.grad(loss(xla), (0, 1, 2))(q, k, v)):
        assert_close(a, b)


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
        assert_close(model(x), ref)  # single device
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            graphdef, state = nnx.split(model)
            sharded = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))(state, x)
        assert_close(sharded, ref)
    assert local_shapes == [(4, 128, 4, 128), (2, 128, 2, 128)]  # whole batch, then one (batch, heads) shard


def sin_loss(fn):
    return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))


@pytest.mark.parametrize("hkv,block", [(4, 8), (2, 16), (1, 32)])
def test_blocked_matches_xla_values_and_gradients(hkv, block):
    """Skipping the upper triangle block by block, with the hand-written backward, changes nothing in fp32."""
    q, k, v = qkv(b=2, t=64, h=4, hkv=hkv, d=16)
    blocked = functools.partial(blocked_attention, scale=0.25, block=block)
    xla = functools.partial(xla_attention, scale=0.25)
    assert_close(blocked(q, k, v), xla(q, k, v))
    grads = jax.grad(sin_loss(blocked), (0, 1, 2))(q, k, v)
    for a, b in zip(grads, jax.grad(sin_loss(xla), (0, 1, 2))(q, k, v)):
        assert_close(a, b)


def test_blocked_bf16_keeps_the_dtype_and_stays_close():
    q, k, v = (x.astype(jnp.bfloat16) for x in qkv(t=64))
    out = blocked_attention(q, k, v, scale=0.35, block=16)
    assert out.dtype == jnp.bfloat16
    assert_close(out, xla_attention(q, k, v, scale=0.35), rtol=0, atol=2**-7)  # 2 bf16 eps of the largest value
    dq, dk, dv = jax.grad(sin_loss(functools.partial(blocked_attention, scale=0.35, block=16)), (0, 1, 2))(q, k, v)
    assert dq.dtype == dk.dtype == dv.dtype == jnp.bfloat16


def test_block_size_splits_into_at_most_eight_blocks_or_none():
    assert [block_size(t) for t in (16, 32, 64, 256, 512, 2048, 4096)] == [None, None, 32, 32, 64, 256, 512]
    assert block_size(100) is None  # 3 blocks of 33.3 rows: not a multiple, runs unblocked
    q, k, v = qkv(t=12)  # shorter than a block: the xla implementation, same numbers
    assert_close(blocked_attention(q, k, v, scale=0.3), xla_attention(q, k, v, scale=0.3))


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
        assert_close(a, b)  # gradients of magnitude ~1e-6: an absolute 1e-5 would let anything pass


def test_the_tolerances_catch_real_bugs():
    """The fp32 tolerance is no blanket: a scale 0.1% off (15-75x beyond it), a mask one key late or no mask at all
    (>10,000x) fail it, in the values and in each gradient; a missing scale errs far more still."""
    q, k, v = qkv(b=2, t=32, h=4, hkv=2, d=16)

    def values_and_grads(fn):
        return jax.jit(lambda q, k, v: [fn(q, k, v), *jax.grad(sin_loss(fn), (0, 1, 2))(q, k, v)])(q, k, v)

    want = values_and_grads(functools.partial(xla_attention, scale=0.25))
    bugs = {
        "scale 0.1% off": functools.partial(xla_attention, scale=0.25 * 1.001),
        "mask one key late": functools.partial(xla_attention, scale=0.25, q_offset=1),
        "no mask": functools.partial(jax.nn.dot_product_attention, scale=0.25, is_causal=False, implementation="xla"),
    }
    for name, bug in bugs.items():
        for what, a, b in zip(("values", "dq", "dk", "dv"), values_and_grads(bug), want):
            with pytest.raises(AssertionError):
                assert_close(a, b)
                pytest.fail(f"{name}: {what} pass the fp32 tolerance")
