"""Plain AdamW: one LR for every parameter, times the same warmup/flat/warm-down multiplier as muon_adamw."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optax

from nanocode.core.errors import ConfigError
from nanocode.core.interfaces import OptimizerFactory
from nanocode.core.kinds import OPTIMIZERS
from nanocode.optim.schedules import check_ratios, lr_multiplier


@OPTIMIZERS.register("adamw")
@dataclass(frozen=True)
class AdamW(OptimizerFactory):
    """AdamW on every parameter (single LR 1e-3, betas 0.8/0.95), LR x warmup/flat/warm-down; the simple baseline."""

    lr: float = 1e-3
    b1: float = 0.8
    b2: float = 0.95
    eps: float = 1e-10
    weight_decay: float = 0.0  # decoupled: p -= lr * wd * p
    warmup_ratio: float = 0.0
    warmdown_ratio: float = 0.4
    final_lr_frac: float = 0.0

    def __post_init__(self):
        check_ratios(self.warmup_ratio, self.warmdown_ratio, self.final_lr_frac)
        if self.lr < 0 or self.eps < 0 or self.weight_decay < 0:
            raise ConfigError(
                f"adamw lr, eps and weight_decay must be >= 0, got {self.lr}, {self.eps}, {self.weight_decay}"
            )
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
            raise ConfigError(f"adamw betas must lie in [0, 1), got b1={self.b1} b2={self.b2}")

    def schedule(self, total_steps: int) -> optax.Schedule:
        """The LR multiplier."""
        return lr_multiplier(
            total_steps,
            warmup_ratio=self.warmup_ratio,
            warmdown_ratio=self.warmdown_ratio,
            final_lr_frac=self.final_lr_frac,
        )

    def build(self, params: Any, total_steps: int) -> optax.GradientTransformation:
        del params  # one group: nothing to read from the parameters
        multiplier = self.schedule(total_steps)
        return optax.adamw(
            lambda step: self.lr * multiplier(step),
            b1=self.b1,
            b2=self.b2,
            eps=self.eps,
            weight_decay=self.weight_decay,
        )
