"""The DPO family against a frozen reference: dpo (sigmoid, cDPO smoothing), ipo, hinge, robust."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nanocode.align.objectives._common import logratio, paired, reward_metrics
from nanocode.core.interfaces import PreferenceBatch, PreferenceObjective
from nanocode.core.kinds import PREFERENCE_OBJECTIVES


@PREFERENCE_OBJECTIVES.register("dpo")
class DPO(PreferenceObjective):
    """DPO: -log sigmoid(beta * delta); label_smoothing > 0 gives conservative DPO (cDPO)."""

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"dpo.label_smoothing must be in [0, 0.5), got {label_smoothing}")
        self.beta, self.label_smoothing = beta, label_smoothing

    def __call__(self, batch: PreferenceBatch):
        chosen, rejected = paired(batch)
        r_w, r_l = logratio(chosen), logratio(rejected)
        z = self.beta * (r_w - r_l)  # beta applied exactly once
        eps = self.label_smoothing
        loss = -(1 - eps) * jax.nn.log_sigmoid(z) - eps * jax.nn.log_sigmoid(-z)
        return loss, reward_metrics(self.beta, r_w, r_l)


@PREFERENCE_OBJECTIVES.register("ipo")
class IPO(PreferenceObjective):
    """IPO: (delta_bar - 1/(2 beta))^2 with length-averaged log-ratios, as TRL (length_normalize=False: nanocode's)."""

    def __init__(self, beta: float = 0.5, length_normalize: bool = True):
        self.beta, self.length_normalize = beta, length_normalize

    def __call__(self, batch: PreferenceBatch):
        chosen, rejected = paired(batch)
        r_w, r_l = logratio(chosen), logratio(rejected)
        if self.length_normalize:
            r_w, r_l = r_w / jnp.maximum(chosen.counts, 1.0), r_l / jnp.maximum(rejected.counts, 1.0)
        loss = (r_w - r_l - 1.0 / (2.0 * self.beta)) ** 2
        return loss, reward_metrics(self.beta, r_w, r_l)


@PREFERENCE_OBJECTIVES.register("hinge")
class Hinge(PreferenceObjective):
    """Hinge (SLiC/RSO): max(0, 1 - beta * delta)."""

    def __init__(self, beta: float = 0.1):
        self.beta = beta

    def __call__(self, batch: PreferenceBatch):
        chosen, rejected = paired(batch)
        r_w, r_l = logratio(chosen), logratio(rejected)
        loss = jnp.maximum(0.0, 1.0 - self.beta * (r_w - r_l))
        return loss, reward_metrics(self.beta, r_w, r_l)


@PREFERENCE_OBJECTIVES.register("robust")
class Robust(PreferenceObjective):
    """Robust DPO: unbiased under label flips with probability label_smoothing in [0, 0.5)."""

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.1):
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"robust.label_smoothing must be in [0, 0.5), got {label_smoothing}")
        self.beta, self.label_smoothing = beta, label_smoothing

    def __call__(self, batch: PreferenceBatch):
        chosen, rejected = paired(batch)
        r_w, r_l = logratio(chosen), logratio(rejected)
        z, eps = self.beta * (r_w - r_l), self.label_smoothing
        loss = (-(1 - eps) * jax.nn.log_sigmoid(z) + eps * jax.nn.log_sigmoid(-z)) / (1 - 2 * eps)
        return loss, reward_metrics(self.beta, r_w, r_l)
