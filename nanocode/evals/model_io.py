"""What the evals need from a loaded model: sequence scores from its logits (CORE) and batched generation.

`make_scorer(model)` is core.evaluate's Scorer: each sequence's per-position next-token cross-entropy and argmax,
from one forward over a batch of sequences padded to a power-of-two length bucket (fixed batch rows too, so the
compiles are bounded by the buckets), with an fp32 log-softmax. A sequence longer than `max_len` keeps its last
`max_len` tokens (the scored continuation is at the end); positions cut off score +inf / -1.

`generate(engine, prompts, ...)` runs token prompts as the rows of one KV cache until each row hits a stop id, its
token budget, or `should_end(row, token)` says so (a stop sequence in its text).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from nanocode.models.engine import Engine, next_power_of_two
from nanocode.models.sampling import SamplingParams, argmax

MIN_BUCKET = 16


def make_scorer(
    model: nnx.Module, *, batch_size: int = 8, max_len: int | None = None
) -> Callable[[Sequence[Sequence[int]]], list[tuple[np.ndarray, np.ndarray]]]:
    """core.evaluate's scorer over `model`'s logits (see the module docstring)."""
    graphdef, state = nnx.split(model)
    max_len = int(max_len or model.config.sequence_len)

    @jax.jit
    def forward(state, tokens: Int[Array, "b t"]) -> tuple[Float[Array, "b t1"], Int[Array, "b t1"]]:
        logits = nnx.merge(graphdef, state)(tokens)[:, :-1].astype(jnp.float32)
        logp = jax.nn.log_softmax(logits, axis=-1)
        ce = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
        return ce, argmax(logits.reshape(-1, logits.shape[-1])).reshape(logits.shape[:2])

    def scorer(sequences: Sequence[Sequence[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for at in range(0, len(sequences), batch_size):
            chunk = [list(s) for s in sequences[at : at + batch_size]]
            rows = [s[-max_len:] for s in chunk]
            width = max(len(r) for r in rows)
            width = max(width, min(max(MIN_BUCKET, next_power_of_two(width)), max_len))
            tokens = np.zeros((batch_size, width), np.int32)
            for i, r in enumerate(rows):
                tokens[i, : len(r)] = r
            ce, best = jax.device_get(forward(state, tokens))
            for i, (seq, r) in enumerate(zip(chunk, rows)):
                cut = len(seq) - len(r)
                n = len(r) - 1
                out.append(
                    (
                        np.concatenate([np.full(cut, np.inf, np.float32), ce[i, :n]]),
                        np.concatenate([np.full(cut, -1, np.int32), best[i, :n].astype(np.int32)]),
                    )
                )
        return out

    return scorer


def generate(
    engine: Engine,
    prompts: Sequence[Sequence[int]],
    params: Sequence[SamplingParams],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    should_end: Callable[[int, int], bool] | None = None,
) -> list[list[int] | None]:
    """Each prompt's generated ids (the stop id included), or None for a prompt that leaves no room in the cache."""
    fits = [i for i, p in enumerate(prompts) if 0 < len(p) < engine.max_len]
    out: list[list[int] | None] = [None] * len(prompts)
    if not fits:
        return out
    cache = engine.new_cache(len(fits))
    limits = [min(max_new_tokens, engine.max_len - len(prompts[i])) for i in fits]
    for i in fits:
        out[i] = []
    gen = engine.generate(
        cache, [prompts[i] for i in fits], [params[i] for i in fits], max_new_tokens=limits, stop_ids=stop_ids
    )
    try:
        column = next(gen)
        while True:
            ended = []
            for row, token in enumerate(column):
                if token is None:
                    continue
                out[fits[row]].append(token)
                if should_end is not None and should_end(fits[row], token):
                    ended.append(row)
            column = gen.send(ended) if ended else next(gen)
    except StopIteration:
        pass
    finally:
        gen.close()
    return out
