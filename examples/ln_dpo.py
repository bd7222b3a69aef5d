"""A preference objective as a plugin: length-normalised DPO, registered as `ln_dpo`; no nanocode file changed.

An objective gets a `PreferenceBatch` (per sequence: summed log-probs of the policy and the frozen reference, and
token counts, for the chosen and the rejected side) and returns (per-pair losses, extra metrics to log). Select it
with `Alignment.objective = @ln_dpo()` after an `import examples.ln_dpo` line in the gin file (or --plugin).
"""

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
