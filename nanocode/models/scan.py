"""Scan over layers: the n_layer transformer blocks as ONE block module with stacked weights, run in a loop.

Unrolled, XLA compiles every block separately, so compile time grows with depth; scanned, it compiles one block body
and loops it (a `jax.lax.scan`), so compile time stays roughly flat. The arithmetic is the same, block after block.

    GPTConfig.scan_layers = True

The blocks are created by `nnx.vmap` over split random keys: every parameter gets a leading axis with the logical name
'layers' (c_q is [n_layer, n_embd, heads], logical axes ('layers', 'embed', 'heads')), mapped to no mesh axis by the
default rules (every device holds its shard of every layer, as unscanned). `nnx.scan` runs them, taking 'layers' off the
metadata inside the body so a block sees its usual 2-D weights.

Remat must wrap the scan body, per layer: a checkpoint around the whole loss alone makes the backward pass recompute
the entire scan first, stacking every layer's activations ([t, t] attention probabilities included), which saves
nothing. Trainers therefore checkpoint with `scan.checkpoint(fn, policy)`: jax.checkpoint(fn), and while fn is traced
every scanned block body is checkpointed with the same policy (a no-op for unscanned models).

The two layouts of a model's state differ only under `blocks`:

    unscanned  blocks/<i>/attn/c_q  [e, h*d]       scanned  blocks/attn/c_q  [n_layer, e, h*d]

`stack_blocks` / `unstack_blocks` convert a pure-dict state (`nnx.to_pure_dict`, or what orbax restores without a
target) between them, and `convert(model, scan_layers=...)` returns the same model in the other layout. The same seed
initialises the two layouts differently (split keys vs one key stream), with the same distributions.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nanocode.core import sharding as S

# What nnx.vmap/nnx.scan add to (and take off) every parameter's logical axis names.
LAYERS_METADATA = {nnx.PARTITION_NAME: S.LAYERS}


def stacked_blocks(make_block: Callable[[nnx.Rngs], nnx.Module], n_layer: int, rngs: nnx.Rngs) -> nnx.Module:
    """One module holding `n_layer` blocks' parameters along a leading 'layers' axis (`make_block(rngs)` builds one)."""

    @nnx.split_rngs(splits=n_layer)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata=LAYERS_METADATA)
    def make(rngs: nnx.Rngs) -> nnx.Module:
        return make_block(rngs)

    return make(rngs)


# The remat policy of the scan body while a `checkpoint`-ed function is traced (None: no per-layer remat).
_body_policy: contextvars.ContextVar[Callable | None] = contextvars.ContextVar("scan_body_policy", default=None)


@contextlib.contextmanager
def _per_layer(policy: Callable) -> Iterator[None]:
    token = _body_policy.set(policy)
    try:
        yield
    finally:
        _body_policy.reset(token)


def checkpoint(fn: Callable, policy: Callable) -> Callable:
    """jax.checkpoint(fn, policy=policy) that also checkpoints each scanned layer with the policy (see above)."""
    checkpointed = jax.checkpoint(fn, policy=policy)

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with _per_layer(policy):
            return checkpointed(*args, **kwargs)

    return traced


def run_blocks(step: Callable[[nnx.Module, jax.Array], jax.Array], blocks: nnx.Module, x: jax.Array) -> jax.Array:
    """x after every layer of stacked `blocks` in order: `step(block, x)` scanned over the 'layers' axis."""

    def body(x: jax.Array, block: nnx.Module) -> jax.Array:
        return step(block, x)

    policy = _body_policy.get()
    if policy is not None:  # the backward pass then recomputes one layer at a time
        body = nnx.remat(body, policy=policy)
    scanned = nnx.scan(body, in_axes=(nnx.Carry, 0), out_axes=nnx.Carry, transform_metadata=LAYERS_METADATA)
    return scanned(x, blocks)


# ---------------------------------------------------------------------------------------------------- layouts
def _layer_keys(blocks: Mapping) -> list:
    """The layer indices of an unscanned `blocks` mapping, in order (pure dicts key them by int, orbax by str)."""
    return sorted(blocks, key=int)


def is_stacked(state: Mapping) -> bool:
    """Whether a pure-dict model state holds its blocks stacked (scanned) rather than one entry per layer."""
    blocks = state.get("blocks", {})
    return not all(str(k).isdigit() for k in blocks)


def stack_blocks(state: Mapping) -> dict:
    """An unscanned pure-dict state (blocks/<i>/...) in the scanned layout (blocks/... with a leading layer axis)."""
    if is_stacked(state):
        return dict(state)
    layers = [state["blocks"][k] for k in _layer_keys(state["blocks"])]
    return {**state, "blocks": jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}


def unstack_blocks(state: Mapping) -> dict:
    """A scanned pure-dict state (blocks/... stacked) in the unscanned layout (blocks/<i>/...)."""
    if not is_stacked(state):
        return dict(state)
    n_layer = jax.tree.leaves(state["blocks"])[0].shape[0]
    return {**state, "blocks": {i: jax.tree.map(lambda x, i=i: x[i], state["blocks"]) for i in range(n_layer)}}


def convert(model: nnx.Module, *, scan_layers: bool) -> nnx.Module:
    """The same model (same weights, same class) with its blocks stacked (scan_layers=True) or one per layer."""
    config: Any = model.config
    if config.scan_layers == scan_layers:
        return model
    target_config = dataclasses.replace(config, scan_layers=scan_layers)
    # The target's structure and metadata (logical axes with or without 'layers'), then the weights poured in.
    graphdef, state = nnx.split(nnx.eval_shape(lambda: type(model)(target_config, rngs=nnx.Rngs(0))))
    pure = nnx.to_pure_dict(nnx.state(model))
    nnx.replace_by_pure_dict(state, stack_blocks(pure) if scan_layers else unstack_blocks(pure))
    return nnx.merge(graphdef, state)
