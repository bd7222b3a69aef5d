"""A plugin outside the package: a length-normalised DPO registered by name, no nanocode file changed."""

import jax

from nanocode.core.interfaces import PreferenceObjective
from nanocode.core.registry import register


@register("preference_objective", "ln_dpo")
class LengthNormalisedDPO(PreferenceObjective):
    """DPO on per-token log-ratios: -log sigmoid(beta * (r_w/|y_w| - r_l/|y_l|))."""

    def __init__(self, beta: float = 0.1):
        self.beta = beta

    def __call__(self, batch):
        c, r = batch.chosen, batch.rejected
        delta = (c.policy - c.reference) / c.counts - (r.policy - r.reference) / r.counts
        return -jax.nn.log_sigmoid(self.beta * delta), {}
