"""Logical axis names, and sharding constraints that apply only when a mesh and logical-axis rules are active.

Models name the dimensions of their parameters and activations with the logical axes below ('embed', 'heads',
...). The mesh factory (nanocode.core.mesh) maps those names onto mesh axes with rules, and the trainer activates
them with `jax.set_mesh(mesh)` plus `flax.linen.logical_axis_rules(rules)` (both contexts share flax's rule stack).
Without both, everything here is a no-op, so the same model code runs on one CPU device and on a pod.

Rules must name every logical axis a model uses (map it to None to replicate): flax resolves parameter
annotations by plain lookup, so an unnamed axis would reach the mesh as an unknown axis name.
"""

from __future__ import annotations

import jax
from flax.core import spmd as flax_spmd
from flax.linen import spmd as linen_spmd
from jax.sharding import PartitionSpec

BATCH = "batch"
SEQ = "seq"
EMBED = "embed"
VOCAB = "vocab"
HEADS = "heads"  # query heads (or heads x head_dim, flattened, in projection matrices)
KV_HEADS = "kv_heads"  # key/value heads (GQA: fewer than HEADS)
HEAD_DIM = "head_dim"
MLP = "mlp"
LAYERS = "layers"

AXES: tuple[str, ...] = (BATCH, SEQ, EMBED, VOCAB, HEADS, KV_HEADS, HEAD_DIM, MLP, LAYERS)

LogicalAxes = tuple[str | None, ...]


def active_mesh() -> jax.sharding.AbstractMesh | None:
    """The mesh set with `jax.set_mesh` (or None): inside jit this is the abstract mesh being traced for."""
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh


def rules() -> tuple:
    """The logical-axis rules of the innermost `flax.linen.logical_axis_rules(...)` context (empty if none)."""
    return tuple(flax_spmd.get_logical_axis_rules())


def sharding_active() -> bool:
    """True when both a mesh and logical-axis rules are active, i.e. when logical names can be resolved."""
    return active_mesh() is not None and bool(rules())


def logical_spec(logical_axes: LogicalAxes) -> PartitionSpec:
    """The PartitionSpec of an array whose dimensions have these logical names, under the active rules.

    Rules are applied in priority order and a mesh axis is used at most once per array (flax.linen semantics),
    so an activation named ('batch', 'seq', 'embed') stays valid when 'batch' and 'embed' share a mesh axis.
    Names without a rule are replicated.
    """
    return linen_spmd.logical_to_mesh_axes(logical_axes, rules())


def constrain(x: jax.Array, logical_axes: LogicalAxes) -> jax.Array:
    """Constrain `x` to the sharding its logical axes map to; the identity when no mesh or rules are active."""
    if len(logical_axes) != x.ndim:
        raise ValueError(f"constrain: {len(logical_axes)} logical axes {logical_axes} for an array of rank {x.ndim}")
    mesh = active_mesh()
    if mesh is None or not rules() or mesh.are_all_axes_manual:  # inside shard_map there is nothing to constrain
        return x
    spec = logical_spec(logical_axes)
    if mesh.are_all_axes_explicit:
        return jax.sharding.reshard(x, spec)
    return jax.lax.with_sharding_constraint(x, spec)
