"""Schedules as optax schedules (jnp functions of the step): the LR multiplier and Muon's momentum warmup.

The LR multiplier is nanochat's: linear warmup over the first `warmup_ratio` of the steps, flat at 1, then a linear
warm-down over the last `warmdown_ratio` of the steps to `final_lr_frac`. Step `total_steps` (one past the last
update) is where the ramp lands on `final_lr_frac`, so with the default final_lr_frac = 0 the last update still
moves the weights a little; steps beyond it stay at `final_lr_frac`.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int

from nanocode.core.errors import ConfigError


def check_ratios(warmup_ratio: float, warmdown_ratio: float, final_lr_frac: float) -> None:
    """One-line ConfigError for ratios that cannot describe a schedule."""
    if not 0.0 <= warmup_ratio <= 1.0 or not 0.0 <= warmdown_ratio <= 1.0:
        raise ConfigError(f"warmup_ratio {warmup_ratio} and warmdown_ratio {warmdown_ratio} must lie in [0, 1]")
    if warmup_ratio + warmdown_ratio > 1.0:
        raise ConfigError(f"warmup_ratio {warmup_ratio} + warmdown_ratio {warmdown_ratio} exceeds 1")
    if final_lr_frac < 0.0:
        raise ConfigError(f"final_lr_frac {final_lr_frac} must be >= 0")


def lr_multiplier(
    total_steps: int, *, warmup_ratio: float = 0.0, warmdown_ratio: float = 0.4, final_lr_frac: float = 0.0
) -> optax.Schedule:
    """The multiplier of every base LR at each step (0-based), for a run of `total_steps` updates."""
    if total_steps < 1:
        raise ConfigError(f"total_steps must be >= 1, got {total_steps}")
    check_ratios(warmup_ratio, warmdown_ratio, final_lr_frac)
    warmup = round(warmup_ratio * total_steps)
    warmdown = round(warmdown_ratio * total_steps)

    def schedule(step: Int[Array, ""] | int) -> Float[Array, ""]:
        s = jnp.asarray(step, jnp.float32)
        # (s+1)/warmup so the very first update already has a nonzero LR (nanochat's convention).
        up = jnp.minimum((s + 1.0) / max(warmup, 1), 1.0) if warmup > 0 else jnp.float32(1.0)
        # progress runs 1 -> 0 across the warm-down; clipping keeps it flat before and at final after.
        progress = jnp.clip((total_steps - s) / max(warmdown, 1), 0.0, 1.0) if warmdown > 0 else jnp.float32(1.0)
        down = final_lr_frac + (1.0 - final_lr_frac) * progress
        return jnp.minimum(up, down)

    return schedule


def momentum_warmup(start: float = 0.85, end: float = 0.95, steps: int = 300) -> optax.Schedule:
    """Muon's momentum: linear from `start` at step 0 to `end` at step `steps`, then constant."""
    if steps < 0:
        raise ConfigError(f"momentum warmup steps must be >= 0, got {steps}")

    def schedule(step: Int[Array, ""] | int) -> Float[Array, ""]:
        frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(steps, 1), 0.0, 1.0) if steps > 0 else 1.0
        return jnp.asarray(start + (end - start) * frac, jnp.float32)

    return schedule
