"""The debug experiment learns: its pretraining exactly as the speedrun runs it, checked on validation bits per byte.

The suite's longest test, in a module of its own so that pytest-xdist can run it beside everything else."""

import json

import gin
import pytest

from nanocode.cli.main import main
from nanocode.core.workspace import Workspace

EXPERIMENT = "experiments/debug_cpu.gin"


@pytest.mark.slow
def test_debug_experiment_learns(tmp_path, monkeypatch):
    """The debug experiment's pretraining as the speedrun runs it (embedded corpus, its 8,192-id tokenizer, the d3
    model, 300 steps of 8 x 512 tokens), without samples and checkpoints: the validation bits per byte (mean of the
    sources) falls by at least 40% from step 0, each source's by at least 35%. The run is deterministic (fp32 on
    CPU; README "Results of the debug speedrun" has the measured curve)."""
    monkeypatch.setenv("NANOCODE_BASE_DIR", str(tmp_path))
    short = ["Pretraining.eval_every = 150", "Pretraining.sample_every = 0", "Pretraining.checkpoint_every = 0"]
    try:
        assert main(["tok-train", "--gin_file", EXPERIMENT, "--prepare", "--quiet"]) == 0
        argv = ["pretrain", "--gin_file", EXPERIMENT, "--quiet", *(f"--gin_param={p}" for p in short)]
        assert main(argv) == 0
    finally:
        gin.clear_config()
    records = [json.loads(line) for line in (Workspace("debug").run_dir("pretrain") / "metrics.jsonl").open()]
    evals = {r["step"]: r for r in records if "val_bpb" in r}
    assert sorted(evals) == [0, 150, 300]
    assert evals[300]["val_bpb"] <= 0.6 * evals[0]["val_bpb"], (evals[0], evals[300])
    for key in ("web_bpb", "code_bpb"):
        assert evals[300][key] <= 0.65 * evals[0][key], (key, evals[0][key], evals[300][key])
