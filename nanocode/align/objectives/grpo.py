"""GRPO: group-relative policy gradient over on-policy episodes, with an optional KL penalty to a frozen reference.

Each task is sampled `samples` times; an episode's advantage is its reward minus the mean reward of its group (and,
with scale_by_std, divided by the group's standard deviation + eps). The loss of each of the policy's own tokens is
the REINFORCE surrogate -A * log pi(token), plus kl_coef times the k3 estimator of KL(pi || ref) at that token,
exp(ref - logp) - (ref - logp) - 1 (non-negative, unbiased; Schulman's "Approximating KL divergence").

Strictly on-policy (one optimizer step per sampled batch), so there is no importance ratio to clip: its value would
be 1 and its gradient that of log pi. Mean-only advantages are the default, as nanochat's GRPO: dividing by the
group's std reweights tasks by how unanimous their samples were (a task solved once in G gets a larger push than one
solved half the time), a difficulty bias (Dr. GRPO, Liu et al. 2025) that a small batch of binary rewards makes
noisy; a group whose samples all got the same reward contributes nothing either way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nanocode.core.interfaces import RLBatch, RLObjective
from nanocode.core.kinds import RL_OBJECTIVES


def group_advantages(rewards: np.ndarray, *, scale_by_std: bool = False, eps: float = 1e-4) -> np.ndarray:
    """float[groups, samples]: each reward minus its group's mean (over its group's std + eps when scaling)."""
    rewards = np.asarray(rewards, np.float32)
    centred = rewards - rewards.mean(axis=1, keepdims=True)
    if scale_by_std:
        centred = centred / (rewards.std(axis=1, keepdims=True) + eps)
    return centred.astype(np.float32)


def k3(logps: jax.Array, ref_logps: jax.Array) -> jax.Array:
    """Per-token k3 estimate of KL(pi || ref) from samples of pi: exp(r) - r - 1 with r = ref - logp (>= 0)."""
    r = ref_logps - logps
    return jnp.exp(r) - r - 1.0


@RL_OBJECTIVES.register("grpo")
class GRPO(RLObjective):
    """-A * log pi per token (+ kl_coef * k3 to the reference); A = reward - group mean (/ std with scale_by_std)."""

    def __init__(self, kl_coef: float = 0.0, scale_by_std: bool = False, eps: float = 1e-4, track_kl: bool = False):
        """track_kl: measure the KL to the reference (a metric) even without a penalty (a reference forward)."""
        if kl_coef < 0:
            raise ValueError(f"grpo.kl_coef must be >= 0, got {kl_coef}")
        self.kl_coef, self.scale_by_std, self.eps = kl_coef, scale_by_std, eps
        self.needs_reference = kl_coef > 0 or track_kl

    def advantages(self, rewards: np.ndarray) -> np.ndarray:
        return group_advantages(rewards, scale_by_std=self.scale_by_std, eps=self.eps)

    def __call__(self, batch: RLBatch):
        pg = -batch.advantages[:, None] * batch.logps
        metrics = {"pg_loss": pg}
        if batch.ref_logps is None:
            return pg, metrics
        kl = k3(batch.logps, batch.ref_logps)
        metrics["kl"] = jax.lax.stop_gradient(kl)
        return (pg + self.kl_coef * kl if self.kl_coef > 0 else pg), metrics
