"""Per-sequence log-probabilities and the preference-optimisation train and eval steps.

A sequence's log-prob is the sum, over its completion (loss-mask) tokens, of the log-softmax in fp32. Paired data
goes through ONE forward pass over the [chosen; rejected] rows; the objective gets the per-sequence sums and token
counts and returns per-example losses, whose mean over the batch is the loss. The step computes only what the
objective declares: no reference forward when `needs_reference` is False (nor when the reference log-probs were
precomputed and arrive in the batch as "ref_logps"), and the mismatched-pair forwards only for `needs_mismatched_kl`.

Row layout. A process's paired batch is [chosen; rejected]; with several processes feeding rows the global batch
is `groups` such blocks one after another ([c0; r0; c1; r1; ...]), so rows never move between devices: the
per-sequence log-probs (a few floats) are regrouped instead. Gradient accumulation splits every group's chosen and
rejected rows alike, so each micro-batch holds whole pairs. Losses and metrics are sums over examples, divided by
the batch's example count once at the end: the exact batch mean for any micro-batching.

KTO's KL baseline (the mean mismatched log-ratio) is taken over the whole batch, in a forward-only pass before the
gradient micro-batches; it is detached by the objective, so no gradient flows through it.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, Float, Int

from nanocode.core.interfaces import PreferenceBatch, PreferenceObjective, SequenceLogps
from nanocode.models import scan
from nanocode.train.loss import split_rows, token_nll
from nanocode.train.state import TrainState
from nanocode.train.step import REMAT_POLICIES, jit_with_reference, micro_batches


def sequence_logps(model, tokens: Int[Array, "n t1"], mask: Array) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    """(sum of fp32 log-probs over each row's completion targets, number of those targets)."""
    inputs, targets, valid = split_rows(tokens, mask)
    logp = -token_nll(model(inputs), targets)
    return jnp.sum(jnp.where(valid, logp, 0.0), axis=-1), jnp.sum(valid, axis=-1, dtype=jnp.float32)


def pair_micro_batches(x: jax.Array, n: int, groups: int = 1) -> jax.Array:
    """[groups * 2 * b, ...] rows laid out as `groups` blocks of [chosen; rejected] -> [n, groups * 2 * b/n, ...],
    micro-batch i holding pairs i, i+n, ... of every group, in the same layout."""
    b = x.shape[0] // (2 * groups)
    if x.shape[0] != 2 * groups * b or b % n:
        raise ValueError(f"{x.shape[0]} rows are not {groups} group(s) of 2 x a multiple of {n} micro-batches")
    y = x.reshape(groups, 2, b // n, n, *x.shape[1:])
    return jnp.moveaxis(y, 3, 0).reshape(n, groups * 2 * (b // n), *x.shape[1:])


def split_pairs(v: jax.Array, groups: int = 1) -> tuple[jax.Array, jax.Array]:
    """Per-row values of a paired layout -> (chosen, rejected), aligned pair by pair."""
    v = v.reshape(groups, 2, -1, *v.shape[1:])
    return v[:, 0].reshape(-1, *v.shape[3:]), v[:, 1].reshape(-1, *v.shape[3:])


def _score(seq: SequenceLogps) -> jax.Array:
    """The implicit reward before beta: log-ratio to the reference, or (reference-free) the mean token log-prob."""
    if seq.reference is not None:
        return seq.policy - seq.reference
    return seq.policy / jnp.maximum(seq.counts, 1.0)


class PreferenceLoss:
    """An objective's loss and metrics over a batch, computing only the forward passes the objective needs.

    `forwards` counts the model forward passes traced into the compiled functions, by role ('policy',
    'reference', 'mismatched_policy', 'mismatched_reference'): what a step actually computes.
    """

    def __init__(
        self,
        graphdef: nnx.GraphDef,
        objective: PreferenceObjective,
        *,
        accum_steps: int = 1,
        groups: int = 1,
        precomputed_reference: bool = False,
        micro_sharding: jax.sharding.Sharding | None = None,
        remat: str | None = None,
    ):
        self.graphdef, self.objective = graphdef, objective
        self.accum_steps, self.groups = accum_steps, groups
        self.paired = bool(objective.paired)
        self.needs_reference = bool(objective.needs_reference)
        self.needs_mismatched = bool(objective.needs_mismatched_kl) and not self.paired
        self.precomputed = precomputed_reference and self.needs_reference
        if precomputed_reference and self.needs_mismatched:
            raise ValueError("precomputed reference log-probs cannot serve the batch-dependent mismatched pairs")
        self.micro_sharding, self.remat = micro_sharding, remat
        self.beta = float(getattr(objective, "beta", 1.0))
        self.forwards: collections.Counter[str] = collections.Counter()
        self._counting = True

    # -- pieces -----------------------------------------------------------------------------------------------------
    def logps(self, role: str, params, rest, tokens, mask):
        if self._counting:
            self.forwards[role] += 1  # a Python side effect: runs once per trace
        return sequence_logps(nnx.merge(self.graphdef, params, rest), tokens, mask)

    def examples(self, batch: dict[str, jax.Array]) -> int:
        rows = batch["tokens"].shape[0]
        return rows // 2 if self.paired else rows

    def _split(self, x: jax.Array, n: int) -> jax.Array:
        return pair_micro_batches(x, n, self.groups) if self.paired else micro_batches(x, n)

    def reference(self, ref_params, rest, mb: dict[str, jax.Array]) -> jax.Array | None:
        if not self.needs_reference:
            return None
        if self.precomputed:
            return mb["ref_logps"]
        return jax.lax.stop_gradient(self.logps("reference", ref_params, rest, mb["tokens"], mb["mask"])[0])

    def mismatched(self, params, rest, ref_params, batch: dict[str, jax.Array], n: int) -> SequenceLogps:
        """Forward-only log-probs of the whole batch's mismatched (prompt, other completion) rows."""

        def one(xs):
            tokens, mask = xs
            policy, counts = self.logps("mismatched_policy", params, rest, tokens, mask)
            ref = None
            if self.needs_reference:
                ref = self.logps("mismatched_reference", ref_params, rest, tokens, mask)[0]
            return policy, counts, ref

        tokens, mask = batch["mismatched_tokens"], batch["mismatched_mask"]
        if n == 1:
            policy, counts, ref = one((tokens, mask))
        else:
            out = jax.lax.map(one, (micro_batches(tokens, n), micro_batches(mask, n)))
            # undo the strided split: row j of micro-batch i is row j * n + i
            policy, counts, ref = jax.tree.map(lambda x: x.swapaxes(0, 1).reshape(-1), out)
        return jax.lax.stop_gradient(SequenceLogps(policy, counts, ref))

    def standard_metrics(self, batch: PreferenceBatch) -> dict[str, jax.Array]:
        """What every run logs whatever the objective: implicit rewards (beta x score), margins and accuracy.
        An objective's own metrics of the same names replace these."""
        if self.paired:
            w, lose = _score(batch.chosen), _score(batch.rejected)
            return {
                "rewards/chosen": self.beta * w,
                "rewards/rejected": self.beta * lose,
                "rewards/margins": self.beta * (w - lose),
                "rewards/accuracy": (w > lose).astype(jnp.float32),
                "logps/chosen": batch.chosen.policy,
                "logps/rejected": batch.rejected.policy,
            }
        r = _score(batch.completions)
        z = jnp.mean(_score(batch.mismatched)) if batch.mismatched is not None else 0.0
        desirable = batch.desirable.astype(bool)
        return {
            "rewards/accuracy": jnp.where(desirable, r > z, r < z).astype(jnp.float32),
            "logps/completions": batch.completions.policy,
        }

    def micro(self, params, rest, ref_params, mb: dict[str, jax.Array], mismatched: SequenceLogps | None):
        """(sum of per-example losses, (metric sums, examples)) of one micro-batch."""
        policy, counts = self.logps("policy", params, rest, mb["tokens"], mb["mask"])
        reference = self.reference(ref_params, rest, mb)
        if self.paired:
            (pw, pl), (cw, cl) = split_pairs(policy, self.groups), split_pairs(counts, self.groups)
            rw, rl = split_pairs(reference, self.groups) if reference is not None else (None, None)
            batch = PreferenceBatch(chosen=SequenceLogps(pw, cw, rw), rejected=SequenceLogps(pl, cl, rl))
        else:
            batch = PreferenceBatch(
                completions=SequenceLogps(policy, counts, reference),
                desirable=mb["desirable"],
                mismatched=mismatched,
            )
        losses, metrics = self.objective(batch)
        losses = jnp.asarray(losses, jnp.float32)
        n = losses.shape[0]
        metrics = {**self.standard_metrics(batch), **metrics}
        # per-example metrics sum over examples; a scalar counts once per example (its mean comes back out)
        sums = {k: jnp.mean(jnp.asarray(v, jnp.float32)) * n for k, v in metrics.items()}
        return jnp.sum(losses), sums

    # -- the batch ------------------------------------------------------------------------------------------------
    def accumulate(self, params, rest, ref_params, batch: dict[str, jax.Array], *, grad: bool, accum_steps=None):
        """(gradient of the loss sum or None, loss sum, metric sums) over the batch, in `accum_steps` micro-batches."""
        n = self.accum_steps if accum_steps is None else accum_steps
        mismatched = self.mismatched(params, rest, ref_params, batch, n) if self.needs_mismatched else None
        keys = ["tokens", "mask"] + (["ref_logps"] if self.precomputed else []) + ([] if self.paired else ["desirable"])

        def one(mb):
            if self.micro_sharding is not None:
                for k in ("tokens", "mask"):
                    mb[k] = jax.lax.with_sharding_constraint(mb[k], self.micro_sharding)

            def f(p):
                return self.micro(p, rest, ref_params, mb, mismatched)

            if self.remat is not None:
                f = scan.checkpoint(f, REMAT_POLICIES[self.remat])  # per layer too, in scanned blocks
            if not grad:
                loss_sum, sums = f(params)
                return None, loss_sum, sums
            (loss_sum, sums), grads = jax.value_and_grad(f, has_aux=True)(params)
            return grads, loss_sum, sums

        if n == 1:
            return one({k: batch[k] for k in keys})

        def body(carry, mb):
            grads, loss_sum, sums = one(mb)
            return jax.tree.map(jnp.add, carry, (grads, loss_sum, sums)), None

        # the carry's shapes: the metric names come from tracing one micro-batch abstractly
        micro = {k: self._split(batch[k], n) for k in keys}
        first = jax.tree.map(lambda x: x[0], micro)
        self._counting = False  # an abstract trace, not a forward pass of the step
        try:
            shapes = jax.eval_shape(one, first)
        finally:
            self._counting = True
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        total, _ = jax.lax.scan(body, zeros, micro)
        return total


def make_preference_step(
    loss: PreferenceLoss,
    tx: optax.GradientTransformation,
    *,
    state_shardings: TrainState | None = None,
    ref_shardings: Any = None,
    learning_rate: Callable[[jax.Array], jax.Array] | None = None,
):
    """The jitted `step(state, ref_params, batch) -> (state, metrics)` (state donated; ref_params None when the
    objective needs no reference or it was precomputed). metrics: loss (mean over examples), grad_norm, lr, and
    the mean of every reward metric."""

    def step(state: TrainState, ref_params, batch: dict[str, jax.Array]):
        grads, loss_sum, sums = loss.accumulate(state.params, state.rest, ref_params, batch, grad=True)
        n = loss.examples(batch)
        grads = jax.tree.map(lambda g: g / n, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss_sum / n, "grad_norm": optax.tree.norm(grads), **{k: v / n for k, v in sums.items()}}
        if learning_rate is not None:
            metrics["lr"] = jnp.asarray(learning_rate(state.step), jnp.float32)
        return TrainState(params, state.rest, opt_state, state.step + 1, state.rng), metrics

    return jit_with_reference(step, state_shardings, ref_shardings)


def make_preference_eval(loss: PreferenceLoss):
    """The jitted `evaluate(params, rest, ref_params, batch) -> (loss sum, metric sums)` of one held-out batch
    (no gradient, one micro-batch)."""

    def evaluate(params, rest, ref_params, batch):
        _, loss_sum, sums = loss.accumulate(params, rest, ref_params, batch, grad=False, accum_steps=1)
        return loss_sum, sums

    return jax.jit(evaluate)


def make_reference_logps(graphdef: nnx.GraphDef):
    """The jitted `logps(params, rest, tokens, mask) -> float32[n]`: per-row completion log-probs (precomputing
    the reference)."""

    def logps(params, rest, tokens, mask):
        return sequence_logps(nnx.merge(graphdef, params, rest), tokens, mask)[0]

    return jax.jit(logps)


class ReferenceTable:
    """Precomputed reference log-probs, stored with the examples: keyed by the content of each rendered row (so
    any batching, shuffling or resume finds them), 16-byte digests rather than the rows themselves."""

    def __init__(self):
        self._logps: dict[bytes, float] = {}

    @staticmethod
    def key(tokens: np.ndarray, mask: np.ndarray) -> bytes:
        return hashlib.blake2b(tokens.tobytes() + mask.tobytes(), digest_size=16).digest()

    def __len__(self) -> int:
        return len(self._logps)

    def add(self, tokens: np.ndarray, mask: np.ndarray, logps: np.ndarray) -> None:
        for t, m, lp in zip(tokens, mask, logps):
            self._logps[self.key(t, m)] = float(lp)

    def __contains__(self, row: tuple[np.ndarray, np.ndarray]) -> bool:
        return self.key(*row) in self._logps

    def lookup(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        try:
            return np.asarray([self._logps[self.key(t, m)] for t, m in zip(tokens, mask)], np.float32)
        except KeyError:
            raise KeyError("a batch row has no precomputed reference log-prob (was it rendered differently?)") from None
