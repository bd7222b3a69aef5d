"""Checkpoints: sharded round trips, resharding on restore, incomplete saves, compatibility checks, preemption."""

import contextlib
import gc
import json
import os
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from nanocode import __version__
from nanocode.core.checkpoint import Checkpointer, fingerprint, make_meta
from nanocode.core.errors import CheckpointError, CorruptCheckpoint
from nanocode.core.mesh import AxesMesh, activate, logical_state, with_shardings
from nanocode.core.preemption import PreemptionGuard
from nanocode.core.resume_check import check_compatible, config_bindings


class Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        init = nnx.initializers.normal(1.0)
        self.wi = nnx.Param(nnx.with_partitioning(init, ("embed", "mlp"))(rngs.params(), (16, 32)))
        self.emb = nnx.Param(nnx.with_partitioning(init, ("vocab", "embed"))(rngs.params(), (64, 16)))
        self.rngs = rngs


def train_state(factory, seed=0):
    """Model params + an optimizer-like moment tree + a step counter, all on the factory's mesh."""
    mesh = factory.make()
    with activate(mesh, factory.rules):
        model = Tiny(nnx.Rngs(seed))
    params = nnx.state(model)
    moments = jax.tree.map(
        lambda x: x * 0.5 if jnp.issubdtype(x.dtype, jnp.floating) else x, nnx.state(model, nnx.Param)
    )
    return mesh, {"params": params, "mu": moments, "step": jnp.asarray(7, jnp.int32)}


META = dict(config="Pretrain.lr = 0.02\naxes.shape = (1, 8, 1)\n", tokenizer="tok123", data_spec="data456")


def leaves_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_of_sharded_state_data_and_meta(tmp_path):
    factory = AxesMesh(shape=(1, 8, 1))
    mesh, state = train_state(factory)
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        assert ckpt.latest_step() is None
        meta = make_meta(mesh=mesh, **META)
        assert ckpt.save(100, state, data={"shard": 3, "row": np.int64(17)}, meta=meta)
        ckpt.wait()
        assert ckpt.latest_step() == 100 and ckpt.steps() == [100]
        assert not ckpt.save(100, state)  # already saved: a preemption save right after the periodic one
        restored = ckpt.restore(abstract_state=state)  # the live arrays are the targets
    assert restored.step == 100
    leaves_equal(restored.state, state)
    assert restored.data == {"shard": 3, "row": 17}
    assert restored.meta["step"] == 100 and restored.meta["nanocode_version"] == __version__
    assert restored.meta["mesh_shape"] == {"data": 1, "fsdp": 8, "tensor": 1}
    assert restored.meta["tokenizer"] == "tok123" and restored.meta["config"] == META["config"]
    assert restored.state["params"]["wi"].get_value().sharding == state["params"]["wi"].get_value().sharding
    assert restored.state["params"]["wi"].out_sharding == ("embed", "mlp")  # Variable metadata comes from the target


def test_save_on_fsdp_mesh_restore_on_a_3d_mesh(tmp_path):
    _, state = train_state(AxesMesh(shape=(1, 8, 1)), seed=3)
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(5, state, meta=make_meta(**META))
        ckpt.wait()
    new = AxesMesh(shape=(2, 2, 2))
    new_mesh = new.make()
    abstract = {
        # logical Variables: their names are resolved through the (default) rules on the new mesh
        "params": logical_state(lambda: Tiny(nnx.Rngs(0))),
        # ShapeDtypeStructs that already carry their shardings
        "mu": with_shardings(logical_state(lambda: nnx.state(Tiny(nnx.Rngs(0)), nnx.Param)), new_mesh, new.rules),
        "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(new_mesh, P())),
    }
    with Checkpointer(tmp_path / "ckpt") as ckpt:  # a new process: a fresh checkpointer on the same directory
        with pytest.raises(CheckpointError, match="pass mesh= or restore under mesh.activate"):
            ckpt.restore(abstract_state=abstract)
        restored = ckpt.restore(abstract_state=abstract, mesh=new_mesh)
    leaves_equal(restored.state, state)
    wi = restored.state["params"]["wi"].get_value()
    assert wi.sharding.mesh == new_mesh and wi.sharding.spec == P("fsdp", "tensor")
    assert wi.addressable_shards[0].data.shape == (8, 16)
    assert restored.state["mu"]["emb"].get_value().sharding.spec == P("tensor", "fsdp")


def test_restore_under_activate_binds_abstract_mesh_shardings(tmp_path):
    factory = AxesMesh(shape=(2, 2, 2))
    mesh, state = train_state(factory)
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(1, state["params"])
        ckpt.wait()
        with activate(mesh, factory.rules):  # eval_shape under the mesh gives abstract-mesh shardings
            abstract = nnx.state(nnx.eval_shape(lambda: Tiny(nnx.Rngs(0))))
            restored = ckpt.restore(abstract_state=abstract)
    leaves_equal(restored.state, state["params"])
    assert restored.state["wi"].get_value().sharding.mesh == mesh


def test_latest_step_ignores_incomplete_saves(tmp_path):
    _, state = train_state(AxesMesh(shape=(1, 8, 1)))
    root = tmp_path / "ckpt"
    with Checkpointer(root) as ckpt:
        ckpt.save(5, state, meta=make_meta(**META))
        ckpt.wait()
        # what a save killed half-way leaves: orbax's temporary directory, never renamed
        (root / "7.orbax-checkpoint-tmp" / "state").mkdir(parents=True)
        # and a step directory without its commit record (e.g. a partial copy of a run directory)
        (root / "9" / "state").mkdir(parents=True)
        (root / "9" / "_CHECKPOINT_METADATA").write_text(json.dumps({"init_timestamp_nsecs": 1}))
        assert ckpt.latest_step() == 5 and ckpt.steps() == [5]
        assert ckpt.restore(abstract_state=state).step == 5
        with pytest.raises(CheckpointError, match="no complete checkpoint for step 9") as e:
            ckpt.restore(9, abstract_state=state)
        assert "\n" not in str(e.value)
        with pytest.raises(CheckpointError, match="exists but is incomplete"):
            ckpt.save(9, state)
    with Checkpointer(root) as ckpt:  # a restarted run (orbax removes its temporary directory in the background)
        assert ckpt.latest_step() == 5
        ckpt.save(7, state)  # the step the killed save was writing can be saved again
        ckpt.wait()
        assert ckpt.steps() == [5, 7]


def test_max_to_keep_and_missing_checkpoints(tmp_path):
    _, state = train_state(AxesMesh(shape=(1, 1, 1)))
    with Checkpointer(tmp_path / "ckpt", max_to_keep=2) as ckpt:
        with pytest.raises(CheckpointError, match="no complete checkpoint in"):
            ckpt.restore(abstract_state=state)
        for step in (10, 20, 30):
            ckpt.save(step, state)
        ckpt.wait()
        assert ckpt.steps() == [20, 30]
        assert ckpt.read_meta()["step"] == 30


def test_restore_into_a_different_structure_is_a_one_line_error(tmp_path):
    _, state = train_state(AxesMesh(shape=(1, 1, 1)))
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(1, state)
        ckpt.wait()
        with pytest.raises(CheckpointError, match="restoring step 1") as e:
            ckpt.restore(abstract_state={"only": jnp.zeros((3,))})
    assert "\n" not in str(e.value)


def test_json_items_must_be_json(tmp_path):
    _, state = train_state(AxesMesh(shape=(1, 1, 1)))
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        with pytest.raises(CheckpointError, match="data state is not JSON"):
            ckpt.save(1, state, data={"iterator": object()})
    assert not (tmp_path / "ckpt" / "1").exists()


# -- compatibility ------------------------------------------------------------------------------------------------
def test_check_compatible_accepts_the_same_run_and_a_different_mesh():
    saved = {**make_meta(**META), "step": 100}
    moved = dict(META, config="Pretrain.lr = 0.02\naxes.shape = (2, 2, 2)\n")
    assert check_compatible(saved, make_meta(**moved)) == []


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(tokenizer="tok999"), "tokenizer fingerprint differs (checkpoint 'tok123', this run 'tok999')"),
        (dict(data_spec="other"), "data spec fingerprint differs"),
        (
            dict(config="Pretrain.lr = 0.03\naxes.shape = (1, 8, 1)\n"),
            "config differs at Pretrain.lr (checkpoint 0.02, this run 0.03)",
        ),
        (
            dict(config="Pretrain.lr = 0.02\nPretrain.seed = 1\n"),
            "config differs at Pretrain.seed (checkpoint unset, this run 1)",
        ),
    ],
)
def test_check_compatible_refuses_a_mismatch_unless_forced(change, needle):
    saved = {**make_meta(**META), "step": 100}
    expected = make_meta(**dict(META, **change))
    with pytest.raises(CheckpointError) as e:
        check_compatible(saved, expected)
    message = str(e.value)
    assert "\n" not in message and message.startswith("checkpoint step 100: ") and needle in message
    problems = check_compatible(saved, expected, force=True)
    assert len(problems) == 1 and needle in problems[0]


def test_config_bindings_joins_gin_continuation_lines():
    text = "# Parameters for axes:\naxes.rules = \\\n    (('batch', 'data'),\n     ('seq', None))\naxes.shape = (1, 8, 1)\n"
    assert config_bindings(text) == {"axes.rules": "(('batch', 'data'), ('seq', None))", "axes.shape": "(1, 8, 1)"}
    assert config_bindings(text, ignore=("axes",)) == {}


def test_fingerprint_is_stable_and_discriminating():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint("x") != fingerprint("y") and len(fingerprint(b"x")) == 16


# -- preemption ---------------------------------------------------------------------------------------------------
def test_preemption_guard_turns_sigterm_into_a_flag():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard() as guard:
        assert not guard.should_stop(0)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next bytecode of this thread
        assert guard.requested and guard.should_stop(1)
    assert signal.getsignal(signal.SIGTERM) is before


# -- integrity ----------------------------------------------------------------------------------------------------
def flip_byte(path, at=0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x01
    path.write_bytes(bytes(data))


def largest_file(directory):
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def saved_steps(root, steps, seed=0):
    """Steps saved from states that differ (seed + step), so a fallback is visible in the values. `big` is large
    enough for orbax to store it out of line, in a data file whose bytes it restores without any check."""
    states = {}
    with Checkpointer(root) as ckpt:
        for step in steps:
            mesh, states[step] = train_state(AxesMesh(shape=(1, 8, 1)), seed=seed + step)
            big = jax.random.normal(jax.random.key(seed + step), (256, 256))
            states[step]["big"] = jax.device_put(big, NamedSharding(mesh, P("fsdp")))
            ckpt.save(step, states[step], data={"row": step}, meta=make_meta(**META))
        ckpt.wait()
    return states


def test_a_flipped_byte_in_an_array_file_is_a_one_line_error_naming_step_and_file(tmp_path):
    root = tmp_path / "ckpt"
    states = saved_steps(root, [4])
    target = largest_file(root / "4" / "state")  # the arrays' data (orbax restores a flipped byte in it silently)
    flip_byte(target)
    with Checkpointer(root) as ckpt:
        with pytest.raises(CorruptCheckpoint) as e:
            ckpt.restore(4, abstract_state=states[4])
    message = str(e.value)
    assert "\n" not in message and "step 4" in message and str(root / "4") in message
    flip_byte(target)  # flipped back: the same step restores and verifies again
    with Checkpointer(root) as ckpt:
        leaves_equal(ckpt.restore(4, abstract_state=states[4]).state, states[4])


def test_a_failed_restore_prints_nothing_after_its_error(tmp_path, monkeypatch):
    """The reads a failed restore abandons finish later in tensorstore threads, calling back into a closed event
    loop; none of that may reach the process's unraisable hook (it printed "Event loop is closed" tracebacks)."""
    root = tmp_path / "ckpt"
    states = saved_steps(root, [4])
    leftovers = []
    monkeypatch.setattr(sys, "unraisablehook", leftovers.append)
    for path in sorted(p for p in (root / "4" / "state").rglob("*") if p.is_file()):
        for at in (0.1, 0.5, 0.95):
            flip_byte(path, at)
            with Checkpointer(root) as ckpt, contextlib.suppress(CheckpointError):
                ckpt.restore(4, abstract_state=states[4])
            flip_byte(path, at)
    time.sleep(0.5)  # the reads still in flight finish (not a timing assert: it only gives leftovers time to show)
    gc.collect()
    assert [repr(u.exc_value) for u in leftovers] == []


def test_checksums_hold_across_a_resharded_restore(tmp_path):
    """The checksum is of the value, not of the shards: saved on (1, 8, 1), verified on (2, 2, 2)."""
    root = tmp_path / "ckpt"
    states = saved_steps(root, [2])
    meta = Checkpointer(root).read_meta(2)
    assert {"params/wi/value", "mu/emb/value", "step"} <= set(meta["array_checksums"])
    new_mesh = AxesMesh(shape=(2, 2, 2)).make()

    def on_new_mesh(x):  # the same partition specs, over the other mesh (the rng key: replicated)
        spec = x.sharding.spec if isinstance(x.sharding, NamedSharding) else P()
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(new_mesh, spec))

    with Checkpointer(root) as ckpt:
        restored = ckpt.restore(abstract_state=jax.tree.map(on_new_mesh, states[2]))
    leaves_equal(restored.state, states[2])
    assert restored.state["big"].sharding.mesh == new_mesh and restored.state["big"].sharding.spec == P("fsdp")


def test_resume_falls_back_past_a_corrupt_step_with_a_warning(tmp_path, capsys):
    root = tmp_path / "ckpt"
    states = saved_steps(root, [3, 6])
    flip_byte(largest_file(root / "6" / "state"))
    checked = []
    with Checkpointer(root) as ckpt:
        restored = ckpt.restore(abstract_state=states[6], check=lambda meta: checked.append(meta["step"]))
        assert restored.step == 3 and restored.data == {"row": 3} and checked == [6, 3]
        leaves_equal(restored.state, states[3])
        warning = capsys.readouterr().err.strip()
        assert warning.count("\n") == 0 and "step 6" in warning and "resuming from step 3" in warning
        assert (root / "6.corrupt").is_dir() and ckpt.steps() == [3]  # kept, not deleted, and no longer a step
        assert ckpt.save(6, states[6])  # the resumed run can save step 6 again
        ckpt.wait()
        assert ckpt.steps() == [3, 6]


def test_a_corrupt_commit_record_is_set_aside_with_a_warning(tmp_path, capsys):
    root = tmp_path / "ckpt"
    states = saved_steps(root, [3, 6])
    flip_byte(root / "6" / "_CHECKPOINT_METADATA", at=0.9)  # no longer JSON
    with Checkpointer(root) as ckpt:
        assert ckpt.steps() == [3]
        restored = ckpt.restore(abstract_state=states[3])
        assert restored.step == 3
        warning = capsys.readouterr().err
        assert "checkpoint step 6: its commit record _CHECKPOINT_METADATA is unreadable" in warning
        assert (root / "6.corrupt").is_dir()
        assert ckpt.save(6, states[6])  # before: "exists but is incomplete" once training got back to step 6
        ckpt.wait()
        assert ckpt.steps() == [3, 6]


def test_the_only_step_corrupt_is_an_error_and_stays_in_place(tmp_path):
    root = tmp_path / "ckpt"
    states = saved_steps(root, [5])
    flip_byte(largest_file(root / "5" / "state"))
    with Checkpointer(root) as ckpt:
        with pytest.raises(CorruptCheckpoint, match="checkpoint step 5: array .* does not match its saved checksum"):
            ckpt.restore(abstract_state=states[5])
    assert (root / "5").is_dir() and not (root / "5.corrupt").exists()


@pytest.mark.parametrize("item, edit", [("meta", ("tok123", "tok124")), ("data", ('"row": 5', '"row": 6'))])
def test_edited_meta_or_data_position_is_detected(tmp_path, item, edit):
    root = tmp_path / "ckpt"
    states = saved_steps(root, [5])
    path = root / "5" / item / "metadata"
    assert edit[0] in path.read_text()
    path.write_text(path.read_text().replace(*edit))  # still valid JSON: only the checksum can tell
    with Checkpointer(root) as ckpt:
        with pytest.raises(CorruptCheckpoint, match=f"checkpoint step 5: {path} does not match its checksum"):
            ckpt.restore(5, abstract_state=states[5])


def test_a_mismatched_target_is_not_taken_for_corruption(tmp_path):
    root = tmp_path / "ckpt"
    saved_steps(root, [3, 6])
    with Checkpointer(root) as ckpt:
        with pytest.raises(CheckpointError) as e:
            ckpt.restore(abstract_state={"only": jnp.zeros((3,))})
        assert not isinstance(e.value, CorruptCheckpoint) and ckpt.steps() == [3, 6]
