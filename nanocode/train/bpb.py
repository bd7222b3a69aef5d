"""Bits per byte: a validation loss that does not depend on the tokenizer's vocabulary.

bpb = (sum of per-token NLL in nats over counted targets) / (ln 2 x sum of the UTF-8 bytes of those targets),
where a target counts if it is valid (mask, id >= 0) and is not a special token (0 bytes in the tokenizer's
`token_bytes` table) — nanochat's definition, so numbers compare across vocab sizes and with nanocode's
`fwe_bpb` / `sv2_bpb`. Sums are taken per batch on device and added up on the host in float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Int

from nanocode.train.loss import split_rows, token_nll


def bpb_sums(
    model, tokens: Int[Array, "b t1"], mask: Array | None, token_bytes: Int[Array, " v"]
) -> tuple[Array, Array]:
    """(nats, bytes) summed over the counted targets of a batch."""
    inputs, targets, valid = split_rows(tokens, mask)
    nbytes = jnp.where(valid, token_bytes[jnp.maximum(targets, 0)], 0)
    nll = token_nll(model(inputs), targets)
    return jnp.sum(jnp.where(nbytes > 0, nll, 0.0)), jnp.sum(nbytes, dtype=jnp.float32)


def make_eval_step(
    graphdef: nnx.GraphDef,
    token_bytes: np.ndarray,
    *,
    params_shardings=None,
    rest_shardings=None,
    batch_sharding: jax.sharding.Sharding | None = None,
):
    """The jitted `eval_step(params, rest, batch) -> (nats, bytes)`; batch as the train step's."""
    table = jnp.asarray(token_bytes, jnp.int32)

    def eval_step(params, rest, batch):
        model = nnx.merge(graphdef, params, rest)
        return bpb_sums(model, batch["tokens"], batch.get("mask"), table)

    if batch_sharding is None:
        return jax.jit(eval_step)
    replicated = jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())
    return jax.jit(
        eval_step,
        in_shardings=(params_shardings, rest_shardings, batch_sharding),
        out_shardings=(replicated, replicated),
    )


def bits_per_byte(nats: float, nbytes: float) -> float:
    return nats / (math.log(2) * nbytes) if nbytes > 0 else float("nan")


def evaluate_bpb(eval_step, params, rest, batches: Iterable[dict[str, jax.Array]]) -> float:
    """bpb over all `batches` (device arrays laid out for `eval_step`)."""
    pending = [eval_step(params, rest, batch) for batch in batches]  # dispatch all, then read back once
    nats = sum(float(n) for n, _ in pending)
    nbytes = sum(float(b) for _, b in pending)
    return bits_per_byte(nats, nbytes)
