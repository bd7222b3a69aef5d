"""Reference-free objectives: SimPO, ORPO, and plain SFT (NLL on the chosen completion)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nanocode.align.objectives._common import mean_logp, paired, reward_metrics
from nanocode.core.interfaces import PreferenceBatch, PreferenceObjective
from nanocode.core.kinds import PREFERENCE_OBJECTIVES


@PREFERENCE_OBJECTIVES.register("simpo")
class SimPO(PreferenceObjective):
    """SimPO: -log sigmoid(beta (mean logp_w - mean logp_l) - gamma), no reference model."""

    needs_reference = False

    def __init__(self, beta: float = 2.0, gamma: float = 0.5, label_smoothing: float = 0.0):
        self.beta, self.gamma, self.label_smoothing = beta, gamma, label_smoothing

    def __call__(self, batch: PreferenceBatch):
        chosen, rejected = paired(batch)
        lw, ll = mean_logp(chosen), mean_logp(rejected)
        z, eps = self.beta * (lw - ll) - self.gamma, self.label_smoothing
        loss = -(1 - eps) * jax.nn.log_sigmoid(z) - eps * jax.nn.log_sigmoid(-z)
        return loss, reward_metrics(self.beta, lw, ll)


def log1mexp(x):
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2."""
    x = jnp.minimum(x, -1e-6)
    return jnp.where(x > -jnp.log(2.0), jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


@PREFERENCE_OBJECTIVES.register("orpo")
class ORPO(PreferenceObjective):
    """ORPO: NLL(chosen) - lambda * log sigmoid(log-odds ratio), with token-averaged log-probs."""

    needs_reference = False

    def __init__(self, beta: float = 0.1):
        self.beta = beta

    def __call__(self, batch: PreferenceBatch):
        chosen, rejected = paired(batch)
        lw, ll = mean_logp(chosen), mean_logp(rejected)
        log_odds = (lw - ll) - (log1mexp(lw) - log1mexp(ll))
        nll = -lw  # completion tokens only (TRL also counts the prompt by default; our prompts are never trained)
        loss = nll - self.beta * jax.nn.log_sigmoid(log_odds)
        metrics = reward_metrics(self.beta, lw, ll)
        metrics.update({"nll": nll, "log_odds": log_odds})
        return loss, metrics


@PREFERENCE_OBJECTIVES.register("sft")
class SFT(PreferenceObjective):
    """Token-mean NLL of the chosen completion (the RPO/MPO term to add to a preference loss via `combined`)."""

    needs_reference = False

    def __call__(self, batch: PreferenceBatch):
        chosen, _ = paired(batch)
        nll = -mean_logp(chosen)
        return nll, {"nll": nll}
