"""Greedy completions of fixed prompts: a cheap, human-readable view of training progress.

No KV cache: each new token re-runs the model on a fixed [n, L] buffer (prompts left-aligned, padding to the
right). Causal attention means the padding never influences the positions read, and the fixed shape compiles once.
For the 16 tokens of a progress sample this costs little next to a training step.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nanocode.core.interfaces import Tokenizer

# nanocode's pretraining sample prompts (completed with 16 greedy tokens).
PRETRAIN_PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "The chemical symbol of gold is",
    "The closest planet to the Sun is",
    "The opposite of hot is",
    "The second-last day of the week is",
)


def make_greedy(graphdef: nnx.GraphDef, max_new_tokens: int, mesh: jax.sharding.Mesh | None = None):
    """The jitted `greedy(params, rest, tokens int32[n, L], lengths int32[n]) -> tokens` filling positions
    lengths[i] .. lengths[i] + max_new_tokens - 1 of each row with argmax tokens. With `mesh`, the result is
    replicated on it, so every process can read it (multi-process runs)."""

    def greedy(params, rest, tokens, lengths):
        model = nnx.merge(graphdef, params, rest)
        rows = jnp.arange(tokens.shape[0])

        def body(i, toks):
            pos = lengths + i
            logits = model(toks)
            nxt = jnp.argmax(logits[rows, pos - 1], axis=-1).astype(toks.dtype)
            return toks.at[rows, pos].set(nxt)

        return jax.lax.fori_loop(0, max_new_tokens, body, tokens)

    if mesh is None:
        return jax.jit(greedy)
    return jax.jit(greedy, out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def greedy_complete(
    greedy,
    tokenizer: Tokenizer,
    params,
    rest,
    prompts: Sequence[str],
    max_new_tokens: int,
    *,
    rows_multiple: int = 1,
) -> list[str]:
    """Completions (text after each prompt) of `prompts`; rows padded to a multiple of `rows_multiple` (the
    data-parallel size, so the batch dimension shards evenly)."""
    encoded = [tokenizer.encode(p, bos=True) for p in prompts]
    n = -(-len(encoded) // rows_multiple) * rows_multiple
    width = max(len(e) for e in encoded) + max_new_tokens
    tokens = np.full((n, width), tokenizer.bos_id, np.int32)
    lengths = np.full((n,), 1, np.int32)
    for i, ids in enumerate(encoded):
        tokens[i, : len(ids)] = ids
        lengths[i] = len(ids)
    out = np.asarray(greedy(params, rest, tokens, lengths))
    return [tokenizer.decode(out[i, lengths[i] : lengths[i] + max_new_tokens].tolist()) for i in range(len(encoded))]
