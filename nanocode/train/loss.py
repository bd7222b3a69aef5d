"""Next-token cross-entropy as *sums* plus valid-token counts, so any number of micro-batches and devices combine
into an exact per-token mean (sum of losses / total valid tokens), never a mean of means.

A target is valid where its loss-mask entry is non-zero and its id is >= 0 (nanocode marks ignored targets -1).

For the GPT's own head (x @ lm_head, soft-capped) the loss is fused with the head: a custom VJP goes over the
logits chunk by chunk and, while a chunk is in memory, forms the loss and its gradients (softmax - one-hot) x
softcap' -> dh, dw at once (the loss ends the computation, so its cotangent is a scalar that scales them later).
Autodiff of the plain version stores the fp32 [tokens, vocab] logits and tanh, and XLA:CPU spent ~18% of a small
model's step transposing that gradient; the fused version is faster end to end there (benchmarks/train_cpu.py),
and holds at most one chunk of logits in memory at a time on any backend.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from nanocode.core import sharding
from nanocode.models.gpt import GPT, weight_gradient

# A chunk holds at most this many bytes of fp32 logits per device; the rows of a micro-batch are split into as few
# chunks as that allows. Small enough to stay in a CPU's last-level cache (+5% over one 128 MiB chunk in
# benchmarks/train_cpu.py), large enough (128 rows of a 32K vocab) for a TPU's matrix units.
CHUNK_BYTES = 16 * 2**20


def token_nll(logits: Float[Array, "b t v"], targets: Int[Array, "b t"]) -> Float[Array, "b t"]:
    """Per-token negative log-likelihood in fp32 (targets < 0 give a finite, meaningless value: mask them)."""
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, jnp.maximum(targets, 0)[..., None], axis=-1)[..., 0]
    return lse - picked


def split_rows(tokens: Int[Array, "b t1"], mask: Array | None) -> tuple[Array, Array, Array]:
    """Rows of T+1 tokens -> (inputs [b,T], targets [b,T], valid bool [b,T]); mask[:, t+1] masks target t."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    valid = targets >= 0
    if mask is not None:
        valid = valid & (mask[:, 1:] != 0)
    return inputs, targets, valid


def loss_sums(model, tokens: Int[Array, "b t1"], mask: Array | None = None) -> tuple[Array, Array]:
    """(sum of per-token NLL over valid targets, number of valid targets), both fp32 scalars."""
    inputs, targets, valid = split_rows(tokens, mask)
    count = jnp.sum(valid, dtype=jnp.float32)
    if has_gpt_head(model):
        h = model.hidden(inputs)
        b, t, e = h.shape
        w = sharding.constrain(model.lm_head[...], (None, sharding.VOCAB))  # gathered once, not once per chunk
        chunks = num_chunks(b * t // batch_shards(), w.shape[1])
        nll = head_nll_sum(
            h.reshape(b * t, e), w, targets.reshape(-1), valid.reshape(-1), float(model.config.softcap or 0), chunks
        )
        return nll, count
    nll = token_nll(model(inputs), targets)
    return jnp.sum(jnp.where(valid, nll, 0.0)), count


# ---------------------------------------------------------------------------------------------------- fused head
def has_gpt_head(model) -> bool:
    """The model computes logits with GPT's head (a fork that replaces `head` gets the plain, unfused loss)."""
    return isinstance(model, GPT) and type(model).head is GPT.head


def batch_shards() -> int:
    """How many ways the active mesh splits the batch dimension (1 without a mesh)."""
    if not sharding.sharding_active():
        return 1
    spec = sharding.logical_spec((sharding.BATCH,))
    axes = spec[0] if len(spec) else None
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    mesh = sharding.active_mesh()
    return math.prod(mesh.shape[a] for a in axes)


def num_chunks(rows: int, vocab: int) -> int:
    """The fewest chunks (a divisor of a device's `rows`) whose fp32 logits fit CHUNK_BYTES."""
    need = -(-rows * vocab * 4 // CHUNK_BYTES)
    return next(n for n in range(max(1, need), rows + 1) if rows % n == 0)


def _logits(h, w, softcap: float):
    """fp32 logits of h @ w (w cast to h's dtype, accumulated in fp32), soft-capped; and tanh for the backward."""
    z = jnp.einsum("ne,ev->nv", h, w.astype(h.dtype), preferred_element_type=jnp.float32)
    if not softcap:
        return z, None
    t = jnp.tanh(z / softcap)
    return softcap * t, t


def _chunked(x, n: int):
    """[N, ...] -> [n, N/n, ...] with chunk i = rows i, i+n, ...: each device's rows stay on it (as micro_batches)."""
    return x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def head_nll_sum(
    h: Float[Array, "n e"],
    w: Float[Array, "e v"],
    targets: Int[Array, " n"],
    valid: Bool[Array, " n"],
    softcap: float,
    chunks: int,
) -> Float[Array, ""]:
    """sum over valid rows of -log softmax(softcap(h @ w))[target], without keeping the logits."""
    return _head_fwd(h, w, targets, valid, softcap, chunks)[0]


def _head_fwd(h, w, targets, valid, softcap, chunks):
    """The loss and, in the same pass over each chunk of logits, its gradients with respect to h and w.

    The loss is a sum that ends the computation, so its cotangent is a scalar g: the gradients can be formed now
    and scaled by g later. Three matmuls per chunk (logits, dh, dw) and no logits kept, instead of four (logits
    recomputed in the backward pass). Unused gradients (a forward-only call) are removed by XLA.
    """
    w_c = w.astype(h.dtype)

    def chunk(dw, args):
        hc, tc, vc = args
        z, t = _logits(hc, w, softcap)
        lse = jax.nn.logsumexp(z, axis=-1)
        picked = jnp.take_along_axis(z, jnp.maximum(tc, 0)[:, None], axis=-1)[:, 0]
        loss = jnp.sum(jnp.where(vc, lse - picked, 0.0))
        dz = jnp.exp(z - lse[:, None])  # softmax
        dz = dz - (jnp.arange(z.shape[1])[None, :] == tc[:, None])  # - one-hot (fused, no [n, v] one-hot array)
        dz = jnp.where(vc[:, None], dz, 0.0)
        if softcap:
            dz = dz * (1.0 - t * t)  # d(softcap * tanh(z / softcap)) / dz
        dz = dz.astype(h.dtype)
        dh = jnp.einsum("nv,ev->ne", dz, w_c, preferred_element_type=jnp.float32).astype(h.dtype)
        return dw + weight_gradient(hc, dz), (loss, dh)

    xs = (_chunked(h, chunks), _chunked(targets, chunks), _chunked(valid, chunks))
    dw, (losses, dh) = jax.lax.scan(chunk, jnp.zeros(w.shape, jnp.float32), xs)
    dh = dh.swapaxes(0, 1).reshape(h.shape)  # undo _chunked
    return jnp.sum(losses), (dh, dw.astype(w.dtype))


def _head_bwd(softcap, chunks, residuals, g):
    dh, dw = residuals
    return (g * dh).astype(dh.dtype), g * dw, None, None


head_nll_sum.defvjp(_head_fwd, _head_bwd)
