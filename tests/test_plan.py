"""`nanocode plan`: sizes, FLOPs and horizon from shapes alone; the d24 step compiled ahead of time fits a v6e chip."""

import subprocess
import sys

import pytest

from nanocode.cli.main import main
from tests.helpers import load_experiment


def build(gin_file: str, *params: str):
    return load_experiment([gin_file], params).pretraining


def test_d24_plan_matches_nanocode(gin_clean):
    plan = build("experiments/d24_tpu_v6e8.gin").plan()
    assert plan.params["total"] == 1_342_177_280
    assert plan.tokens_per_step == 1_048_576  # 32 rows per chip x 8 chips x 4,096
    assert plan.num_steps == 10_241  # ceil(8 x params / tokens per step) + 1, as nanocode
    assert plan.accum_steps == 32 and plan.micro_batch_size == 8
    assert plan.flops_per_token == 10_066_329_600


def test_experiments_differ_only_in_values(gin_clean):
    """d20 and d24 bind the same names (includes and fields), only the values differ; d12 on one GPU binds those
    too, plus its own pretraining cadence and peak FLOP/s."""
    import re

    def names(path):
        text = open(path).read()
        return sorted(
            re.sub(r"/\w+\.gin'", "'", line.split("=")[0]).strip()
            for line in text.splitlines()
            if line.strip() and not line.startswith("#")
        )

    reference = names("experiments/d24_tpu_v6e8.gin")
    assert names("experiments/d20_tpu_v6e8.gin") == reference
    d12 = names("experiments/d12_gpu.gin")
    assert set(reference) <= set(d12) and all(n.startswith("Pretraining.") for n in set(d12) - set(reference))
    plans = {f: build(f"experiments/{f}.gin").plan() for f in ("d12_gpu", "d20_tpu_v6e8")}
    assert plans["d12_gpu"].num_steps == 1033 and plans["d20_tpu_v6e8"].num_steps == 3641


def test_plan_command_prints_counts(gin_clean, capsys):
    assert main(["plan", "--gin_file", "experiments/debug_cpu.gin"]) == 0
    out = capsys.readouterr().out
    assert "total 4,472,832" in out and "FLOPs per token" in out and "steps:" in out


def test_plan_refuses_a_batch_that_does_not_split(gin_clean, capsys):
    code = main(["plan", "--gin_file", "experiments/debug_cpu.gin", "--gin_param", "Pretraining.micro_batch_size = 5"])
    err = capsys.readouterr().err
    assert code == 2 and "micro_batch_size = 5 does not divide batch_size" in err and len(err.strip().splitlines()) == 1


def test_plan_compile_in_a_fresh_process_on_the_debug_experiment():
    """The CLI sets up its own simulated devices (here 1, the cpu mesh) and prints the memory analysis."""
    out = subprocess.run(
        [sys.executable, "-m", "nanocode.cli.main", "plan", "--gin_file", "experiments/debug_cpu.gin", "--compile"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "compiled the train step" in out.stdout and "peak estimate" in out.stdout


@pytest.mark.slow
def test_d24_compiles_and_fits():
    """The d24 step with its real shapes (256 x 4,096 tokens, 32 micro-batches, FSDP over 8) compiled ahead of time
    for 8 simulated devices (a fresh process: the CLI sets up the devices and XLA's memory-aware scheduler).
    Splash attention is a TPU kernel, so XLA attention with remat 'dots' stands in for it on the CPU."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "nanocode.cli.main",
            "plan",
            "--gin_file",
            "experiments/d24_tpu_v6e8.gin",
            "--compile",
            "--gin_param",
            "GPTConfig.attention = 'xla'",
            "--gin_param",
            "Pretraining.remat = 'dots'",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    print(out.stdout)
    gib = {
        line.split()[0]: float(line.split("GiB")[0].split()[-1]) for line in out.stdout.splitlines() if "GiB" in line
    }
    # the state is an argument: fp32 params 5.4 GB + Muon momentum 4.8 GB + Adam moments of wte/lm_head 1.1 GB,
    # sharded 8 ways: ~1.3 GiB per device
    assert 1.1 < gib["arguments"] < 1.5
    assert "mesh {'data': 1, 'fsdp': 8, 'tensor': 1}" in out.stdout
    assert gib["peak"] < 32e9 / 2**30, f"{gib['peak']} GiB per device does not fit a v6e chip's 32 GB"
