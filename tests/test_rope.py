"""RoPE: the full-width tables with a flip of the halves match the plain split-halves formula (nanochat's), for
training positions [t] and per-row decode positions [b, t], and inside the model's forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nanocode.models import gpt
from nanocode.models.gpt import GPT, GPTConfig, apply_rope, rope_tables


def reference_rope(x, positions, base=10000.0):
    """[x1, x2] -> [x1 cos + x2 sin, x2 cos - x1 sin], angles position * base^(-2i/d), in fp32 (float64 tables)."""
    d = x.shape[-1]
    inv_freq = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    angles = np.asarray(positions, np.float64)[..., None] * inv_freq
    cos, sin = np.cos(angles)[..., None, :], np.sin(angles)[..., None, :]  # broadcast over heads
    x1, x2 = np.split(np.asarray(x, np.float64), 2, axis=-1)
    return np.concatenate([x1 * cos + x2 * sin, x2 * cos - x1 * sin], axis=-1)


@pytest.mark.parametrize("head_dim", [8, 64])
def test_matches_the_split_halves_formula(head_dim):
    x = jax.random.normal(jax.random.key(0), (2, 40, 3, head_dim), jnp.float32)
    positions = jnp.arange(40)
    out = apply_rope(x, *rope_tables(positions, head_dim, 10000.0))
    assert out.dtype == jnp.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, reference_rope(x, positions), rtol=1e-5, atol=1e-5)


def test_per_row_positions_as_when_decoding():
    x = jax.random.normal(jax.random.key(1), (2, 5, 4, 16), jnp.float32)
    positions = jnp.array([[0, 1, 2, 3, 4], [100, 101, 102, 103, 104]])
    out = apply_rope(x, *rope_tables(positions, 16, 10000.0))
    np.testing.assert_allclose(out, reference_rope(x, positions), rtol=1e-5, atol=1e-4)


def test_rotation_keeps_the_norm_and_bf16_inputs_rotate_in_fp32():
    x = jax.random.normal(jax.random.key(2), (1, 30, 2, 32), jnp.bfloat16)
    out = apply_rope(x, *rope_tables(jnp.arange(30), 32, 10000.0))
    assert out.dtype == jnp.float32
    x32 = x.astype(jnp.float32)
    np.testing.assert_allclose(jnp.linalg.norm(out, axis=-1), jnp.linalg.norm(x32, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(out, reference_rope(x32, jnp.arange(30)), rtol=1e-5, atol=1e-5)


def test_model_forward_matches_the_reference_rotation(monkeypatch):
    """The model (tables as compile-time constants, under jit) gives the logits of the plain formula."""
    config = GPTConfig(sequence_len=32, vocab_size=64, n_layer=2, n_head=2, n_kv_head=1, n_embd=32)
    model = GPT(config, rngs=nnx.Rngs(0))
    for block in model.blocks:  # non-zero output projections, so attention (and RoPE) reach the logits
        block.attn.c_proj[...] = 0.1 * jax.random.normal(jax.random.key(3), block.attn.c_proj.shape)
    tokens = jax.random.randint(jax.random.key(4), (2, 32), 0, 64)
    ours = nnx.jit(lambda m, t: m(t))(model, tokens)

    def plain(x, cos, sin):  # ignores the tables: the reference from the training positions 0..t-1
        return jax.pure_callback(
            lambda a: reference_rope(a, np.arange(a.shape[1])).astype(np.float32),
            jax.ShapeDtypeStruct(x.shape, jnp.float32),
            x.astype(jnp.float32),
        )

    monkeypatch.setattr(gpt, "apply_rope", plain)
    theirs = model(tokens)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
