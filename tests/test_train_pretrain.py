"""The pretraining loop on a tiny model over the embedded corpus: logs, evals, checkpoints, exact resume after a
SIGKILL, resume on another mesh, refusal of a mismatched checkpoint, clean SIGTERM."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gin
import jax
import numpy as np
import pytest

from nanocode.cli.main import main
from nanocode.core import mesh as mesh_lib
from nanocode.core.checkpoint import Checkpointer, complete_steps
from nanocode.core.errors import CheckpointError
from nanocode.core.workspace import Workspace
from nanocode.train.pretrain import copy_rows
from tests.helpers import load_experiment

EXPERIMENT = "experiments/debug_cpu.gin"
TINY = [
    "embedded_code.max_docs = 120",
    "embedded_code.val_fraction = 0.2",  # packing crops long files to one row each: enough val files for 2 batches
    "embedded_prose.max_docs = 400",
    "TokenizerTraining.max_chars = 200_000",
    "GPTConfig.n_layer = 2",
    "GPTConfig.n_embd = 64",
    "GPTConfig.n_head = 2",
    "GPTConfig.n_kv_head = 2",
    "GPTConfig.sequence_len = 64",
    "Pretraining.sequence_len = 64",  # the debug experiment pretrains at its own context
    "GPTConfig.vocab_size = 512",
    "Pretraining.batch_size = 8",
    "Pretraining.micro_batch_size = 4",
    "Pretraining.num_steps = 6",
    "Pretraining.eval_every = 3",
    "Pretraining.eval_batches = 2",
    "Pretraining.sample_every = 0",
    "Pretraining.sample_tokens = 4",
    "Pretraining.checkpoint_every = 3",
    "Pretraining.peak_flops = 1e12",
]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Embedded shards and a 512-id tokenizer, built once for the module (tag 'debug'; tests copy it to their tag)."""
    base = tmp_path_factory.mktemp("pretrain_base")
    old = os.environ.get("NANOCODE_BASE_DIR")
    os.environ["NANOCODE_BASE_DIR"] = str(base)
    try:
        argv = ["tok-train", "--gin_file", EXPERIMENT, "--prepare", "--quiet"]
        assert main(argv + [f"--gin_param={p}" for p in TINY]) == 0
    finally:
        gin.clear_config()
        if old is not None:
            os.environ["NANOCODE_BASE_DIR"] = old
    return base


@pytest.fixture
def workspace_env(base, monkeypatch):
    monkeypatch.setenv("NANOCODE_BASE_DIR", str(base))
    yield base
    gin.clear_config()


def params_for(tag: str, *extra: str) -> list[str]:
    return [*TINY, f"Experiment.tag = '{tag}'", *extra]


def with_tokenizer(base: Path, tag: str) -> Workspace:
    """A fresh tag that shares the module's tokenizer (and, as every tag does, its data)."""
    ws = Workspace(tag)
    if not ws.tokenizer_dir.exists():
        ws.tokenizer_dir.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(Workspace("debug").tokenizer_dir, ws.tokenizer_dir)
    return ws


def experiment(tag: str, *extra: str):
    return load_experiment([EXPERIMENT], params_for(tag, *extra)).pretraining


def train(base, tag: str, *extra: str, **kwargs) -> dict:
    ws = with_tokenizer(base, tag)
    return experiment(tag, *extra).run(ws, progress=False, **kwargs)


def losses(tag: str) -> dict[int, float]:
    """The last logged loss of every step (a resumed run re-logs the steps after its checkpoint)."""
    out = {}
    for line in (Workspace(tag).run_dir("pretrain") / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            out[record["step"]] = record["loss"]
    return out


def final_params(tag: str, step: int) -> list[np.ndarray]:
    restored = Checkpointer(Workspace(tag).checkpoint_dir("pretrain")).restore(step)
    return [np.asarray(x) for x in jax.tree.leaves(restored.state)]


def test_the_copy_test_writes_each_span_of_shuffled_tokens_twice_and_scores_the_same_tokens_in_each_copy():
    rows = np.arange(2 * 11).reshape(2, 11)  # 11 tokens: one pair of 3-token spans (6 tokens), 5 left as they were
    repeated, first, second = copy_rows(rows, length=3)
    for row, original in zip(repeated, rows):
        assert sorted(row[:3]) == sorted(set(row[:3])) and set(row[:3]) <= set(original)  # shuffled, no repeats
        np.testing.assert_array_equal(row[3:6], row[:3])
        np.testing.assert_array_equal(row[6:], original[6:])  # after the last whole pair: as it was
    # mask[:, t] scores the prediction of token t: tokens 2-3 of each copy (the first of a copy has no clue)
    np.testing.assert_array_equal(first[0], [0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(second[0], [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0])
    again, _, _ = copy_rows(rows, length=3)
    np.testing.assert_array_equal(again, repeated)  # the same test at every eval


class Stop(Exception):
    pass


def test_run_logs_evals_samples_and_checkpoints(workspace_env):
    last = train(workspace_env, "logs")
    run_dir = Workspace("logs").run_dir("pretrain")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "val_bpb" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "grad_norm", "lr", "tok_per_s", "mfu", "peak_mem", "dt", "valid_tokens"):
        assert all(np.isfinite(r[key]) for r in steps), key
    assert steps[0]["valid_tokens"] == 8 * 64
    assert [r["step"] for r in evals] == [0, 3, 6]
    assert all(np.isfinite(r[k]) for r in evals for k in ("web_bpb", "code_bpb", "val_bpb", "copy_gain"))
    assert evals[-1]["val_bpb"] < evals[0]["val_bpb"]
    assert abs(evals[-1]["copy_gain"]) < 0.5  # six steps grow no induction heads: both copies cost the same
    assert last["step"] == 6 and last["val_bpb"] == evals[-1]["val_bpb"]
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert [s["prompt"] for s in samples][0] == "The capital of France is" and samples[0]["step"] == 6
    assert "Pretraining.batch_size = 8" in (run_dir / "config.gin").read_text()
    assert Checkpointer(Workspace("logs").checkpoint_dir("pretrain")).steps() == [3, 6]


DRIVER = """
import sys, time
from nanocode.cli.experiment import load
experiment = load(["{experiment}"], sys.argv[2:])
def pause(step):
    if step == int(sys.argv[1]):
        print("CHECKPOINT", step, flush=True)
        time.sleep(600)  # the parent SIGKILLs us here, mid-run
experiment.pretraining.run(experiment.workspace, progress=False, on_checkpoint=pause)
"""


def test_resume_after_sigkill_is_exact(workspace_env):
    """6 steps straight == 3 steps, SIGKILL (no clean-up at all), resume to 6: same losses, same final weights."""
    train(workspace_env, "straight")
    with_tokenizer(workspace_env, "killed")
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER.format(experiment=EXPERIMENT), "3", *params_for("killed")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout.readline().split() == ["CHECKPOINT", "3"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert Checkpointer(Workspace("killed").checkpoint_dir("pretrain")).latest_step() == 3
    assert sorted(losses("killed")) == [1, 2, 3]

    train(workspace_env, "killed", resume=True)
    assert losses("killed") == losses("straight")  # bit for bit: fp32 on CPU, same program, same batches
    for a, b in zip(final_params("killed", 6), final_params("straight", 6), strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_from_one_mesh_continues_on_another(workspace_env):
    """Saved on (1,8,1) FSDP at step 3, resumed on (2,2,2): the losses follow the uninterrupted (1,8,1) run."""
    fsdp = (
        "axes.shape = (1, 8, 1)",
        "Pretraining.batch_size = 16",
        "Pretraining.micro_batch_size = 8",
        "muon_adamw.ns_dtype = 'float32'",  # bf16 Newton-Schulz rounds differently per mesh: compare in fp32
    )
    train(workspace_env, "fsdp", *fsdp)

    def stop(step):
        raise Stop

    with pytest.raises(Stop):
        train(workspace_env, "moved", *fsdp, on_checkpoint=stop)
    assert Checkpointer(Workspace("moved").checkpoint_dir("pretrain")).latest_step() == 3
    train(workspace_env, "moved", *fsdp[1:], "axes.shape = (2, 2, 2)", resume=True)
    moved, reference = losses("moved"), losses("fsdp")
    assert sorted(moved) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([moved[s] for s in range(1, 7)], [reference[s] for s in range(1, 7)], atol=1e-5)


def test_mismatched_checkpoint_is_refused_unless_forced(workspace_env, capsys):
    def stop(step):
        raise Stop

    with pytest.raises(Stop):
        train(workspace_env, "mismatch", on_checkpoint=stop)
    with pytest.raises(CheckpointError, match="pass --resume"):
        train(workspace_env, "mismatch")
    with pytest.raises(CheckpointError, match=r"config differs at .*Pretraining.eval_every.*refusing to resume"):
        train(workspace_env, "mismatch", "Pretraining.eval_every = 2", resume=True)
    # the CLI says it in one line and exits 2; --force goes ahead
    argv = ["pretrain", "--gin_file", EXPERIMENT, "--resume", "--quiet"]
    argv += [f"--gin_param={p}" for p in params_for("mismatch", "Pretraining.eval_every = 2")]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nanocode pretrain: error: checkpoint step 3: config differs")
    assert main([*argv, "--force"]) == 0
    assert Checkpointer(Workspace("mismatch").checkpoint_dir("pretrain")).latest_step() == 6


def test_sigterm_saves_and_exits_cleanly(workspace_env):
    ws = with_tokenizer(workspace_env, "term")
    argv = [sys.executable, "-m", "nanocode.cli.main", "pretrain", "--gin_file", EXPERIMENT, "--quiet"]
    argv += [f"--gin_param={p}" for p in params_for("term", "Pretraining.num_steps = 100000")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = ws.run_dir("pretrain") / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and '"loss"' in metrics.read_text()):  # the loop is running (the guard is on)
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-2000:]  # saved and exited cleanly, but the stage is not complete
    saved = complete_steps(ws.checkpoint_dir("pretrain"))[-1]
    assert 1 <= saved < 100000
    assert f"pretrain stopped at step {saved} (checkpoint saved); rerun with --resume" in err


@pytest.mark.slow
def test_two_processes_run_the_loop(tmp_path, monkeypatch):
    """`nanocode pretrain` as 2 processes x 4 simulated devices on one (1, 8, 1) mesh: each feeds its own slice of
    the data, process 0 alone writes the logs, both save one checkpoint, which restores in a single process."""
    import socket

    monkeypatch.setenv("NANOCODE_BASE_DIR", str(tmp_path))
    small_row_groups = ["embedded_code.row_group_size = 16", "embedded_prose.row_group_size = 32"]
    params = params_for(
        "multi",
        *small_row_groups,
        "axes.shape = (1, 8, 1)",
        "Pretraining.batch_size = 16",
        "Pretraining.micro_batch_size = 8",
        "Pretraining.num_steps = 4",
        "Pretraining.eval_every = 2",
    )
    try:
        argv = ["tok-train", "--gin_file", EXPERIMENT, "--prepare", "--quiet", *(f"--gin_param={p}" for p in params)]
        assert main(argv) == 0
    finally:
        gin.clear_config()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "nanocode.cli.main", "pretrain", "--gin_file", EXPERIMENT, "--quiet"]
    argv += [f"--gin_param={p}" for p in params]
    procs = []
    for i in range(2):
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
        env |= {
            "NANOCODE_COORDINATOR": f"127.0.0.1:{port}",
            "NANOCODE_NUM_PROCESSES": "2",
            "NANOCODE_PROCESS_ID": str(i),
        }
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    assert "eval step 4" in outputs[0] and "eval step" not in outputs[1]  # process 0 reports
    steps = losses("multi")
    assert sorted(steps) == [1, 2, 3, 4] and steps[4] < steps[1]
    exp = experiment("multi", *params[len(TINY) + 1 :])
    with mesh_lib.activate(exp.mesh.make(), exp.mesh.rules) as mesh:
        init, _ = exp.build_step(exp.plan(), mesh, exp.mesh.rules, abstract=True)
        restored = Checkpointer(Workspace("multi").checkpoint_dir("pretrain")).restore(4, init.state)
    assert restored.data["process"] == [0, 2]  # process 0's data position
    assert int(restored.state.step) == 4
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored.state))
