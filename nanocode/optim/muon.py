"""Muon for the block matrices, AdamW for the embedding, the head and anything else (nanocode's optimizer).

Muon (Keller Jordan's MomentUm Orthogonalized by Newton-schulz) replaces each matrix's momentum-smoothed gradient by
the nearest semi-orthogonal matrix, approximated by a few quintic Newton–Schulz iterations in bf16: every direction
of the update then moves at the same rate, which suits hidden matrices but not embeddings (rows are looked up, not
multiplied), hence AdamW for those.

Everything is plain jnp inside the optax update, so under `jax.jit` a sharded matrix is orthogonalised in place: XLA
partitions the matmuls and the Frobenius norm and adds the collectives; the momentum state is built with
`zeros_like` and so shares each parameter's sharding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int

from nanocode.core.errors import ConfigError
from nanocode.core.interfaces import OptimizerFactory
from nanocode.core.kinds import OPTIMIZERS
from nanocode.optim import groups
from nanocode.optim.schedules import check_ratios, lr_multiplier, momentum_warmup

# Quintic coefficients tuned (Keller Jordan) to push all singular values into ~[0.7, 1.2] in 5 steps as fast as
# possible, rather than to converge to exactly 1: a rough orthogonalisation is all Muon needs.
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(
    g: Float[Array, "... m n"],
    steps: int = 5,
    coeffs: Sequence[float] = NS_COEFFS,
    dtype: Any = jnp.bfloat16,
    eps: float = 1e-7,
) -> Float[Array, "... m n"]:
    """Approximately orthogonalise the last two axes of `g` (U V^T of its SVD, singular values ~[0.7, 1.2])."""
    a, b, c = coeffs
    tall = g.shape[-2] > g.shape[-1]
    x = jnp.swapaxes(g, -1, -2) if tall else g  # iterate on the wide form: X X^T is the smaller Gram matrix
    # Frobenius >= spectral norm, so dividing by it puts every singular value in [0, 1], where the iteration works.
    x = x.astype(jnp.float32)
    x = (x / (jnp.linalg.norm(x, axis=(-2, -1), keepdims=True) + eps)).astype(dtype)

    def matmul(p, q):  # bf16 operands, f32 accumulation (faster than a bf16 output on CPU, same as GPUs do)
        return jnp.matmul(p, q, preferred_element_type=jnp.float32).astype(dtype)

    def step(_, x):
        gram = matmul(x, jnp.swapaxes(x, -1, -2))
        poly = b * gram + c * matmul(gram, gram)
        return a * x + matmul(poly, x)

    x = jax.lax.fori_loop(0, steps, step, x, unroll=True)
    x = jnp.swapaxes(x, -1, -2) if tall else x
    return x.astype(g.dtype)


def shape_scale(shape: Sequence[int]) -> float:
    """sqrt(max(1, fan_out / fan_in)): matrices that expand their input (the MLP's c_fc) take a larger step, as
    Muon's reference rule. Our matrices are stored (in, out) — x @ W — so fan_out is the LAST axis (torch stores
    (out, in) and writes the same rule as rows/cols)."""
    fan_in, fan_out = shape[-2], shape[-1]
    return max(1.0, fan_out / fan_in) ** 0.5


class ScaleByMuonState(NamedTuple):
    count: Int[Array, ""]
    momentum: optax.Updates


def scale_by_muon(
    momentum: optax.ScalarOrSchedule = 0.95,
    *,
    nesterov: bool = True,
    ns_steps: int = 5,
    ns_coeffs: Sequence[float] = NS_COEFFS,
    ns_dtype: Any = jnp.bfloat16,
) -> optax.GradientTransformation:
    """Momentum (an EMA of gradients), Nesterov blend, Newton–Schulz, shape scale. Matrices (ndim >= 2) only."""

    def init_fn(params):
        for path, x in jax.tree_util.tree_leaves_with_path(params):
            if len(x.shape) < 2:
                raise ValueError(f"Muon orthogonalises matrices; {groups.path_str(path)} has shape {x.shape}")
        return ScaleByMuonState(count=jnp.zeros([], jnp.int32), momentum=jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        m = momentum(state.count) if callable(momentum) else momentum

        # buf <- lerp(buf, g, 1 - m); Nesterov looks ahead: g <- lerp(g, buf, m). Casts keep bf16 params' dtypes.
        def ema(buf, g):
            return (buf + (1 - m) * (g - buf)).astype(buf.dtype)

        def look_ahead(g, buf):
            return (g + m * (buf - g)).astype(g.dtype)

        bufs = jax.tree.map(ema, state.momentum, updates)
        directions = jax.tree.map(look_ahead, updates, bufs) if nesterov else bufs
        new_updates = jax.tree.map(
            lambda d: newton_schulz(d, ns_steps, ns_coeffs, ns_dtype) * shape_scale(d.shape), directions
        )
        return new_updates, ScaleByMuonState(count=optax.safe_increment(state.count), momentum=bufs)

    return optax.GradientTransformation(init_fn, update_fn)


def muon(learning_rate: optax.ScalarOrSchedule, **kwargs) -> optax.GradientTransformation:
    """Muon with a learning rate (or schedule): `scale_by_muon(**kwargs)` then `-learning_rate`."""
    return optax.chain(scale_by_muon(**kwargs), optax.scale_by_learning_rate(learning_rate))


@OPTIMIZERS.register("muon_adamw")
@dataclass(frozen=True)
class MuonAdamW(OptimizerFactory):
    """Muon (lr 0.02) for block matrices + AdamW for wte (0.3) and lm_head (0.004), LRs x warmup/flat/warm-down."""

    lr: float = 0.02  # Muon, block matrices
    embedding_lr: float = 0.3  # AdamW, x (d_model/base_d_model)^-0.5
    head_lr: float = 0.004  # AdamW, x (d_model/base_d_model)^-0.5
    other_lr: float = 0.004  # AdamW for any non-matrix parameter (the GPT has none); not d_model-scaled
    base_d_model: int = 768  # the width at which embedding_lr and head_lr were tuned
    # Muon
    momentum_start: float = 0.85
    momentum_end: float = 0.95
    momentum_warmup_steps: int = 300
    nesterov: bool = True
    ns_steps: int = 5
    ns_coeffs: tuple[float, float, float] = NS_COEFFS
    ns_dtype: str = "bfloat16"
    # AdamW
    b1: float = 0.8
    b2: float = 0.95
    eps: float = 1e-10
    weight_decay: float = 0.0  # decoupled (lr * wd * p), AdamW groups only
    # LR multiplier schedule
    warmup_ratio: float = 0.0
    warmdown_ratio: float = 0.4
    final_lr_frac: float = 0.0
    # which path components name the embedding and the head
    embedding_names: tuple[str, ...] = ("wte",)
    head_names: tuple[str, ...] = ("lm_head",)

    def __post_init__(self):
        check_ratios(self.warmup_ratio, self.warmdown_ratio, self.final_lr_frac)
        for name in ("lr", "embedding_lr", "head_lr", "other_lr", "eps", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"muon_adamw.{name} must be >= 0, got {getattr(self, name)}")
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
            raise ConfigError(f"muon_adamw betas must lie in [0, 1), got b1={self.b1} b2={self.b2}")
        if self.ns_steps < 0 or len(self.ns_coeffs) != 3:
            raise ConfigError(f"muon_adamw needs ns_steps >= 0 and 3 ns_coeffs, got {self.ns_steps}, {self.ns_coeffs}")
        try:
            jnp.dtype(self.ns_dtype)
        except TypeError:
            raise ConfigError(f"muon_adamw.ns_dtype {self.ns_dtype!r} is not a dtype name") from None

    # -- pieces the trainer may log ------------------------------------------------------------------------------
    def schedule(self, total_steps: int) -> optax.Schedule:
        """The LR multiplier (shared by every group)."""
        return lr_multiplier(
            total_steps,
            warmup_ratio=self.warmup_ratio,
            warmdown_ratio=self.warmdown_ratio,
            final_lr_frac=self.final_lr_frac,
        )

    def labels(self, params: Any) -> Any:
        return groups.label_params(params, embedding=self.embedding_names, head=self.head_names)

    def d_model(self, params: Any) -> int:
        """The model width: the last axis of the token embedding."""
        names = {"embedding": self.embedding_names, "head": self.head_names}
        for _, label, shape in groups.labelled_leaves(params, **names):
            if label == groups.EMBEDDING and len(shape) == 2:
                return shape[-1]
        raise ConfigError(
            f"muon_adamw: no 2-D parameter whose path has a component in {list(self.embedding_names)} "
            "to read d_model from (set muon_adamw.embedding_names)"
        )

    def group_lrs(self, params: Any) -> dict[str, float]:
        """Base LR of each group (before the schedule), with the d_model scaling applied."""
        scale = (self.d_model(params) / self.base_d_model) ** -0.5
        return {
            groups.MUON: self.lr,
            groups.EMBEDDING: self.embedding_lr * scale,
            groups.HEAD: self.head_lr * scale,
            groups.OTHER: self.other_lr,
        }

    # -- the transformation --------------------------------------------------------------------------------------
    def build(self, params: Any, total_steps: int) -> optax.GradientTransformation:
        multiplier = self.schedule(total_steps)

        def scheduled(base_lr: float) -> optax.Schedule:
            return lambda step: base_lr * multiplier(step)

        def adamw(base_lr: float) -> optax.GradientTransformation:
            return optax.adamw(scheduled(base_lr), b1=self.b1, b2=self.b2, eps=self.eps, weight_decay=self.weight_decay)

        lrs = self.group_lrs(params)
        transforms = {
            groups.MUON: muon(
                scheduled(lrs[groups.MUON]),
                momentum=momentum_warmup(self.momentum_start, self.momentum_end, self.momentum_warmup_steps),
                nesterov=self.nesterov,
                ns_steps=self.ns_steps,
                ns_coeffs=tuple(self.ns_coeffs),
                ns_dtype=jnp.dtype(self.ns_dtype),
            ),
            groups.EMBEDDING: adamw(lrs[groups.EMBEDDING]),
            groups.HEAD: adamw(lrs[groups.HEAD]),
            groups.OTHER: adamw(lrs[groups.OTHER]),
        }
        # Labels are recomputed from whatever tree optax is handed (nnx.State of Variables at init, pure arrays at
        # update), so both shapes of the same params work.
        return optax.partition(transforms, self.labels)
