"""Distributed init: single-process no-ops and config errors; two real local processes sharing one mesh (~5 s)."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from absl import logging as absl_logging

from nanocode.core import config, distributed
from nanocode.core.errors import ConfigError

ENV = (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID)


@pytest.fixture
def no_cluster_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_single_process_needs_no_initialisation(no_cluster_env):
    assert distributed.initialize() is False
    no_cluster_env.setenv(distributed.ENV_NUM_PROCESSES, "1")
    assert distributed.initialize() is False
    assert not jax.distributed.is_initialized()
    assert distributed.process_index() == 0 and distributed.process_count() == 1 and distributed.is_main()


@pytest.mark.parametrize(
    "env, kwargs, needle",
    [
        ({distributed.ENV_NUM_PROCESSES: "two"}, {}, "$NANOCODE_NUM_PROCESSES='two' is not an integer"),
        ({distributed.ENV_NUM_PROCESSES: "2", distributed.ENV_PROCESS_ID: "0"}, {}, "no coordinator_address"),
        ({distributed.ENV_COORDINATOR: "127.0.0.1:1"}, dict(num_processes=2), "no process_id"),
        ({}, dict(coordinator_address="127.0.0.1:1", num_processes=2, process_id=2), "process_id 2 is outside 0..1"),
    ],
)
def test_incomplete_cluster_settings_are_one_line_errors(no_cluster_env, env, kwargs, needle):
    for k, v in env.items():
        no_cluster_env.setenv(k, v)
    with pytest.raises(ConfigError) as e:
        distributed.initialize(**kwargs)
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert not jax.distributed.is_initialized()


def test_gin_bindings_reach_initialize(gin_clean, no_cluster_env):
    config.parse([], ["import nanocode.core.distributed", "distributed_initialize.num_processes = 1"])
    assert config.build(distributed.initialize, "distributed_initialize") is False
    config.parse([], ["import nanocode.core.distributed", "distributed_initialize.num_processes = 2"])
    with pytest.raises(ConfigError, match="no coordinator_address"):
        config.build(distributed.initialize, "distributed_initialize")


# -- two real processes ---------------------------------------------------------------------------------------------
WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from absl import logging as absl_logging
    from nanocode.core import distributed

    assert distributed.initialize()          # from the NANOCODE_* environment
    assert distributed.initialize()          # idempotent
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P
    from nanocode.core.checkpoint import Checkpointer
    from nanocode.core.mesh import AxesMesh, shard_batch

    # one slice per process (the pod.gin layout): data across processes, fsdp over each process's 4 devices
    factory = AxesMesh(shape=(1, -1, 1), dcn_shape=(-1, 1, 1))
    mesh = factory.make()
    me, rows = distributed.process_index(), 8
    global_batch = np.arange(16 * 8, dtype=np.int32).reshape(16, 8)
    local = global_batch[me * rows : (me + 1) * rows]          # each process loads only its own rows
    x = shard_batch({"tokens": local}, mesh, factory.rules)["tokens"]
    replicated = NamedSharding(mesh, P())
    total = jax.jit(lambda a: a.sum(), out_shardings=replicated)(x)
    row_sums = jax.jit(lambda a: a.sum(axis=1), out_shardings=replicated)(x)

    # a checkpoint written by both processes, read back into a different layout
    w = jax.jit(lambda a: (a * 2).astype(np.float32), out_shardings=NamedSharding(mesh, P(("data", "fsdp"))))(x)
    ckpt = Checkpointer(sys.argv[1])
    ckpt.save(3, {"w": w}, data={"position": 16}, meta={"tokenizer": "t"})
    ckpt.wait()
    target = {"w": jax.ShapeDtypeStruct(w.shape, w.dtype, sharding=NamedSharding(mesh, P(None, "fsdp")))}
    ckpt_restored = ckpt.restore(abstract_state=target)
    back = jax.jit(lambda a: a.sum(), out_shardings=replicated)(ckpt_restored.state["w"])
    ckpt.close()
    print("RESULT " + json.dumps({
        "process": me, "count": distributed.process_count(), "main": distributed.is_main(),
        "mesh": {k: int(v) for k, v in mesh.shape.items()}, "shape": list(x.shape),
        "total": int(total), "row_sums": np.asarray(row_sums).tolist(),
        "restored_sum": float(back), "restored_spec": str(ckpt_restored.state["w"].sharding.spec),
        "data": ckpt_restored.data, "step": ckpt_restored.step,
        "absl_verbosity": absl_logging.get_verbosity(),
    }))
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_build_one_mesh_and_agree_on_a_global_sum(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = free_port()
    procs = []
    for i in range(2):
        env = dict(
            os.environ,
            XLA_FLAGS="--xla_force_host_platform_device_count=4",
            JAX_PLATFORMS="cpu",
            NANOCODE_COORDINATOR=f"127.0.0.1:{port}",
            NANOCODE_NUM_PROCESSES="2",
            NANOCODE_PROCESS_ID=str(i),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(tmp_path / "ckpt")],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=240)
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results = []
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
        results.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))

    global_batch = np.arange(16 * 8).reshape(16, 8)
    for i, r in enumerate(sorted(results, key=lambda r: r["process"])):
        assert r["process"] == i and r["count"] == 2 and r["main"] == (i == 0)
        assert r["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
        assert r["shape"] == [16, 8]  # global rows = 8 local rows x 2 processes
        assert r["total"] == int(global_batch.sum())  # equals the single-process result
        assert r["row_sums"] == global_batch.sum(axis=1).tolist()  # process 0's rows come first
        assert r["restored_sum"] == 2.0 * global_batch.sum()
        assert r["restored_spec"] == str(jax.sharding.PartitionSpec(None, "fsdp"))
        assert r["data"] == {"position": 16} and r["step"] == 3
        # absl (JAX's and orbax's logs): errors only on processes other than 0
        assert (r["absl_verbosity"] == absl_logging.ERROR) == (i != 0)
