"""The train state and its layout on the mesh: built abstractly first, then initialised directly into its shardings.

Nothing is materialised on one device and then moved: the shapes come from `jax.eval_shape`, the shardings from
the parameters' logical axis names (moments of the optimizer inherit their parameter's names, since optax builds
them with `zeros_like` of the nnx Variables), and `jax.jit(init, out_shardings=...)` creates every array where it
lives. Random values do not depend on the mesh (threefry is partitionable), so any mesh starts from the same
weights — what makes runs comparable across meshes and resumable on another one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nanocode.core import mesh as mesh_lib


@jax.tree_util.register_dataclass
@dataclass
class TrainState:
    """Everything that changes during training, as arrays (what a checkpoint saves)."""

    params: Any  # nnx.State of the model's nnx.Param variables
    rest: Any  # the model's other variables (buffers), usually empty; carried unchanged
    opt_state: Any
    step: jax.Array  # int32 scalar: optimizer steps taken
    rng: jax.Array  # uint32[2] raw key data: the run's key for anything stochastic, saved so a resume is exact


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, Any, Any]:
    """(graphdef, params, rest): the one split a trainer does."""
    return nnx.split(model, nnx.Param, ...)


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def state_shardings(tree: Any, mesh: Mesh, rules) -> Any:
    """NamedShardings for every array of a (possibly abstract) state: an nnx Variable's logical axis names through
    the rules, anything else (step counters, the rng, scalars) replicated."""

    def one(x):
        if isinstance(x, nnx.Variable):
            logical = x.get_metadata().get("out_sharding")
            return x.replace(NamedSharding(mesh, mesh_lib.logical_to_spec(logical, rules)))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(one, tree, is_leaf=_is_variable)


def abstract_model(model_cls: type, config: Any, seed: int = 0) -> nnx.Module:
    """The model with ShapeDtypeStruct parameters (nothing allocated)."""
    return nnx.eval_shape(lambda: model_cls(config, rngs=nnx.Rngs(seed)))


@dataclass
class Initialised:
    graphdef: nnx.GraphDef
    state: TrainState  # live arrays, or ShapeDtypeStructs carrying their shardings when abstract
    shardings: TrainState


def init_train_state(
    model_cls: type,
    config: Any,
    tx: optax.GradientTransformation,
    *,
    seed: int,
    mesh: Mesh,
    rules,
    abstract: bool = False,
) -> Initialised:
    """Build the model and optimizer state sharded on `mesh` (call inside `mesh_lib.activate(mesh, rules)`).

    abstract=True returns ShapeDtypeStructs with shardings instead (for restore targets and AOT compilation).
    """

    def init() -> TrainState:
        _, params, rest = split_model(model_cls(config, rngs=nnx.Rngs(seed)))
        key = jax.random.key_data(jax.random.key(seed))
        return TrainState(params, rest, tx.init(params), jnp.zeros((), jnp.int32), key)

    graphdef = split_model(abstract_model(model_cls, config, seed))[0]
    shapes = jax.eval_shape(init)
    shardings = state_shardings(shapes, mesh, rules)
    if abstract:
        state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
    else:
        state = jax.jit(init, out_shardings=shardings)()
    return Initialised(graphdef, state, shardings)
