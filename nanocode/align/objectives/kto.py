"""KTO: unpaired desirable/undesirable completions against a detached, clamped, mismatched KL baseline."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nanocode.align.objectives._common import logratio
from nanocode.core.interfaces import PreferenceBatch, PreferenceObjective
from nanocode.core.kinds import PREFERENCE_OBJECTIVES


@PREFERENCE_OBJECTIVES.register("kto")
class KTO(PreferenceObjective):
    """KTO: lambda_D (1 - sigmoid(beta (r - z))) for desirable, lambda_U (1 - sigmoid(beta (z - r))) for undesirable."""

    paired = False
    needs_mismatched_kl = True

    def __init__(self, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0):
        self.beta, self.desirable_weight, self.undesirable_weight = beta, desirable_weight, undesirable_weight

    def __call__(self, batch: PreferenceBatch):
        if batch.completions is None or batch.desirable is None or batch.mismatched is None:
            raise ValueError("kto needs completions, desirable labels and mismatched-pair log-probs")
        r = logratio(batch.completions)
        # The KL baseline: mean log-ratio of mismatched (prompt, completion) pairs, clamped at 0 and detached so it
        # acts as a reference point, not a training signal.
        z = jax.lax.stop_gradient(jnp.maximum(0.0, jnp.mean(logratio(batch.mismatched))))
        desirable = batch.desirable.astype(bool)
        loss = jnp.where(
            desirable,
            self.desirable_weight * (1.0 - jax.nn.sigmoid(self.beta * (r - z))),
            self.undesirable_weight * (1.0 - jax.nn.sigmoid(self.beta * (z - r))),
        )
        rewards = self.beta * r
        return loss, {"rewards": rewards, "kl": jnp.full_like(r, z), "desirable": desirable.astype(jnp.float32)}
