"""The device mesh and the rules that map a parameter's logical axis names onto it.

Models name their dimensions (`embed`, `mlp`, `heads`, ...) with `nnx.with_partitioning`; a mesh factory owns the
physical axes (`data`, `fsdp`, `tensor`) and an ordered table of rules `logical name -> mesh axis (or axes, or None)`.
Changing the parallelism of a run is then a gin edit: `axes.shape = (8, 1, 1)` is data parallel, `(1, 8, 1)` is FSDP.

    factory = AxesMesh(shape=(1, -1, 1))
    mesh, rules = factory.make(), factory.rules
    abstract = logical_state(lambda: GPT(cfg, rngs=nnx.Rngs(0)))   # shapes + logical names, no memory
    validate(abstract, mesh, rules)                                  # one-line ConfigError before any compute
    print(partition_table(abstract, mesh, rules))
    with activate(mesh, rules):
        model = GPT(cfg, rngs=nnx.Rngs(0))                           # params are created already sharded
    restored = checkpointer.restore(abstract_state=with_shardings(abstract, mesh, rules))

The mapping follows Flax NNX: a logical name with a rule becomes that rule's mesh axes, any other name is kept as
it is (so a model may also name a mesh axis directly). `validate` turns what would be an XLA error deep inside the
first step (an indivisible dimension, two dimensions on one mesh axis, an unknown name) into one line naming the
parameter.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from flax.core import spmd as flax_spmd
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
from jaxtyping import PyTree

from nanocode.core import sharding as S
from nanocode.core.errors import ConfigError, first_line
from nanocode.core.interfaces import MeshFactory
from nanocode.core.kinds import MESHES

MeshAxes = str | tuple[str, ...] | None
Rules = tuple[tuple[str, MeshAxes], ...]

DEFAULT_AXES = ("data", "fsdp", "tensor")
# Parameters are sharded over fsdp along `embed` (ZeRO-3 style) and over tensor along the wide dimensions; the batch
# is split over every axis that holds a different slice of the data. Names with no sharding are listed with None so
# that they always resolve (NNX would otherwise pass an unknown logical name through as a mesh axis name).
DEFAULT_RULES: Rules = (
    (S.BATCH, ("data", "fsdp")),
    (S.SEQ, None),
    (S.EMBED, "fsdp"),
    (S.VOCAB, "tensor"),
    (S.HEADS, "tensor"),
    (S.KV_HEADS, "tensor"),
    (S.HEAD_DIM, None),
    (S.MLP, "tensor"),
    (S.LAYERS, None),
)


@MESHES.register("axes")
class AxesMesh(MeshFactory):
    """An N-d mesh of named axes (data, fsdp, tensor); -1 fills the remaining devices; dcn_shape adds slices."""

    def __init__(
        self,
        shape: Sequence[int] = (1, -1, 1),
        axes: Sequence[str] = DEFAULT_AXES,
        rules: Sequence[tuple[str, Any]] = DEFAULT_RULES,
        dcn_shape: Sequence[int] | None = None,
    ):
        self.shape = tuple(int(s) for s in shape)
        self.axes = tuple(str(a) for a in axes)
        self.dcn_shape = None if dcn_shape is None else tuple(int(s) for s in dcn_shape)
        if len(self.shape) != len(self.axes):
            raise ConfigError(
                f"axes.shape {self.shape} has {len(self.shape)} entries but axes.axes {self.axes} has {len(self.axes)}"
            )
        if len(set(self.axes)) != len(self.axes):
            raise ConfigError(f"axes.axes {self.axes} names a mesh axis twice")
        _check_sizes("axes.shape", self.shape)
        if self.dcn_shape is not None:
            if len(self.dcn_shape) != len(self.axes):
                raise ConfigError(f"axes.dcn_shape {self.dcn_shape} needs one entry per mesh axis {self.axes}")
            _check_sizes("axes.dcn_shape", self.dcn_shape)
        self.raw_rules = _normalize_rules(rules)
        resolve_rules(self.raw_rules, self.axes)  # a typo in a rule's mesh axis fails at config time

    @property
    def rules(self) -> Rules:
        return resolve_rules(self.raw_rules, self.axes)

    def make(self, devices: Sequence[jax.Device] | None = None) -> Mesh:
        devices = list(jax.devices() if devices is None else devices)
        if self.dcn_shape is None:
            shape = _fill("axes.shape", self.shape, len(devices), exact=False)
            # A smaller mesh than the host (cpu.gin in tests that simulate 8 devices) takes the first devices.
            used = devices[: math.prod(shape)]
            try:
                grid = mesh_utils.create_device_mesh(shape, used, allow_split_physical_axes=True)
            except (ValueError, NotImplementedError, AssertionError):
                grid = np.array(used, dtype=object).reshape(shape)  # device order without a topology to follow
        else:
            # TPU slices are joined by DCN (devices carry slice_index); elsewhere (GPU hosts, CPU tests) the slow
            # network runs between processes.
            by_process = devices[0].platform != "tpu" or getattr(devices[0], "slice_index", None) is None
            unit = "processes" if by_process else "slices"
            granules = {d.process_index if by_process else d.slice_index for d in devices}
            slices = _fill("axes.dcn_shape", self.dcn_shape, len(granules), exact=True, unit=unit)
            per_slice = _fill(
                "axes.shape",
                self.shape,
                len(devices) // len(granules),
                exact=True,
                unit="devices per " + ("process" if by_process else "slice"),
            )
            try:
                grid = mesh_utils.create_hybrid_device_mesh(
                    per_slice, slices, devices, process_is_granule=by_process, allow_split_physical_axes=True
                )
            except ValueError as e:
                raise ConfigError(
                    f"axes.dcn_shape {slices} x axes.shape {per_slice}: the {len(devices)} devices in "
                    f"{len(granules)} {unit} do not form that grid ({first_line(e)})"
                ) from e
        return Mesh(grid, self.axes, axis_types=(AxisType.Auto,) * len(self.axes))

    def __repr__(self) -> str:
        dcn = f", dcn_shape={self.dcn_shape}" if self.dcn_shape else ""
        return f"AxesMesh(shape={self.shape}, axes={self.axes}{dcn})"


def _check_sizes(what: str, sizes: tuple[int, ...]) -> None:
    if sum(s == -1 for s in sizes) > 1:
        raise ConfigError(f"{what} {sizes} may contain at most one -1")
    if any(s == 0 or s < -1 for s in sizes):
        raise ConfigError(f"{what} {sizes} must hold positive sizes (or one -1)")


def _fill(what: str, sizes: tuple[int, ...], n_devices: int, *, exact: bool, unit: str = "devices") -> tuple[int, ...]:
    """Replace a -1 by whatever is left of n_devices; check the product fits (exactly, for hybrid meshes)."""
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n_devices % known:
            raise ConfigError(f"{what} {sizes}: cannot fill -1, {n_devices} {unit} are not a multiple of {known}")
        sizes = tuple(n_devices // known if s == -1 else s for s in sizes)
    total = math.prod(sizes)
    if total > n_devices or (exact and total != n_devices):
        raise ConfigError(f"{what} {sizes} needs {total} {unit} but {n_devices} are available")
    return sizes


def _normalize_rules(rules: Sequence[Any]) -> Rules:
    """Rules from gin arrive as lists or tuples; make them hashable tuples and check their form."""
    out: list[tuple[str, MeshAxes]] = []
    seen: set[str] = set()
    for rule in rules:
        if not isinstance(rule, list | tuple) or len(rule) != 2 or not isinstance(rule[0], str):
            raise ConfigError(f"axes.rules: {rule!r} is not a (logical_name, mesh_axis) pair")
        name, target = rule
        if name in seen:  # NNX looks rules up in a dict: a second entry would silently win
            raise ConfigError(f"axes.rules: logical axis {name!r} has two rules")
        seen.add(name)
        if isinstance(target, list | tuple):
            if not all(isinstance(t, str) for t in target):
                raise ConfigError(f"axes.rules: rule for {name!r} maps to {target!r}, not mesh axis names")
            target = tuple(target)
        elif target is not None and not isinstance(target, str):
            raise ConfigError(f"axes.rules: rule for {name!r} maps to {target!r}, not a mesh axis name")
        out.append((name, target))
    return tuple(out)


def resolve_rules(rules: Sequence[tuple[str, Any]], mesh_axes: Sequence[str]) -> Rules:
    """Drop mesh axes that the mesh does not have from each rule (the logical name stays, mapped to what is left).

    The standard axes (data, fsdp, tensor) may be absent: the default rules then fit any smaller mesh. Any other
    absent name is a typo in the rules and raises, rather than silently replicating a parameter.
    """
    present = set(mesh_axes)
    out: list[tuple[str, MeshAxes]] = []
    for name, target in _normalize_rules(rules):
        names = () if target is None else (target,) if isinstance(target, str) else target
        unknown = [a for a in names if a not in present and a not in DEFAULT_AXES]
        if unknown:
            raise ConfigError(
                f"axes.rules: rule for {name!r} names mesh axis {unknown[0]!r}, not one of {tuple(mesh_axes)}"
            )
        kept = tuple(a for a in names if a in present)
        out.append((name, None if not kept else kept[0] if len(kept) == 1 else kept))
    return tuple(out)


# ---------------------------------------------------------------------------------------------- logical -> physical
def _axis_names(entry: MeshAxes) -> tuple[str, ...]:
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def logical_to_spec(logical_axes: Sequence[str | None] | None, rules: Sequence[tuple[str, Any]]) -> PartitionSpec:
    """The PartitionSpec for one array's logical axis names (NNX semantics: unknown names pass through)."""
    if not logical_axes:
        return PartitionSpec()
    table = dict(rules)
    return PartitionSpec(*(table[n] if (n is not None and n in table) else n for n in logical_axes))


def _check_spec(where: str, shape: tuple[int, ...], logical: Sequence[str | None], spec: PartitionSpec, mesh: Mesh):
    """Raise a one-line ConfigError if the spec cannot shard an array of this shape on this mesh."""
    if len(logical) != len(shape):
        raise ConfigError(
            f"{where}: {len(logical)} logical axes {tuple(logical)} for a {len(shape)}-d array of shape {shape}"
        )
    used: dict[str, str | None] = {}
    for dim, (name, entry) in enumerate(zip(logical, spec)):
        axes = _axis_names(entry)
        for axis in axes:
            if axis not in mesh.shape:
                raise ConfigError(
                    f"{where}: logical axis {name!r} has no rule and is not a mesh axis {tuple(mesh.axis_names)}"
                )
            if axis in used:
                raise ConfigError(
                    f"{where}: logical axes {used[axis]!r} and {name!r} both map to mesh axis {axis!r} (shape {shape})"
                )
            used[axis] = name
        size = math.prod(mesh.shape[a] for a in axes)
        if shape[dim] % size:
            raise ConfigError(
                f"{where}: dim {dim} ({name}={shape[dim]}) is not divisible by mesh axes {axes} of size {size} (shape {shape})"
            )


def _is_logical_leaf(x: Any) -> bool:
    return (
        isinstance(x, nnx.Variable | PartitionSpec)
        or x is None
        or (isinstance(x, tuple) and all(e is None or isinstance(e, str) for e in x))
    )


def _path_str(path) -> str:
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return ".".join(parts) or "<root>"


def _as_state(tree: Any) -> Any:
    return nnx.state(tree) if isinstance(tree, nnx.Module) else tree


def annotated_leaves(tree: PyTree) -> Iterator[tuple[str, Any, tuple[str | None, ...] | None]]:
    """(dotted path, array or ShapeDtypeStruct, logical axis names or None) for every array in a state tree."""
    leaves = jax.tree_util.tree_flatten_with_path(_as_state(tree), is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    for path, leaf in leaves:
        if isinstance(leaf, nnx.Variable):
            value, logical = leaf.get_value(), leaf.get_metadata().get("out_sharding")
        else:
            value, logical = leaf, None
        if hasattr(value, "shape"):
            yield _path_str(path), value, (tuple(logical) if logical else None)


def current_rules(mesh: Mesh, rules: Sequence[tuple[str, Any]] | None) -> Rules:
    """Explicit rules, else the ones `activate` set, else the defaults, resolved against the mesh."""
    if rules is None:
        rules = flax_spmd.get_logical_axis_rules() or DEFAULT_RULES
    return resolve_rules(rules, mesh.axis_names)


def logical_state(init_fn: Callable[[], Any]) -> Any:
    """The abstract state (ShapeDtypeStructs in Variables) that `init_fn` would build, with its logical axis names.

    Built with eager sharding off and outside any mesh, so `validate` gets to explain a bad layout before JAX
    would refuse it inside parameter creation.
    """
    with nnx.use_eager_sharding(False):
        return nnx.state(nnx.eval_shape(init_fn))


def with_shardings(tree: PyTree, mesh: Mesh, rules: Sequence[tuple[str, Any]] | None = None) -> PyTree:
    """Every array of a (logical or live) state as a ShapeDtypeStruct carrying its sharding on `mesh`.

    This is a checkpoint restore target: orbax then reads each device's slice of each array straight into place.
    """
    shardings = logical_to_sharding(tree, mesh, rules)

    def target(value, sharding):
        return jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding) if hasattr(value, "shape") else value

    return jax.tree.map(target, _as_state(tree), shardings)


def validate(tree: PyTree, mesh: Mesh, rules: Sequence[tuple[str, Any]] | None = None) -> None:
    """Check every annotated array of a (possibly abstract) state shards on this mesh; ConfigError names the first bad one."""
    rules = current_rules(mesh, rules)
    for path, value, logical in annotated_leaves(tree):
        if logical is not None:
            _check_spec(f"parameter {path}", tuple(value.shape), logical, logical_to_spec(logical, rules), mesh)


def partition_table(tree: PyTree, mesh: Mesh, rules: Sequence[tuple[str, Any]] | None = None) -> str:
    """One line per array: path, shape, dtype, logical axes, resolved PartitionSpec and per-device shard shape."""
    rules = current_rules(mesh, rules)
    rows = [("parameter", "shape", "dtype", "logical axes", "partition spec", "shard")]
    total = per_device = 0
    for path, value, logical in annotated_leaves(tree):
        spec = logical_to_spec(logical, rules)
        shard = tuple(
            d // math.prod(mesh.shape[a] for a in _axis_names(e))
            for d, e in zip(value.shape, tuple(spec) + (None,) * len(value.shape))
        )
        itemsize = np.dtype(value.dtype).itemsize if not jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key) else 0
        total += math.prod(value.shape) * itemsize
        per_device += math.prod(shard) * itemsize
        rows.append((path, str(tuple(value.shape)), str(value.dtype), str(logical or "-"), str(spec), str(shard)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    mesh_desc = ", ".join(f"{a}={n}" for a, n in mesh.shape.items())
    lines.append(f"mesh ({mesh_desc}): {total / 2**20:.1f} MiB in all, {per_device / 2**20:.1f} MiB per device")
    return "\n".join(lines)


def logical_to_sharding(tree: PyTree, mesh: Mesh, rules: Sequence[tuple[str, Any]] | None = None) -> PyTree:
    """NamedShardings for a tree of logical axes: nnx Variables (kept, holding their sharding), specs or name tuples."""
    rules = current_rules(mesh, rules)

    def convert(leaf):
        if isinstance(leaf, nnx.Variable):
            logical = leaf.get_metadata().get("out_sharding")
            return leaf.replace(NamedSharding(mesh, logical_to_spec(logical, rules)))
        if not (leaf is None or isinstance(leaf, tuple | PartitionSpec)):
            raise TypeError(f"logical_to_sharding: leaf {leaf!r} is not a Variable, PartitionSpec or tuple of names")
        return NamedSharding(mesh, logical_to_spec(tuple(leaf) if leaf else None, rules))

    return jax.tree.map(convert, _as_state(tree), is_leaf=_is_logical_leaf)


def batch_sharding(mesh: Mesh, rules: Sequence[tuple[str, Any]] | None = None, ndim: int = 2) -> NamedSharding:
    """How a [batch, seq] (ndim=2) or [batch] (ndim=1) input is laid out: rows split over the batch mesh axes."""
    logical = ("batch", "seq")[:ndim] + (None,) * max(0, ndim - 2)
    spec = logical_to_spec(logical, current_rules(mesh, rules))
    return NamedSharding(mesh, spec)


def shard_batch(local_batch: PyTree, mesh: Mesh, rules: Sequence[tuple[str, Any]] | None = None) -> PyTree:
    """Assemble each process's rows into global arrays (global rows = local rows x the processes feeding the batch).

    Every process calls this with its own numpy batch (same shapes on every process). On one process it is a
    sharded device_put.
    """
    rules = current_rules(mesh, rules)

    def place(x):
        x = np.asarray(x)
        sharding = batch_sharding(mesh, rules, ndim=x.ndim)
        batch_axes = _axis_names(sharding.spec[0]) if len(sharding.spec) else ()
        local = _local_batch_shards(mesh, batch_axes)
        if x.shape[0] % local:
            raise ConfigError(
                f"batch of {x.shape[0]} rows per process does not split over the {local} batch shards this process holds "
                f"(mesh axes {batch_axes})"
            )
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree.map(place, local_batch)


def _local_batch_shards(mesh: Mesh, batch_axes: tuple[str, ...]) -> int:
    """How many distinct row blocks this process's devices hold (replicas across processes feed the same rows)."""
    positions = [mesh.axis_names.index(a) for a in batch_axes]
    me = jax.process_index()
    blocks = {tuple(idx[p] for p in positions) for idx, d in np.ndenumerate(mesh.devices) if d.process_index == me}
    return max(1, len(blocks))


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> Iterator[Mesh]:
    """Make `mesh` current (jax.set_mesh) with the logical rules (flax), so annotated params are created sharded."""
    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(resolve_rules(rules, mesh.axis_names)):
        yield mesh


def mesh_shape(mesh: Mesh) -> dict[str, int]:
    """{axis name: size}: what a checkpoint records about the mesh it was saved on."""
    return {str(a): int(n) for a, n in mesh.shape.items()}
