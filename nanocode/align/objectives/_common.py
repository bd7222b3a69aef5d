"""Shared pieces of the objectives: log-ratios and the standard reward metrics."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from nanocode.core.interfaces import PreferenceBatch, SequenceLogps


def logratio(seq: SequenceLogps) -> Float[Array, " n"]:
    """r = log pi(y|x) - log pi_ref(y|x), summed over completion tokens."""
    if seq.reference is None:
        raise ValueError("this objective needs reference log-probs (needs_reference=True) but got none")
    return seq.policy - seq.reference


def mean_logp(seq: SequenceLogps, *, of_reference: bool = False) -> Float[Array, " n"]:
    """Token-averaged log-prob of the completion (length normalisation); a count of 0 gives 0, not NaN."""
    total = seq.reference if of_reference else seq.policy
    return total / jnp.maximum(seq.counts, 1.0)


def paired(batch: PreferenceBatch) -> tuple[SequenceLogps, SequenceLogps]:
    if batch.chosen is None or batch.rejected is None:
        raise ValueError("a paired objective needs chosen and rejected log-probs")
    return batch.chosen, batch.rejected


def reward_metrics(beta: float, chosen_score: Array, rejected_score: Array) -> dict[str, Array]:
    """TRL's logged quantities: rewards = beta * score, margins, and accuracy (chosen scored above rejected)."""
    return {
        "rewards/chosen": beta * chosen_score,
        "rewards/rejected": beta * rejected_score,
        "rewards/margins": beta * (chosen_score - rejected_score),
        "rewards/accuracy": (chosen_score > rejected_score).astype(jnp.float32),
    }
