"""Meshes, logical-axis rules and start-up validation on 8 simulated CPU devices."""

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from nanocode.core import config, sharding
from nanocode.core.errors import ConfigError
from nanocode.core.kinds import MESHES
from nanocode.core.mesh import (
    DEFAULT_RULES,
    AxesMesh,
    activate,
    batch_sharding,
    logical_state,
    logical_to_sharding,
    logical_to_spec,
    partition_table,
    shard_batch,
    validate,
    with_shardings,
)


class Tiny(nnx.Module):
    """Two annotated matrices, an unannotated bias and an rng stream: the kinds of leaves a real model has."""

    def __init__(self, embed=16, mlp=32, vocab=64, *, wi_axes=("embed", "mlp"), rngs: nnx.Rngs):
        init = nnx.initializers.normal(0.02)
        self.wi = nnx.Param(nnx.with_partitioning(init, wi_axes)(rngs.params(), (embed, mlp)))
        self.emb = nnx.Param(nnx.with_partitioning(init, ("vocab", "embed"))(rngs.params(), (vocab, embed)))
        self.bias = nnx.Param(jnp.zeros((mlp,)))
        self.rngs = rngs


def abstract_tiny(**kw):
    return logical_state(lambda: Tiny(rngs=nnx.Rngs(0), **kw))


def test_registered_under_axes_with_a_rule_for_every_logical_axis():
    assert MESHES.get("axes") is AxesMesh
    assert {name for name, _ in DEFAULT_RULES} == set(sharding.AXES)


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((1, 1, 1), (1, 1, 1)),
        ((1, 8, 1), (1, 8, 1)),
        ((2, 2, 2), (2, 2, 2)),
        ((2, -1, 1), (2, 4, 1)),
        ((-1, 1, 1), (8, 1, 1)),
    ],
)
def test_mesh_shapes(shape, expected):
    mesh = AxesMesh(shape=shape).make()
    assert tuple(mesh.shape.values()) == expected
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    assert len(set(mesh.devices.flat)) == np.prod(expected)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(shape=(3, -1, 1)), "cannot fill -1"),
        (dict(shape=(2, 8, 1)), "needs 16 devices but 8"),
        (dict(shape=(-1, -1, 1)), "at most one -1"),
        (dict(shape=(1, 8)), "has 2 entries"),
        (dict(shape=(1, 0, 1)), "positive sizes"),
        (dict(axes=("data", "data", "tensor")), "twice"),
        (dict(dcn_shape=(2, 1, 1)), r"axes.dcn_shape \(2, 1, 1\) needs 2 processes but 1 are available"),
        (dict(dcn_shape=(2, 1)), "one entry per mesh axis"),
    ],
)
def test_bad_shapes_are_one_line_config_errors(kwargs, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        AxesMesh(**kwargs).make()
    assert "\n" not in str(e.value)


def test_rules_drop_absent_axes_but_keep_the_logical_name():
    rules = dict(AxesMesh(shape=(2, -1), axes=("data", "fsdp")).rules)
    assert rules["batch"] == ("data", "fsdp")
    assert rules["embed"] == "fsdp"
    assert rules["mlp"] is None and rules["vocab"] is None and rules["heads"] is None  # tensor is absent
    assert set(rules) == {name for name, _ in DEFAULT_RULES}  # every name still resolves (NNX needs it)
    only_fsdp = dict(AxesMesh(shape=(-1,), axes=("fsdp",)).rules)
    assert only_fsdp["batch"] == "fsdp"  # a one-axis tuple collapses to the axis name
    # size-1 axes are present, so they stay
    assert dict(AxesMesh(shape=(8, 1, 1)).rules)["mlp"] == "tensor"


def test_rules_with_a_typo_or_twice_the_same_name_are_refused():
    with pytest.raises(ConfigError, match="'fdsp'"):
        AxesMesh(rules=(("embed", "fdsp"),))
    with pytest.raises(ConfigError, match="'embed' has two rules"):
        AxesMesh(rules=(("embed", "fsdp"), ("embed", None)))
    with pytest.raises(ConfigError, match="not a"):
        AxesMesh(rules=(("embed", 3),))


def test_rules_from_gin_lists_are_normalised():
    factory = AxesMesh(rules=[["batch", ["data", "fsdp"]], ["embed", "fsdp"]])
    assert factory.rules == (("batch", ("data", "fsdp")), ("embed", "fsdp"))


@pytest.mark.parametrize(
    "shape, wi_spec, wi_shard",
    [
        ((1, 1, 1), P("fsdp", "tensor"), (16, 32)),
        ((1, 8, 1), P("fsdp", "tensor"), (2, 32)),
        ((2, 2, 2), P("fsdp", "tensor"), (8, 16)),
    ],
)
def test_module_built_inside_activate_is_sharded_by_the_rules(shape, wi_spec, wi_shard):
    factory = AxesMesh(shape=shape)
    mesh = factory.make()
    with activate(mesh, factory.rules):
        model = Tiny(rngs=nnx.Rngs(0))
    wi = model.wi.get_value()
    assert wi.sharding.mesh == mesh and wi.sharding.spec == wi_spec
    assert wi.addressable_shards[0].data.shape == wi_shard
    assert model.emb.get_value().sharding.spec == P("tensor", "fsdp")
    assert model.bias.get_value().sharding.is_fully_replicated
    # the shardings computed from the logical names alone are the ones the model got
    expected = logical_to_sharding(nnx.state(model), mesh, factory.rules)
    assert expected["wi"].get_value() == wi.sharding
    assert expected["emb"].get_value() == model.emb.get_value().sharding
    # values do not depend on the mesh
    with activate(AxesMesh(shape=(1, 1, 1)).make(), factory.rules):
        reference = Tiny(rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(wi), np.asarray(reference.wi.get_value()))


def test_validate_accepts_a_good_state_and_tables_it():
    factory = AxesMesh(shape=(2, 2, 2))
    mesh = factory.make()
    state = abstract_tiny()
    validate(state, mesh, factory.rules)
    table = partition_table(state, mesh, factory.rules)
    wi_line = next(line for line in table.splitlines() if line.startswith("wi "))
    assert "('embed', 'mlp')" in wi_line and "P('fsdp', 'tensor')" in wi_line and "(8, 16)" in wi_line
    assert table.splitlines()[-1].startswith("mesh (data=2, fsdp=2, tensor=2)")
    # the restore target: the same state as ShapeDtypeStructs with concrete shardings
    targets = with_shardings(state, mesh, factory.rules)
    wi = targets["wi"].get_value()
    assert isinstance(wi, jax.ShapeDtypeStruct) and wi.shape == (16, 32) and wi.sharding.spec == P("fsdp", "tensor")
    assert wi.sharding.mesh == mesh


def test_validate_names_a_parameter_with_an_indivisible_dimension():
    factory = AxesMesh(shape=(1, 8, 1))
    mesh = factory.make()
    state = abstract_tiny(embed=12)  # 12 rows over fsdp=8
    with pytest.raises(ConfigError) as e:
        validate(state, mesh, factory.rules)
    message = str(e.value)
    assert "\n" not in message
    assert "parameter emb" in message and "embed=12" in message and "'fsdp'" in message and "size 8" in message


def test_validate_names_a_parameter_with_two_dimensions_on_one_mesh_axis():
    rules = (("embed", "fsdp"), ("mlp", "fsdp"), ("vocab", "tensor"))
    mesh = AxesMesh(shape=(1, 8, 1)).make()
    state = abstract_tiny()
    with pytest.raises(ConfigError) as e:
        validate(state, mesh, rules)
    assert "\n" not in str(e.value)
    assert "parameter wi" in str(e.value) and "'embed' and 'mlp' both map to mesh axis 'fsdp'" in str(e.value)


def test_validate_names_an_unknown_logical_axis():
    mesh = AxesMesh(shape=(1, 8, 1)).make()
    state = abstract_tiny(wi_axes=("embed", "ffn"))
    with pytest.raises(ConfigError, match="parameter wi: logical axis 'ffn' has no rule"):
        validate(state, mesh, DEFAULT_RULES)


def test_logical_to_sharding_accepts_name_tuples_and_specs():
    factory = AxesMesh(shape=(2, 2, 2))
    mesh = factory.make()
    tree = {"a": ("embed", "mlp"), "b": P("batch", None), "c": None}
    out = logical_to_sharding(tree, mesh, factory.rules)
    assert out["a"].spec == P("fsdp", "tensor")
    assert out["b"].spec == P(("data", "fsdp"), None)
    assert out["c"].spec == P()
    assert logical_to_spec(("layers", "embed", "heads", "head_dim"), factory.rules) == P(None, "fsdp", "tensor", None)


def test_shard_batch_on_one_process():
    factory = AxesMesh(shape=(2, 2, 2))
    mesh = factory.make()
    assert batch_sharding(mesh, factory.rules).spec == P(("data", "fsdp"), None)
    local = {"inputs": np.arange(8 * 5).reshape(8, 5), "weights": np.ones(8, np.float32)}
    out = shard_batch(local, mesh, factory.rules)
    np.testing.assert_array_equal(np.asarray(out["inputs"]), local["inputs"])
    assert out["inputs"].sharding.spec == P(("data", "fsdp"), None)
    assert out["inputs"].addressable_shards[0].data.shape == (2, 5)  # 8 rows over data x fsdp = 4 row blocks
    assert out["weights"].sharding.spec == P(("data", "fsdp"))
    with pytest.raises(ConfigError, match="6 rows per process does not split over the 4 batch shards"):
        shard_batch(np.zeros((6, 5)), mesh, factory.rules)


def test_activate_sets_mesh_and_rules_for_logical_constraints():
    import flax.linen as nn

    factory = AxesMesh(shape=(2, 2, 2))
    mesh = factory.make()
    with activate(mesh, factory.rules):
        assert jax.sharding.get_abstract_mesh().shape == mesh.shape
        x = jax.jit(lambda x: nn.with_logical_constraint(x * 2, ("batch", "seq", "embed")))(jnp.ones((8, 4, 16)))
    # linen's priority rules: embed would reuse fsdp, which batch already holds, so it stays unsharded
    assert x.sharding.spec in (P(("data", "fsdp"), None, None), P(("data", "fsdp")))


# -- the gin files --------------------------------------------------------------------------------------------------
def _mesh_probe(mesh):
    return mesh


gin.register("mesh_probe", module="tests.test_mesh")(_mesh_probe)


@pytest.mark.parametrize(
    "name, shape",
    [("cpu", (1, 1, 1)), ("gpu_1", (1, 1, 1)), ("tpu_v6e8", (1, 8, 1)), ("tpu_v6e8_dp", (8, 1, 1)), ("pod", (1, 8, 1))],
)
def test_mesh_gin_files(gin_clean, name, shape):
    config.parse([f"experiments/base/mesh/{name}.gin"], ["mesh_probe.mesh = @axes()"])
    factory = config.build(_mesh_probe, "mesh_probe")
    assert isinstance(factory, AxesMesh)
    assert dict(factory.rules) == dict(AxesMesh().rules)  # every file includes rules.gin: the default rules
    mesh = factory.make()  # pod.gin on one process: one slice of 8 devices, all on fsdp
    assert tuple(mesh.shape.values()) == shape
    if name == "pod":
        assert factory.dcn_shape == (-1, 1, 1)
        assert gin.query_parameter("nanocode.distributed_initialize.auto") is True
