"""The policy-gradient train step of the RL stage: per-token log-probs of sampled episodes, an `RLObjective`'s
per-token losses, and one optimizer step.

A batch is {"tokens": int[B, T+1], "mask": int[B, T+1], "advantages": float[B]} (mask[:, t+1] != 0: target t is a
token the policy sampled itself). The loss is the objective's per-token loss summed over every such token of the
batch and divided by their number once at the end (token-level normalisation, over the model's own tokens only:
prompts, tool results and padding weigh nothing), so any micro-batching gives the same loss and gradient. The
per-token metrics (the objective's, and the policy's entropy) are averaged the same way.

With a KL penalty the frozen reference's token log-probs come from a second forward pass over the same rows, with
the reference parameters (never updated, no gradient).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jaxtyping import Array, Float, Int

from nanocode.core.interfaces import RLBatch, RLObjective
from nanocode.models import scan
from nanocode.train.loss import split_rows
from nanocode.train.state import TrainState
from nanocode.train.step import REMAT_POLICIES, jit_with_reference, micro_batches


def token_logps(model, tokens: Int[Array, "b t1"], mask: Array) -> tuple[Float[Array, "b t"], ...]:
    """(fp32 log-prob of each target, 1.0 where the target is the policy's own token, entropy at each position)."""
    inputs, targets, valid = split_rows(tokens, mask)
    logits = model(inputs).astype(jnp.float32)
    logp_all = jax.nn.log_softmax(logits, axis=-1)
    logps = jnp.take_along_axis(logp_all, jnp.maximum(targets, 0)[..., None], axis=-1)[..., 0]
    probs = jax.lax.stop_gradient(jnp.exp(logp_all))
    entropy = -jnp.sum(probs * jax.lax.stop_gradient(logp_all), axis=-1)
    return logps, valid.astype(jnp.float32), entropy


class RLLoss:
    """An RLObjective's loss sum and metric sums over a batch, in `accum_steps` micro-batches."""

    def __init__(
        self,
        graphdef: nnx.GraphDef,
        objective: RLObjective,
        *,
        accum_steps: int = 1,
        remat: str | None = None,
        micro_sharding: jax.sharding.Sharding | None = None,
    ):
        self.graphdef, self.objective = graphdef, objective
        self.accum_steps, self.remat, self.micro_sharding = accum_steps, remat, micro_sharding

    def micro(self, params, rest, ref_params, mb: dict[str, jax.Array]):
        """(sum of masked token losses, {metric: masked sum}) of one micro-batch."""
        logps, mask, entropy = token_logps(nnx.merge(self.graphdef, params, rest), mb["tokens"], mb["mask"])
        ref = None
        if self.objective.needs_reference:
            ref_model = nnx.merge(self.graphdef, jax.lax.stop_gradient(ref_params), rest)
            ref = jax.lax.stop_gradient(token_logps(ref_model, mb["tokens"], mb["mask"])[0])
        batch = RLBatch(logps=logps, mask=mask, advantages=mb["advantages"].astype(jnp.float32), ref_logps=ref)
        losses, metrics = self.objective(batch)
        metrics = {**metrics, "entropy": entropy}
        sums = {
            k: jnp.sum(jnp.broadcast_to(jnp.asarray(v, jnp.float32), mask.shape) * mask) for k, v in metrics.items()
        }
        sums["tokens"] = jnp.sum(mask)
        return jnp.sum(losses * mask), sums

    def accumulate(self, params, rest, ref_params, batch: dict[str, jax.Array]):
        """(gradient of the loss sum, loss sum, metric sums incl. "tokens") over the whole batch."""

        def f(p, mb):
            return self.micro(p, rest, ref_params, mb)

        if self.remat is not None:
            f = scan.checkpoint(f, REMAT_POLICIES[self.remat])
        grad_fn = jax.value_and_grad(f, has_aux=True)

        def one(mb):
            if self.micro_sharding is not None:
                mb = {
                    **mb,
                    **{k: jax.lax.with_sharding_constraint(mb[k], self.micro_sharding) for k in ("tokens", "mask")},
                }
            (loss_sum, sums), grads = grad_fn(params, mb)
            return grads, loss_sum, sums

        keys = ("tokens", "mask", "advantages")
        if self.accum_steps == 1:
            return one({k: batch[k] for k in keys})
        micro = {k: micro_batches(batch[k], self.accum_steps) for k in keys}
        shapes = jax.eval_shape(one, jax.tree.map(lambda x: x[0], micro))
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def body(carry, mb):
            return jax.tree.map(jnp.add, carry, one(mb)), None

        total, _ = jax.lax.scan(body, zeros, micro)
        return total


def make_rl_step(
    loss: RLLoss,
    tx: optax.GradientTransformation,
    *,
    state_shardings: TrainState | None = None,
    ref_shardings: Any = None,
    learning_rate: Callable[[jax.Array], jax.Array] | None = None,
):
    """The jitted `step(state, ref_params, batch) -> (state, metrics)` (state donated; ref_params None without a KL
    penalty). metrics: loss, grad_norm, lr, policy_tokens, and the token mean of each per-token metric (entropy, kl,
    pg_loss, ...)."""

    def step(state: TrainState, ref_params, batch: dict[str, jax.Array]):
        grads, loss_sum, sums = loss.accumulate(state.params, state.rest, ref_params, batch)
        n = jnp.maximum(sums["tokens"], 1.0)
        grads = jax.tree.map(lambda g: g / n, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {k: v / n for k, v in sums.items() if k != "tokens"}
        metrics.update(loss=loss_sum / n, grad_norm=optax.tree.norm(grads), policy_tokens=sums["tokens"])
        if learning_rate is not None:
            metrics["lr"] = jnp.asarray(learning_rate(state.step), jnp.float32)
        return TrainState(params, state.rest, opt_state, state.step + 1, state.rng), metrics

    return jit_with_reference(step, state_shardings, ref_shardings)
