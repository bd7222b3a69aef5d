"""Issue: 2 processes x 4 simulated devices train exactly like 1 process x 8 (losses within 1e-5, fp32).

Each process feeds only its own slice of every global batch (`shard_batch` builds the global array from the
process-local rows), the coordinator runs on 127.0.0.1, and the step is the real jitted train step with Muon+AdamW
and gradient accumulation.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import jax
    from flax import nnx
    from nanocode.core import distributed, mesh as mesh_lib
    distributed.initialize()
    from nanocode.models.gpt import GPT, GPTConfig
    from nanocode.optim.muon import MuonAdamW
    from nanocode.train.state import init_train_state
    from nanocode.train.step import make_train_step

    TINY = GPTConfig(sequence_len=64, vocab_size=512, n_layer=2, n_head=2, n_kv_head=2, n_embd=64)
    factory = mesh_lib.AxesMesh(shape=tuple(json.loads(sys.argv[1])), dcn_shape=None)
    mesh, rules = factory.make(), factory.rules
    n_proc, me = jax.process_count(), jax.process_index()
    losses = []
    with mesh_lib.activate(mesh, rules):
        abstract = nnx.state(nnx.eval_shape(lambda: GPT(TINY, rngs=nnx.Rngs(0))), nnx.Param)
        tx = MuonAdamW(ns_dtype="float32").build(abstract, 10)
        init = init_train_state(GPT, TINY, tx, seed=0, mesh=mesh, rules=rules)
        step = make_train_step(init.graphdef, tx, accum_steps=2, state_shardings=init.shardings,
                               batch_sharding=mesh_lib.batch_sharding(mesh, rules))
        state = init.state
        for _ in range(3):
            global_batch = np.random.default_rng(0).integers(0, 512, (16, 65), dtype=np.int32)
            rows = 16 // n_proc
            local = global_batch[me * rows : (me + 1) * rows]  # this process's slice only
            state, metrics = step(state, mesh_lib.shard_batch({"tokens": local}, mesh, rules))
            losses.append(float(metrics["loss"]))
    print("RESULT " + json.dumps({"process": me, "count": n_proc, "devices": jax.device_count(), "losses": losses}))
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script, processes: int, devices_each: int, shape) -> list[dict]:
    port = free_port()
    procs = []
    for i in range(processes):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each}", JAX_PLATFORMS="cpu")
        for k in ("NANOCODE_COORDINATOR", "NANOCODE_NUM_PROCESSES", "NANOCODE_PROCESS_ID"):
            env.pop(k, None)
        if processes > 1:
            env |= {
                "NANOCODE_COORDINATOR": f"127.0.0.1:{port}",
                "NANOCODE_NUM_PROCESSES": str(processes),
                "NANOCODE_PROCESS_ID": str(i),
            }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), json.dumps(shape)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=300)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results = []
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
        results.append(json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:]))
    return results


@pytest.mark.slow
def test_two_processes_of_four_devices_match_one_process_of_eight(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    (single,) = launch(script, 1, 8, [1, 8, 1])
    multi = launch(script, 2, 4, [1, 8, 1])
    assert single["devices"] == 8 and all(r["devices"] == 8 and r["count"] == 2 for r in multi)
    assert single["losses"][2] < single["losses"][0]
    for r in multi:  # every process reports the same global loss
        np.testing.assert_allclose(r["losses"], single["losses"], atol=1e-5, rtol=0)
