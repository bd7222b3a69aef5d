"""The speedrun end to end on a shrunken debug experiment: every stage runs, and a run killed mid-stage finishes
on re-run without redoing completed stages and without a corrupted artifact."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nanocode.core.checkpoint import complete_steps

REPO = Path(__file__).resolve().parents[1]
# The debug experiment, shrunk to seconds per stage (same code paths, smaller numbers).
TINY = [
    "TokenizerTraining.max_chars = 300000",
    "embedded_code.max_docs = 60",
    "embedded_prose.max_docs = 120",
    "GPTConfig.vocab_size = 1024",
    "GPTConfig.n_layer = 1",
    "GPTConfig.n_embd = 64",
    "GPTConfig.n_head = 1",
    "GPTConfig.n_kv_head = 1",
    "Pretraining.num_steps = 8",
    "Pretraining.checkpoint_every = 2",
    "Pretraining.eval_every = 4",
    "Pretraining.eval_batches = 1",
    "Pretraining.sample_every = 8",
    "repo_task_conversations.count = 8",
    "repo_task_pairs.count = 8",
    "SFTTraining.num_steps = 2",
    "SFTTraining.eval_every = 2",
    "SFTTraining.sample_every = 2",
    "SFTTraining.eval_batches = 1",
    "SFTTraining.tool_eval_prompts = 1",
    "SFTTraining.checkpoint_every = 2",
    "Alignment.num_steps = 2",
    "Alignment.eval_every = 2",
    "Alignment.sample_every = 2",
    "Alignment.eval_batches = 1",
    "Alignment.checkpoint_every = 2",
    "RLTraining.num_steps = 2",
    "RLTraining.batch_size = 4",
    "RLTraining.micro_batch_size = 4",
    "RLTraining.samples_per_task = 2",
    "RLTraining.max_steps = 1",
    "RLTraining.max_new_tokens = 8",
    "RLTraining.sample_every = 2",
    "RLTraining.checkpoint_every = 2",
    "Evaluation.humaneval_max_problems = 1",
    "Evaluation.agentic_tasks = 1",
    "Evaluation.agentic_max_steps = 1",
    "Evaluation.tool_call_prompts = 1",
]


def speedrun(base: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "nanocode.cli.main", "speedrun", "--gin_file=experiments/debug_cpu.gin"]
    argv += [f"--gin_param={p}" for p in TINY]
    env = dict(os.environ, NANOCODE_BASE_DIR=str(base), XLA_FLAGS="--xla_force_host_platform_device_count=1")
    return subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


@pytest.mark.slow
def test_killed_speedrun_resumes_without_redoing_completed_stages(tmp_path):
    base = tmp_path / "base"
    markers = base / "debug" / "speedrun"
    checkpoints = base / "debug" / "pretrain" / "checkpoints"
    first = speedrun(base)
    try:
        deadline = time.monotonic() + 600
        while not complete_steps(checkpoints) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, first.stdout.read()[-3000:]
        os.killpg(first.pid, signal.SIGKILL)  # mid-pretraining, after its first checkpoint
        first.wait()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert (markers / "tokenizer.json").exists() and not (markers / "pretrain.json").exists()
    tokenizer_done = (markers / "tokenizer.json").read_text()
    saved = complete_steps(checkpoints)

    second = speedrun(base)
    out, _ = second.communicate(timeout=900)
    assert second.returncode == 0, out[-4000:]
    assert "[speedrun 1/9] tokenizer: complete, skipped" in out
    assert (markers / "tokenizer.json").read_text() == tokenizer_done  # not redone
    assert f"resuming from step {saved[-1]}" in out or f"from step {saved[-1]}" in out, out[-4000:]
    for stage in ("tokenizer", "tokenizer-eval", "pretrain", "synth", "sft", "align", "rl", "eval", "report"):
        assert (markers / f"{stage}.json").exists(), stage
    steps = [
        json.loads(line)["step"]
        for line in (base / "debug" / "pretrain" / "metrics.jsonl").read_text().splitlines()
        if '"loss"' in line
    ]
    assert max(steps) == 8
    results = json.loads((base / "debug" / "eval" / "results.json").read_text())
    assert set(results["suites"]) >= {"humaneval", "agentic", "tool_calls"}
    assert (base / "debug" / "report" / "report.md").exists()

    third = speedrun(base)  # everything complete: a re-run does nothing
    out, _ = third.communicate(timeout=300)
    assert third.returncode == 0 and out.count("complete, skipped") == 9, out[-2000:]
