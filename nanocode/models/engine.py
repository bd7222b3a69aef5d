"""The inference engine: prefill and decode over a preallocated KV cache, with fixed shapes and sampling.

The cache holds the keys and values of every layer for `batch` sequences of up to `max_len` tokens, preallocated
in the compute dtype, plus each row's fill level `lengths[b]` (on the host). Feeding t new tokens to a row writes
their k/v at positions lengths[b] .. lengths[b]+t-1 and lets them attend over positions 0 .. own position (a causal
mask with a per-row offset), so a conversation's next turn only feeds its new tokens: the history is never encoded
again.

Layout: per layer, keys `[batch * kv_heads, max_len, head_dim]` and values transposed,
`[batch * kv_heads, head_dim, max_len]` (the [layers, batch, max_len, kv_heads, head_dim] cache, arranged for XLA
CPU). Measured on the 2-core CPU (d3/d6, batch 1 and 8), each choice removed a whole-cache copy per layer and step:
separate buffers per layer (slicing a stacked one copies it), heads before time (3.5-9x faster attention reads),
each product contracting its cache block along the minor axis (else XLA transposes the block), and (sequence, head)
folded into one leading axis (a batch axis of size 1 made XLA copy the cache around the update).

Fixed shapes, so nothing recompiles per token or per turn: a decode step is always [batch, 1], and a prefill pads its
tokens to a power-of-two bucket (min_bucket .. max_bucket; longer inputs go in chunks). Padding is harmless: its k/v
land beyond the row's length, where the causal mask hides them until real tokens overwrite them, and writes past
the end of the cache are dropped. The number of compilations is therefore bounded by
(number of buckets + 1) per batch size; `Engine.traces` counts them.

Decoding runs `decode_chunk` steps per call, in one jitted while loop (sampling and per-row stops included), and
the host then yields that block's tokens one at a time. One call and one device-to-host sync per token cost about
0.3 ms on this CPU, about as much as the rest of a d3 decode step; per chunk they are paid once (d3 batch 1:
~1,700 tok/s at one step per call, 2,600-4,100 at 16; d6 +15-20%; benchmarks/decode_cpu_results.md). The loop ends
early once every row has stopped (a stop id, its max_new_tokens, a full cache), so it never decodes past a row's
limit; a row the caller ends mid-chunk (generator.send) was decoded ahead for nothing, and its cache length is set
back to what was yielded (positions beyond a row's length are invisible and get overwritten).

The forward pass reuses the model's own modules (embedding, each block's q/k/v projections, RoPE, QK-norm, MLP,
head) and mirrors `Block.__call__`; a research fork that overrides `Block.__call__` itself must also give the engine
a cached path (it is refused with a clear error rather than silently decoded wrong). A model trained with
GPTConfig.scan_layers is unstacked first (scan.convert): the engine keeps one weight set and one cache per layer,
the layout above, since a decode step compiles quickly anyway. Attention over the cache is
`cached_attention` (the 'xla' implementation's arithmetic on the cache layout), whatever the model trained with.

Weights are cast once to the engine's compute dtype: the model casts its fp32 masters at every use anyway, so the
results are identical, and decode, which is bound by reading the weights, reads half the bytes in bf16. On CPU the
engine computes in fp32 by default, even for a bf16 model: XLA CPU has no fast bf16 matrix-vector product, it
converts every bf16 weight to fp32 in every call (d6 batch-1 decode: 25 tok/s in bf16 at one step per call, 127 at
16 steps per call, as the loop converts once per call; 239 tok/s in fp32).
Pass compute_dtype='bfloat16' for the model's bf16 numerics.

    engine = Engine(model, max_len=1024)
    cache = engine.new_cache(batch=1)
    for column in engine.generate(cache, [prompt_ids], [SamplingParams(0.6, top_k=50)], max_new_tokens=256):
        print(column[0])  # the new token of row 0, or None once the row stopped
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from nanocode.core.errors import ConfigError
from nanocode.models import sampling, scan
from nanocode.models.gpt import GPT, Block, rms_norm
from nanocode.models.sampling import SamplingParams


class ContextFull(ValueError):
    """The tokens to feed do not fit in a row's cache. `needed` and `available` say by how much."""

    def __init__(self, needed: int, available: int):
        super().__init__(f"context full: {needed} tokens to add but only {available} free positions in the cache")
        self.needed, self.available = needed, available


@dataclass
class KVCache:
    """Keys/values of every layer for `batch` rows of up to `max_len` tokens, and how many each row holds.

    The engine replaces `k` and `v` with new arrays at every call (the old buffers are donated to the update).
    """

    k: tuple[Float[Array, "x t d"], ...]  # one buffer per layer; rows x = (sequence, kv head)
    v: tuple[Float[Array, "x d t"], ...]  # values transposed (see cached_attention)
    lengths: np.ndarray  # int32[batch]: tokens of each row already in the cache

    @property
    def batch(self) -> int:
        return len(self.lengths)

    @property
    def max_len(self) -> int:
        return self.k[0].shape[1]

    def free(self, row: int = 0) -> int:
        return self.max_len - int(self.lengths[row])

    def reset(self, rows: Sequence[int] | None = None) -> None:
        """Forget rows (all by default): their old entries become invisible and are overwritten as they refill."""
        if rows is None:
            self.lengths[:] = 0
        else:
            self.lengths[list(rows)] = 0

    def truncate(self, row: int, length: int) -> None:
        """Keep only the first `length` tokens of a row (e.g. to regenerate from an earlier point)."""
        if not 0 <= length <= self.lengths[row]:
            raise ValueError(f"cannot truncate row {row} holding {self.lengths[row]} tokens to {length}")
        self.lengths[row] = length


def cached_attention(
    q: Float[Array, "b s h d"], k: Float[Array, "x t d"], v_t: Float[Array, "x d t"], lengths: Int[Array, " b"]
) -> Float[Array, "b s h d"]:
    """Causal GQA attention of s new queries (at positions lengths[b]...) over one layer's cache, whose rows are
    (sequence, kv head) pairs: x = b * n_kv_head.

    The 'xla' attention's arithmetic (fp32 scores and softmax, 1/sqrt(d) scale, a finite mask value) in the layout
    XLA CPU decodes fastest: each product contracts a contiguous cache block along its minor axis ([t, d] keys over
    d, [d, t] values over t) and no dimension is 1 at batch 1. Other layouts made it copy or transpose the whole
    layer cache at every step (see the module docstring).
    """
    b, s, h, d = q.shape
    x, t = k.shape[0], k.shape[1]
    n = x // b
    g = h // n
    qx = q.reshape(b, s, n, g, d).transpose(0, 2, 3, 1, 4).reshape(x, g * s, d)  # rows (sequence, kv head)
    scores = jnp.einsum("xqd,xtd->xqt", qx, k, preferred_element_type=jnp.float32) / math.sqrt(d)
    q_pos = lengths[:, None] + jnp.arange(s, dtype=jnp.int32)[None, :]  # [b, s]
    q_pos = jnp.broadcast_to(q_pos[:, None, None, :], (b, n, g, s)).reshape(x, g * s)
    visible = jnp.arange(t, dtype=jnp.int32)[None, None, :] <= q_pos[:, :, None]  # [x, g*s, t]
    scores = jnp.where(visible, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("xqt,xdt->xqd", probs.astype(v_t.dtype), v_t, preferred_element_type=jnp.float32)
    return out.reshape(b, n, g, s, d).transpose(0, 3, 1, 2, 4).reshape(b, s, h, d).astype(q.dtype)


def next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class Engine:
    """Batched KV-cache generation for a GPT (any registered subclass that keeps Block's residual structure)."""

    def __init__(
        self,
        model: GPT,
        *,
        max_len: int | None = None,
        min_bucket: int = 16,
        max_bucket: int = 512,
        compute_dtype: str | None = None,
        decode_chunk: int = 16,
    ):
        """`compute_dtype` (default: 'float32' on CPU, the model's own elsewhere) is what the engine computes and
        caches in; see the module docstring for why CPU decodes a bf16 model in fp32. `decode_chunk` is how many
        decode steps one jitted call runs (the streaming granularity of `generate`)."""
        if not (isinstance(decode_chunk, int) and decode_chunk >= 1):
            raise ConfigError(f"Engine: decode_chunk must be an int >= 1, got {decode_chunk!r}")
        if getattr(model.config, "scan_layers", False):  # decode per-layer weights and caches (see the docstring)
            model = scan.convert(model, scan_layers=False)
        for block in model.blocks:
            if type(block).__call__ is not Block.__call__:
                raise ConfigError(
                    f"Engine: {type(block).__name__} overrides Block.__call__, so the engine's cached forward "
                    "(which mirrors Block.__call__) would not match it; give the fork its own cached path"
                )
        if compute_dtype is None:
            compute_dtype = "float32" if jax.default_backend() == "cpu" else model.config.compute_dtype
        self.config = dataclasses.replace(model.config, compute_dtype=compute_dtype)
        self.max_len = int(max_len or model.config.sequence_len)
        self.decode_chunk = decode_chunk
        if self.max_len < 2:
            raise ValueError(f"max_len must be >= 2, got {self.max_len}")
        self.min_bucket = min(next_power_of_two(min_bucket), next_power_of_two(self.max_len))
        self.max_bucket = max(self.min_bucket, min(next_power_of_two(max_bucket), next_power_of_two(self.max_len)))
        _, params, rest = nnx.split(model, nnx.Param, ...)
        # The same modules with the engine's compute dtype (the graph carries the config; the parameters fit as they are).
        config = self.config
        self._graphdef = nnx.split(nnx.eval_shape(lambda: type(model)(config, rngs=nnx.Rngs(0))), nnx.Param, ...)[0]
        self._params = jax.tree.map(lambda p: jnp.asarray(p, config.dtype), params)
        self._rest = rest
        self.traces = 0  # how many times a jitted function was traced (= compiled) so far
        # Donating the cache lets XLA write the new k/v in place instead of copying the whole cache every token.
        self._forward_jit = jax.jit(self._counted(self._forward), donate_argnums=(2, 3))
        self._step_jit = jax.jit(self._counted(self._step), donate_argnums=(2, 3))
        self._decode_jit = jax.jit(self._counted(self._decode), donate_argnums=(2, 3))

    def load_weights(self, model: GPT) -> None:
        """Decode with another model's weights from now on (the same architecture: e.g. the policy after each RL
        step). Nothing recompiles; the weights are copied, so the caller may donate or update its own arrays."""
        if getattr(model.config, "scan_layers", False):
            model = scan.convert(model, scan_layers=False)
        _, params, rest = nnx.split(model, nnx.Param, ...)
        dtype = self.config.dtype
        params = jax.tree.map(lambda p: jnp.array(p, dtype, copy=True), params)

        def shapes(tree):
            return jax.tree.structure(tree), [(p.shape, p.dtype) for p in jax.tree.leaves(tree)]

        if shapes(params) != shapes(self._params):
            raise ValueError("Engine.load_weights: the parameters differ in structure or shape from the engine's")
        self._params, self._rest = params, rest

    # ---------------------------------------------------------------------------------------------- cache
    def new_cache(self, batch: int = 1) -> KVCache:
        c = self.config

        def buffers(shape):
            return tuple(jnp.zeros(shape, c.dtype) for _ in range(c.n_layer))

        k_shape = (batch * c.n_kv_head, self.max_len, c.head_dim)  # rows: (sequence, kv head)
        v_shape = (batch * c.n_kv_head, c.head_dim, self.max_len)  # values transposed: see cached_attention
        return KVCache(buffers(k_shape), buffers(v_shape), np.zeros((batch,), np.int32))

    def cache_bytes(self, batch: int = 1) -> int:
        c = self.config
        return 2 * c.n_layer * batch * self.max_len * c.n_kv_head * c.head_dim * c.dtype.itemsize

    def param_bytes(self) -> int:
        """Bytes of the weights the engine holds (compute dtype)."""
        return sum(p.size * p.dtype.itemsize for p in jax.tree.leaves(self._params))

    # ---------------------------------------------------------------------------------------------- jitted parts
    def _counted(self, fn):
        """fn, counting in self.traces each time it is traced (a Python side effect runs once per compilation)."""

        @functools.wraps(fn)
        def traced(*args, **kwargs):
            self.traces += 1
            return fn(*args, **kwargs)

        return traced

    def _forward(
        self,
        params,
        rest,
        k_cache: tuple[Float[Array, "x t d"], ...],
        v_cache: tuple[Float[Array, "x d t"], ...],
        tokens: Int[Array, "b s"],
        lengths: Int[Array, " b"],
        n_new: Int[Array, " b"],
    ):
        """Feed tokens[b, :n_new[b]] at positions lengths[b]...; returns the caches and the logits [b, v] that
        follow each row's last new token (garbage for rows with n_new == 0)."""
        model = nnx.merge(self._graphdef, params, rest)
        b, s = tokens.shape
        positions = lengths[:, None] + jnp.arange(s, dtype=jnp.int32)[None, :]  # [b, s]
        rows = jnp.arange(b)[:, None]
        x = model.embed(tokens)
        cos, sin = model.rope(positions)
        heads = self.config.n_kv_head
        cache_rows = (rows * heads + jnp.arange(heads)[None, :])[:, None, :]  # [b, 1, n]: (sequence, head) rows
        cache_pos = positions[:, :, None]  # [b, s, 1]
        k_cache, v_cache = list(k_cache), list(v_cache)
        for i, block in enumerate(model.blocks):  # Block.__call__, with the attention going through the cache
            attn = block.attn
            q, k, v = attn.qkv(rms_norm(x), cos, sin)
            # Both index expressions address [b, s, n, d], k's and v's own layout (indexed dims come first).
            # mode="drop": padding that would run past the end of the cache is not written (rather than clamped).
            k_cache[i] = k_cache[i].at[cache_rows, cache_pos].set(k.astype(k_cache[i].dtype), mode="drop")
            v_cache[i] = v_cache[i].at[cache_rows, :, cache_pos].set(v.astype(v_cache[i].dtype), mode="drop")
            x = x + attn.out(cached_attention(q, k_cache[i], v_cache[i], lengths))
            x = x + block.mlp(rms_norm(x))
        last = jnp.clip(n_new - 1, 0, s - 1)
        h = rms_norm(x[jnp.arange(b), last])[:, None, :]  # only the positions whose logits are used
        return tuple(k_cache), tuple(v_cache), model.head(h)[:, 0, :]

    def _step(self, params, rest, k_cache, v_cache, tokens, lengths, n_new, seeds, temperature, top_k, top_p):
        """_forward, then sample the token at position lengths + n_new of each row."""
        k_cache, v_cache, logits = self._forward(params, rest, k_cache, v_cache, tokens, lengths, n_new)
        nxt = sampling.sample(logits, seeds, lengths + n_new, temperature, top_k, top_p)
        return k_cache, v_cache, nxt

    def _decode(
        self,
        params,
        rest,
        k_cache,
        v_cache,
        tokens: Int[Array, " b"],
        lengths: Int[Array, " b"],
        active: Bool[Array, " b"],
        counts: Int[Array, " b"],
        limits: Int[Array, " b"],
        is_stop: Bool[Array, " v"],
        seeds,
        temperature,
        top_k,
        top_p,
    ):
        """Up to decode_chunk decode steps in one call: each feeds the active rows their last token and samples the
        next. Returns the caches and the block [decode_chunk, b] of sampled tokens (-1 where a row was inactive).

        A row stays active, as in `generate`, while its count of yielded tokens is below its limit and its last
        token is not a stop id; the loop ends early when no row is active.
        """
        block = jnp.full((self.decode_chunk, tokens.shape[0]), -1, jnp.int32)

        def more(carry):
            i, active = carry[0], carry[6]
            return (i < self.decode_chunk) & jnp.any(active)

        def step(carry):
            i, k_cache, v_cache, block, tokens, lengths, active, counts = carry
            n_new = active.astype(jnp.int32)
            column = jnp.where(active, tokens, 0)[:, None]  # inactive rows feed a harmless id, hidden past their end
            k_cache, v_cache, logits = self._forward(params, rest, k_cache, v_cache, column, lengths, n_new)
            lengths = lengths + n_new
            nxt = sampling.sample(logits, seeds, lengths, temperature, top_k, top_p)
            block = block.at[i].set(jnp.where(active, nxt, -1))
            counts = counts + n_new
            active = active & (counts < limits) & ~is_stop[nxt]
            return i + 1, k_cache, v_cache, block, nxt, lengths, active, counts

        carry = (jnp.int32(0), k_cache, v_cache, block, tokens, lengths, active, counts)
        _, k_cache, v_cache, block, *_ = jax.lax.while_loop(more, step, carry)
        return k_cache, v_cache, block

    # ---------------------------------------------------------------------------------------------- feeding
    def _chunks(self, cache: KVCache, new_tokens: Sequence[Sequence[int]]):
        """Split each row's new tokens into bucket-padded chunks: yields (tokens [b, bucket], n_new [b])."""
        if len(new_tokens) != cache.batch:
            raise ValueError(f"{len(new_tokens)} rows of tokens for a cache of batch {cache.batch}")
        for row, toks in enumerate(new_tokens):
            if len(toks) > cache.free(row):
                raise ContextFull(len(toks), cache.free(row))
        done = [0] * cache.batch
        while True:
            sizes = [min(len(t) - d, self.max_bucket) for t, d in zip(new_tokens, done)]
            if max(sizes) == 0:
                return
            bucket = max(self.min_bucket, next_power_of_two(max(sizes)))
            chunk = np.zeros((cache.batch, bucket), np.int32)
            for row, (toks, d, n) in enumerate(zip(new_tokens, done, sizes)):
                chunk[row, :n] = toks[d : d + n]
                done[row] += n
            yield chunk, np.asarray(sizes, np.int32)

    def logits(self, cache: KVCache, new_tokens: Sequence[Sequence[int]]) -> np.ndarray:
        """Feed tokens to each row; returns fp32 logits [batch, vocab] after each row's last fed token."""
        out = np.zeros((cache.batch, self.config.vocab_size), np.float32)
        for chunk, n_new in self._chunks(cache, new_tokens):
            cache.k, cache.v, logits = self._forward_jit(
                self._params, self._rest, cache.k, cache.v, chunk, cache.lengths.copy(), n_new
            )
            fed = n_new > 0
            out[fed] = np.asarray(logits)[fed]
            cache.lengths += n_new
        return out

    def feed(self, cache: KVCache, new_tokens: Sequence[Sequence[int]], params: dict[str, np.ndarray]) -> np.ndarray:
        """Feed tokens to each row and sample what follows; returns int32[batch] (-1 for rows fed nothing).

        `params` is `sampling.stack([...])` of one SamplingParams per row.
        """
        out = np.full((cache.batch,), -1, np.int32)
        for chunk, n_new in self._chunks(cache, new_tokens):
            cache.k, cache.v, nxt = self._step_jit(
                self._params, self._rest, cache.k, cache.v, chunk, cache.lengths.copy(), n_new, **params
            )
            fed = n_new > 0
            out[fed] = np.asarray(nxt)[fed]
            cache.lengths += n_new
        return out

    # ---------------------------------------------------------------------------------------------- generation
    def generate(
        self,
        cache: KVCache,
        new_tokens: Sequence[Sequence[int]],
        params: Sequence[SamplingParams] | SamplingParams = sampling.GREEDY,
        *,
        max_new_tokens: int | Sequence[int],
        stop_ids: Sequence[int] = (),
    ) -> Iterator[list[int | None]]:
        """Feed each row its new tokens (appended to what it holds), then sample until every row stops.

        Yields one column per step: the new token of each row, or None for a row that has stopped. A row stops after
        yielding a token in `stop_ids` (the stop token is yielded), after max_new_tokens tokens, or when its cache
        is full. Rows with max_new_tokens 0 take no part (their new tokens are still fed). Tokens are decoded
        `decode_chunk` steps ahead (see the module docstring), so they arrive in bursts of that many.

        `generator.send(rows)` instead of next() also ends the given rows (e.g. on a stop string).

        Afterwards the cache holds every fed token and every yielded token except each row's last one, which was
        sampled but never fed: a conversation feeds it at the start of its next turn. Closing the generator early
        leaves the cache in that same consistent state.
        """
        b = cache.batch
        if isinstance(params, SamplingParams):
            params = [params] * b
        limits = np.broadcast_to(np.asarray(max_new_tokens, np.int64), (b,)).copy()
        if len(params) != b or (limits < 0).any():
            raise ValueError(f"need one SamplingParams and a max_new_tokens >= 0 per row (batch {b})")
        vocab = self.config.vocab_size
        is_stop = np.zeros((vocab,), bool)  # a mask rather than a list: any stop set has the same shape
        is_stop[[i for i in stop_ids if 0 <= i < vocab]] = True
        args = sampling.stack(list(params))
        nxt = self.feed(cache, new_tokens, args)
        # The last yielded token must fit in the cache when fed later: at most `free` tokens per row.
        limits = np.minimum(limits, [cache.free(r) for r in range(b)])
        active = (limits > 0) & (nxt >= 0)
        counts = np.zeros((b,), np.int32)
        block, j = np.zeros((0, b), np.int32), 0  # tokens decoded ahead; block[j:] not yet yielded
        while active.any():
            stop_rows = yield [int(nxt[r]) if active[r] else None for r in range(b)]
            if stop_rows:  # the caller ended these rows (a stop string, a client gone): feed them no more
                active[list(stop_rows)] = False
            counts += active
            active &= (counts < limits) & ~is_stop[nxt]
            if not active.any():
                return
            if j == len(block):  # decode the next chunk: the device applies the same stop rules per step
                start = cache.lengths.copy()  # the lengths `block` was decoded from
                state = (nxt, start, active.copy(), counts.copy(), limits.astype(np.int32), is_stop)
                cache.k, cache.v, ahead = self._decode_jit(self._params, self._rest, cache.k, cache.v, *state, **args)
                block, j = np.asarray(ahead), 0
            nxt = block[j]
            j += 1
            # The cache holds what was yielded except each row's last token (the device may have fed more).
            cache.lengths[active] = start[active] + j
