"""Causal attention implementations, registered by name in the `attention` registry and picked by GPTConfig.attention.

Every implementation has the same signature, so the model (and later a KV cache) only deals in q, k, v:

    attend(q: [b, tq, h, d], k: [b, tk, h_kv, d], v: [b, tk, h_kv, d], *, scale, q_offset=0) -> [b, tq, h, d]

Query i sits at absolute position q_offset + i and sees keys 0..q_offset+i (a causal mask with an offset, so a
decode step attends over a cache holding its past). q_offset is an int or an int32[b] array (one offset per row).
h must be a multiple of h_kv (grouped-query attention). The output has q's dtype; softmax runs in fp32.

- `xla`: einsums with an explicit mask. Runs everywhere, supports any q_offset: the reference and the decode path.
- `blocked` (nanocode.models.blocked_attention): query blocks that skip the masked upper triangle, with a
  hand-written backward; runs everywhere, the CPU's choice (no fused kernel there).
- `cudnn`: cuDNN flash attention through jax.nn.dot_product_attention (NVIDIA GPU, bf16/fp16, q_offset 0).
- `splash`: Pallas splash attention (TPU, q_offset 0); its module is imported only when it is used.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from nanocode.core import sharding
from nanocode.core.errors import ConfigError
from nanocode.core.kinds import ATTENTION

Offset = int | Int[Array, " b"]


def _check_gqa(q: jax.Array, k: jax.Array, v: jax.Array) -> None:
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"attention: incompatible q {q.shape}, k {k.shape}, v {v.shape} (want [b,t,h,d])")
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"attention: {q.shape[2]} query heads is not a multiple of {k.shape[2]} kv heads")


def _full_causal_only(name: str, q: jax.Array, k: jax.Array, q_offset: Offset) -> None:
    if not (isinstance(q_offset, int) and q_offset == 0) or q.shape[1] != k.shape[1]:
        raise ValueError(
            f"attention {name!r} computes full causal self-attention only (q_offset=0, tq == tk); "
            "use the 'xla' implementation for cached decoding"
        )


@ATTENTION.register("xla")
def xla_attention(
    q: Float[Array, "b tq h d"],
    k: Float[Array, "b tk hkv d"],
    v: Float[Array, "b tk hkv d"],
    *,
    scale: float,
    q_offset: Offset = 0,
) -> Float[Array, "b tq h d"]:
    """Causal attention in plain XLA einsums with an fp32 softmax (any backend, any q_offset)."""
    _check_gqa(q, k, v)
    b, tq, h, d = q.shape
    tk, hkv = k.shape[1], k.shape[2]
    # GQA without repeating k/v: split the query heads into (kv head, group) and contract against the shared k/v.
    qg = q.reshape(b, tq, hkv, h // hkv, d)
    scores = jnp.einsum("bqngd,bknd->bngqk", qg, k, preferred_element_type=jnp.float32) * scale
    q_pos = jnp.reshape(jnp.asarray(q_offset, jnp.int32), (-1, 1)) + jnp.arange(tq, dtype=jnp.int32)  # [1|b, tq]
    visible = jnp.arange(tk, dtype=jnp.int32)[None, None, :] <= q_pos[:, :, None]  # [1|b, tq, tk]
    # A finite minimum (not -inf) keeps a row with no visible key NaN-free; causal rows always see key 0 anyway.
    scores = jnp.where(visible[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bngqk,bknd->bqngd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out.reshape(b, tq, h, d).astype(q.dtype)


@ATTENTION.register("cudnn")
def cudnn_attention(
    q: Float[Array, "b t h d"],
    k: Float[Array, "b t hkv d"],
    v: Float[Array, "b t hkv d"],
    *,
    scale: float,
    q_offset: Offset = 0,
) -> Float[Array, "b t h d"]:
    """cuDNN flash attention (NVIDIA GPU only, bf16/fp16 compute, full causal self-attention)."""
    _check_gqa(q, k, v)
    _full_causal_only("cudnn", q, k, q_offset)
    if jax.default_backend() != "gpu":
        raise ConfigError(
            f"attention 'cudnn' needs an NVIDIA GPU (JAX backend is {jax.default_backend()!r}); "
            "set GPTConfig.attention = 'xla'"
        )
    if q.dtype not in (jnp.bfloat16, jnp.float16):
        raise ConfigError(f"attention 'cudnn' needs bf16/fp16 inputs, got {q.dtype}; set GPTConfig.compute_dtype")
    return jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True, implementation="cudnn")


# Block sizes benchmarked for splash on TPU v6e by the original nanocode (seq len -> block, kv compute block).
_SPLASH_BLOCKS = {4096: (1024, 128), 2048: (512, 256), 1024: (256, 256)}


def splash_block_sizes(seq_len: int):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash

    block, compute = _SPLASH_BLOCKS.get(seq_len, (min(128, seq_len), min(128, seq_len)))
    return splash.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=compute,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=compute,
        block_q_dq=block,
        block_kv_dq=block,
    )


@functools.lru_cache(maxsize=32)
def _splash_kernel(heads: int, seq_len: int, interpret: bool):
    """A causal splash kernel for one sequence: q [heads, t, d], k/v [kv heads, t, d] (built once per shape)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    mask = masks.MultiHeadMask([masks.CausalMask((seq_len, seq_len)) for _ in range(heads)])
    return splash.make_splash_mha(
        mask, block_sizes=splash_block_sizes(seq_len), head_shards=1, q_seq_shards=1, interpret=interpret
    )


def _splash_local(q: jax.Array, k: jax.Array, v: jax.Array, scale: float, interpret: bool) -> jax.Array:
    # Splash wants heads before time ([h, t, d]) and has no scale argument: scale q, transpose, vmap over batch.
    kernel = _splash_kernel(q.shape[2], q.shape[1], interpret)
    qh = (q * jnp.asarray(scale, q.dtype)).transpose(0, 2, 1, 3)
    kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    return jax.vmap(kernel)(qh, kh, vh).transpose(0, 2, 1, 3)


@ATTENTION.register("splash")
def splash_attention(
    q: Float[Array, "b t h d"],
    k: Float[Array, "b t hkv d"],
    v: Float[Array, "b t hkv d"],
    *,
    scale: float,
    q_offset: Offset = 0,
    interpret: bool = False,
) -> Float[Array, "b t h d"]:
    """Pallas splash attention (TPU only, full causal self-attention). `interpret=True` runs it anywhere, slowly."""
    _check_gqa(q, k, v)
    _full_causal_only("splash", q, k, q_offset)
    if jax.default_backend() != "tpu" and not interpret:
        raise ConfigError(
            f"attention 'splash' needs a TPU (JAX backend is {jax.default_backend()!r}); set GPTConfig.attention = 'xla'"
        )
    local = functools.partial(_splash_local, scale=scale, interpret=interpret)
    mesh = sharding.active_mesh()
    if not sharding.sharding_active() or mesh.are_all_axes_manual:
        return local(q, k, v)
    # A Pallas kernel is opaque to the SPMD partitioner: run it per shard, on the batch and head shards given
    # by the logical-axis rules (kv heads must shard like the query heads so each shard keeps whole GQA groups).
    q_spec = sharding.logical_spec((sharding.BATCH, None, sharding.HEADS, None))
    kv_spec = sharding.logical_spec((sharding.BATCH, None, sharding.KV_HEADS, None))
    return jax.shard_map(local, in_specs=(q_spec, kv_spec, kv_spec), out_specs=q_spec, check_vma=False)(q, k, v)
