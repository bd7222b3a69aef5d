"""Next-token cross-entropy as *sums* plus valid-token counts, so any number of micro-batches and devices combine
into an exact per-token mean (sum of losses / total valid tokens), never a mean of means.

A target is valid where its loss-mask entry is non-zero and its id is >= 0 (nanocode marks ignored targets -1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


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
    nll = token_nll(model(inputs), targets)
    return jnp.sum(jnp.where(valid, nll, 0.0)), jnp.sum(valid, dtype=jnp.float32)
