"""A weighted sum of objectives (e.g. DPO + SFT NLL, the RPO/MPO recipes)."""

from __future__ import annotations

from collections.abc import Sequence

from nanocode.core.interfaces import PreferenceBatch, PreferenceObjective
from nanocode.core.kinds import PREFERENCE_OBJECTIVES


@PREFERENCE_OBJECTIVES.register("combined")
class Combined(PreferenceObjective):
    """Weighted sum of objectives: sum_k w_k * loss_k per example; metrics prefixed by each part's index."""

    def __init__(self, objectives: Sequence[PreferenceObjective], weights: Sequence[float] | None = None):
        weights = [1.0] * len(objectives) if weights is None else list(weights)
        if not objectives or len(weights) != len(objectives):
            raise ValueError(f"combined needs one weight per objective, got {len(objectives)} and {len(weights)}")
        if len({o.paired for o in objectives}) != 1:
            raise ValueError("combined cannot mix paired and unpaired objectives")
        self.objectives, self.weights = list(objectives), weights
        self.needs_reference = any(o.needs_reference for o in objectives)
        self.paired = objectives[0].paired
        self.needs_mismatched_kl = any(o.needs_mismatched_kl for o in objectives)

    def __call__(self, batch: PreferenceBatch):
        total, metrics = 0.0, {}
        for i, (w, objective) in enumerate(zip(self.weights, self.objectives)):
            loss, m = objective(batch)
            total = total + w * loss
            name = type(objective).__name__.lower()
            metrics[f"{i}_{name}/loss"] = loss
            metrics.update({f"{i}_{name}/{k}": v for k, v in m.items()})
        return total, metrics
