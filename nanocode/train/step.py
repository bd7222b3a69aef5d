"""The functional train step: one `jax.jit` over (TrainState, batch) with explicit shardings and a donated state.

The model is `nnx.split` once, outside, into a static graph definition and array state; the step merges them back
inside the trace, so what is compiled is a pure function of arrays (no NNX object bookkeeping per call).

Gradient accumulation scans over micro-batches. Each micro-batch contributes *sums* (of token losses, of gradients
of that sum, of valid tokens); the step divides by the total valid count once at the end, so the loss and gradient
are the exact per-token mean over every valid target of the batch, on any mesh, for any micro-batching, with loss
masks (SFT) or without (pretraining). A micro-batch without valid tokens adds zeros.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from nanocode.models import scan
from nanocode.models.gpt import DENSE_OUTPUT
from nanocode.train.loss import loss_sums
from nanocode.train.state import TrainState

# (model, tokens [b, T+1], mask [b, T+1] | None) -> (sum of token losses, valid tokens)
LossFn = Callable[[nnx.Module, jax.Array, jax.Array | None], tuple[jax.Array, jax.Array]]

# Rematerialisation of the forward pass in the backward pass, by name (None: keep every activation).
# 'dots' keeps only the outputs of weight matmuls (the dense layers, by name since their custom VJP hides the dot;
# other dots without batch dimensions) and recomputes the rest — norms, RoPE, activations and the [t, t] attention
# scores, which dominate memory at long sequence lengths.
REMAT_POLICIES = {
    "dots": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
        jax.checkpoint_policies.save_only_these_names(DENSE_OUTPUT),
    )
}


def micro_batches(x: jax.Array, n: int) -> jax.Array:
    """[B, ...] -> [n, B/n, ...], micro-batch i holding rows i, i+n, i+2n, ...

    Strided rather than contiguous: each device's contiguous block of rows (batch-sharded) then holds an equal share
    of every micro-batch, so the split moves no data between devices. Which rows form a micro-batch does not change
    the result: losses and gradients are sums.
    """
    if x.shape[0] % n:
        raise ValueError(f"batch of {x.shape[0]} rows does not split into {n} micro-batches")
    return x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1)


def accumulate(
    graphdef: nnx.GraphDef,
    params: Any,
    rest: Any,
    batch: dict[str, jax.Array],
    accum_steps: int,
    loss_fn: LossFn = loss_sums,
    micro_sharding: jax.sharding.Sharding | None = None,
    remat: str | None = None,
    grad_shardings: Any = None,
) -> tuple[Any, jax.Array, jax.Array]:
    """(gradient sum, loss sum, valid-token count) over the batch, scanning `accum_steps` micro-batches.

    `grad_shardings` (the parameters' shardings) keeps each micro-batch's gradient and the running sum laid out
    like the parameters: with FSDP that is a reduce-scatter per micro-batch into a 1/N-sized accumulator, rather
    than a full-sized gradient on every device.
    """

    def laid_out(tree):
        if grad_shardings is None:
            return tree
        return jax.tree.map(jax.lax.with_sharding_constraint, tree, grad_shardings)

    def sums(p, tokens, mask):
        return loss_fn(nnx.merge(graphdef, p, rest), tokens, mask)

    if remat is not None:  # also per layer inside scanned blocks (GPTConfig.scan_layers)
        sums = scan.checkpoint(sums, REMAT_POLICIES[remat])
    grad_fn = jax.value_and_grad(sums, has_aux=True)

    def one(tokens, mask):
        if micro_sharding is not None:
            tokens = jax.lax.with_sharding_constraint(tokens, micro_sharding)
            mask = None if mask is None else jax.lax.with_sharding_constraint(mask, micro_sharding)
        (loss_sum, count), grads = grad_fn(params, tokens, mask)
        return laid_out(grads), loss_sum, count

    tokens, mask = batch["tokens"], batch.get("mask")
    if accum_steps == 1:
        return one(tokens, mask)

    def body(carry, xs):
        grad_acc, loss_acc, count_acc = carry
        grads, loss_sum, count = one(*xs)
        return (jax.tree.map(jnp.add, grad_acc, grads), loss_acc + loss_sum, count_acc + count), None

    zeros = laid_out(jax.tree.map(jnp.zeros_like, params))
    xs = (micro_batches(tokens, accum_steps), None if mask is None else micro_batches(mask, accum_steps))
    (grads, loss_sum, count), _ = jax.lax.scan(body, (zeros, jnp.float32(0), jnp.float32(0)), xs)
    return grads, loss_sum, count


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    *,
    accum_steps: int = 1,
    state_shardings: TrainState | None = None,
    batch_sharding: jax.sharding.Sharding | None = None,
    loss_fn: LossFn = loss_sums,
    learning_rate: Callable[[jax.Array], jax.Array] | None = None,
    remat: str | None = None,
):
    """The jitted `step(state, batch) -> (state, metrics)`; `batch` is {"tokens": int32[B, T+1]} plus, for loss
    masking, "mask": int[B, T+1] (mask[:, t+1] != 0 keeps target t). The state argument is donated.

    metrics: loss (per-token mean over valid targets), grad_norm (of that mean's gradient), valid_tokens, and lr
    when `learning_rate(step)` is given. `remat` names a policy of REMAT_POLICIES.
    """
    if remat is not None and remat not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat!r} (known: {', '.join(REMAT_POLICIES)})")

    def step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
        grads, loss_sum, count = accumulate(
            graphdef,
            state.params,
            state.rest,
            batch,
            accum_steps,
            loss_fn,
            batch_sharding,
            remat,
            None if state_shardings is None else state_shardings.params,
        )
        denom = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss_sum / denom, "grad_norm": optax.tree.norm(grads), "valid_tokens": count}
        if learning_rate is not None:
            metrics["lr"] = jnp.asarray(learning_rate(state.step), jnp.float32)
        new_state = TrainState(params, state.rest, opt_state, state.step + 1, state.rng)
        return new_state, metrics

    if state_shardings is None:
        return jax.jit(step, donate_argnums=0)
    replicated = jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())
    return jax.jit(
        step,
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )


def jit_with_reference(step: Callable, state_shardings: Any, ref_shardings: Any) -> Callable:
    """`jax.jit` of a `step(state, ref_params, batch)` (preference and RL steps: a frozen reference model rides
    along), the state donated; with shardings, the state keeps its layout and the metrics come back replicated."""
    if state_shardings is None:
        return jax.jit(step, donate_argnums=0)
    mesh = jax.tree.leaves(state_shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))[0].mesh
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.jit(
        step,
        in_shardings=(state_shardings, ref_shardings, None),  # the batch keeps the layout shard_batch gave it
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )
