"""GPU readiness: what nanocode's d12 and d20 training and decoding achieve on one NVIDIA Hopper GPU.

Five sections, each bounded by one global deadline (`--budget`): work that would not fit is skipped with a note,
a hard stop at the deadline writes what was measured so far, and a section that fails records its one-line error
while the others still run. The results are rewritten after every measurement.

  1. Ceilings: the bf16 matmul peak (bf16 inputs, f32 accumulation; median of timed runs after warm-up) and the
     device copy bandwidth, both measured.
  2. Train step of each experiment's model at the experiment's micro-batch: nanocode's real step
     (`nanocode.train.step.make_train_step` through `benchmarks/common.py`), MuonAdamW, fp32 master weights, bf16
     compute, cuDNN attention, one device. Compile time, tokens/s, MFU against the measured and the datasheet
     peak, peak memory.
  3. cuDNN vs XLA attention on the d12/d20 shapes: values and gradients against a highest-precision fp32
     reference, bf16 and fp32 inputs, PASS/FAIL against a relative tolerance.
  4. Batch-1 decode tokens/s with the KV-cache engine (`nanocode.models.engine`, driven as
     `benchmarks/decode_cpu.py` does) against the HBM-bandwidth bound.
  5. What limits the first model's step: XLA's cost analysis (compute and memory floors), a profiler trace's
     kernel-time breakdown, and timed variants (XLA attention, remat, two micro-batches per step).

Writes <out>/gpu_results.md, <out>/gpu_results.json and <out>/gpu_trace.tar.gz (the raw profiler trace).

This file sets the run up; the sections are in gpu_sections.py, the clock, budget and timing tools in gpu_run.py,
the results in gpu_report.py, the trace's breakdown in gpu_trace.py.

On the GPU machine, from the repo root (nanocode is not installed there; the launcher installs the carried wheels,
sets PYTHONPATH and runs `python3 benchmarks/gpu.py --out ${OUT:-benchmarks}`):

    bash benchmarks/gpu.sh [more gpu.py flags]

Here, on the CPU, every code path on tiny shapes (XLA attention stands in for cuDNN):

    .venv/bin/python benchmarks/gpu.py --smoke --out /tmp/gpu_smoke

Wheels. The GPU image has JAX, flax, optax, orbax, tiktoken and pyarrow but not gin-config (which this script
needs) or rustbpe (tokenizer training only), and it cannot download. Once, here, in the repo root (`.whl/` is
git-ignored):

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl gin-config==0.5.0 rustbpe==0.1.0

Device tool: one call; the machine has no git checkout, so write this checkout's `git rev-parse HEAD` into the
command. The results come back from $OUT (copy gpu_results.md into benchmarks/ afterwards):

    run(command="set -o pipefail; GIT_COMMIT=<sha> bash benchmarks/gpu.sh 2>&1 | tee $OUT/gpu_log.txt",
        carry=[".whl"], timeout_s=540)

A rerun on the same warm machine can skip most compiles with JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache set on both
runs (its compile times then measure cache loads); `--sections` and `--models` rerun only what is missing.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import datetime
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import jax
from gpu_report import Report, one_line
from gpu_run import Run, run_section
from gpu_sections import (
    section_attention,
    section_ceilings,
    section_decode,
    section_profile,
    section_train,
)

from nanocode.models.gpt import GPTConfig

REPO = Path(__file__).resolve().parents[1]

# The experiment each model's settings come from (model config and micro-batch); --gin NAME=FILE adds or replaces.
EXPERIMENTS = {"d12": "experiments/d12_gpu.gin", "d20": "experiments/d20_tpu_v6e8.gin"}

# Vendor datasheets: (substring of jax's device_kind, dense bf16 tensor-core FLOP/s, HBM bandwidth B/s).
# Dense = half the with-sparsity figure. NVIDIA H200 Tensor Core GPU datasheet (SXM: 1,979 TFLOP/s bf16 with
# sparsity, 4.8 TB/s HBM3e); NVIDIA H100 Tensor Core GPU datasheet (SXM: 1,979 TFLOP/s, 3.35 TB/s; PCIe: 1,513
# TFLOP/s, 2.0 TB/s). First match wins, so "H100 PCIe" comes before "H100".
DATASHEET = (("H200", 989e12, 4.8e12), ("H100 PCIe", 756e12, 2.0e12), ("H100", 989e12, 3.35e12))

# --smoke: a d3-sized model on short rows (every path runs on a CPU in seconds), the experiment's numerics kept.
SMOKE_SHAPE = dict(n_layer=2, n_embd=192, n_head=2, n_kv_head=2, sequence_len=64, vocab_size=1024)
SMOKE_MICRO_BATCH = 2


# ------------------------------------------------------------------------------------------------ experiment settings
def experiment_settings(gin_file: str) -> tuple[GPTConfig, int]:
    """(model config, micro-batch rows) of the experiment's pretraining stage, built as the CLI builds it."""
    from nanocode.cli.experiment import load

    experiment = load([gin_file])
    return experiment.model_config, experiment.pretraining.micro_rows


# ------------------------------------------------------------------------------------------------ set-up
SECTIONS = (
    ("ceilings", "1. Ceilings: bf16 matmul peak and device copy bandwidth", section_ceilings),
    ("train", "2. Train step: tokens/s, MFU, compile time, memory", section_train),
    ("attention", "3. cuDNN vs XLA attention: values and gradients", section_attention),
    ("decode", "4. Batch-1 decode vs the memory-bandwidth bound", section_decode),
    ("profile", "5. What limits the train step's MFU", section_profile),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks", help="folder for gpu_results.md/.json and the trace")
    p.add_argument("--models", default="d12,d20", help="comma-separated names from EXPERIMENTS (or --gin)")
    p.add_argument("--gin", action="append", default=[], metavar="NAME=FILE", help="experiment gin file of a model")
    p.add_argument("--micro_batch", type=int, default=None, help="rows per forward/backward (default: experiment's)")
    p.add_argument("--attention", default="cudnn", help="train-step attention (xla stands in where cudnn can't run)")
    p.add_argument("--sections", default="ceilings,train,attention,decode,profile")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 420, smoke 240)")
    p.add_argument("--steps", type=int, default=None, help="timed train steps (default 10, smoke 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed train steps after compiling (default 2, smoke 1)")
    p.add_argument("--repeats", type=int, default=7, help="timed runs of each ceiling measurement")
    p.add_argument("--matmul_size", type=int, default=None, help="default 8192, smoke 256")
    p.add_argument("--copy_mb", type=int, default=None, help="default 1024, smoke 16")
    p.add_argument("--attention_batch", type=int, default=2, help="rows of the attention comparison")
    p.add_argument("--new_tokens", type=int, default=None, help="decoded tokens per run (default 128, smoke 8)")
    p.add_argument("--decode_repeats", type=int, default=None, help="timed decode runs (default 3, smoke 1)")
    p.add_argument("--trace", action=argparse.BooleanOptionalAction, default=True, help="profiler trace in section 5")
    p.add_argument("--trace_steps", type=int, default=3)
    p.add_argument("--commit", default=None, help="default: $GIT_COMMIT, else git rev-parse HEAD")
    p.add_argument("--smoke", action="store_true", help="tiny shapes on any backend: checks every code path")
    args = p.parse_args(argv)
    defaults = dict(budget=(420, 240), steps=(10, 2), matmul_size=(8192, 256), copy_mb=(1024, 16))
    defaults |= dict(warmup=(2, 1), new_tokens=(128, 8), decode_repeats=(3, 1))
    for name, (full, smoke) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, smoke if args.smoke else full)
    return args


def git_commit(explicit: str | None) -> str:
    """--commit, else $GIT_COMMIT (the device machine has no .git: its caller passes the sha), else this checkout's
    HEAD and whether it has uncommitted changes."""
    given = explicit or os.environ.get("GIT_COMMIT")
    if given:
        return f"{given} (given; the tree that ran may hold uncommitted changes)"
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown (pass --commit or $GIT_COMMIT)"
    if sha.returncode != 0:
        return "unknown (pass --commit or $GIT_COMMIT)"
    return sha.stdout.strip() + (" (with uncommitted changes)" if status.stdout.strip() else "")


def versions(device) -> str:
    """Python, JAX, jaxlib, the CUDA plugin, CUDA runtime / cuDNN / driver (each where it can be read)."""
    parts = [f"Python {platform.python_version()}", f"jax {jax.__version__}"]
    for package in (
        "jaxlib",
        "jax-cuda13-plugin",
        "jax-cuda12-plugin",
        "flax",
        "optax",
        "nvidia-cudnn-cu13",
        "nvidia-cudnn-cu12",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            parts.append(f"{package} {metadata.version(package)}")
    for label, getter in (("CUDA runtime", "cuda_runtime_get_version"), ("cuDNN", "cudnn_get_version")):
        with contextlib.suppress(Exception):  # private module, feature-detected: the CUDA plugin's, None without one
            from jax._src.lib import cuda_versions

            parts.append(f"{label} {getattr(cuda_versions, getter)()}")
    with contextlib.suppress(Exception):
        parts.append(f"platform_version '{device.client.platform_version}'")
    parts += nvidia_smi()
    return ", ".join(parts)


def nvidia_smi() -> list[str]:
    """The GPU's name, driver, memory and max SM clock, and the driver's CUDA version, as nvidia-smi reports them."""
    found = []
    with contextlib.suppress(Exception):
        query = "--query-gpu=name,driver_version,memory.total,clocks.max.sm"
        smi = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True, timeout=15)
        found.append(f"nvidia-smi: {smi.stdout.strip()}")
        header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=15).stdout
        found += [f"driver CUDA {m}" for m in re.findall(r"CUDA Version:\s*([\d.]+)", header)[:1]]
    return found


def datasheet(device_kind: str) -> tuple[float | None, float | None]:
    for key, flops, bandwidth in DATASHEET:
        if key.lower() in device_kind.lower():
            return flops, bandwidth
    return None, None


def load_settings(run: Run, names: list[str]) -> None:
    """Each model's (config, micro-batch) from its experiment, with --micro_batch and --smoke applied."""
    files = EXPERIMENTS | dict(item.split("=", 1) for item in run.args.gin)
    for name in names:
        try:
            config, micro_batch = experiment_settings(files[name])
        except Exception as e:
            run.report.meta["notes"].append(f"{name}: experiment settings from {files.get(name)}: {one_line(e)}")
            continue
        if run.args.micro_batch:
            micro_batch = run.args.micro_batch
        if run.args.smoke:
            config = dataclasses.replace(config, **SMOKE_SHAPE)
            micro_batch = min(micro_batch, SMOKE_MICRO_BATCH)
        run.settings[name] = (config, micro_batch)


def resolve_attention(requested: str, notes: list[str]) -> str:
    """cuDNN attention needs an NVIDIA GPU: elsewhere (the CPU smoke run) XLA attention stands in, with a note."""
    if requested == "cudnn" and jax.default_backend() != "gpu":
        notes.append(f"attention 'cudnn' needs an NVIDIA GPU (backend {jax.default_backend()!r}): 'xla' stands in")
        return "xla"
    return requested


def arm_deadline(run: Run) -> None:
    """The hard stop: at the budget's end write what was measured, mark the running section, exit."""

    def stop():
        print(f"budget of {run.args.budget:.0f} s spent: stopping", file=sys.stderr, flush=True)
        run.report.stop(f"hard stop at the budget ({run.args.budget:.0f} s)")
        os._exit(2)

    timer = threading.Timer(max(run.left(), 0.0), stop)
    timer.daemon = True
    timer.start()


def main(argv: list[str] | None = None) -> int:
    start = time.monotonic()
    args = parse_args(argv)
    if args.smoke:  # the CLI's process settings, which only matter (and whose XLA flag is only certain) on a CPU
        from nanocode.train.runtime import configure_process

        configure_process()
        if not jax.config.jax_compilation_cache_dir:  # the shrunk models share shapes: compile each program once
            cache = tempfile.mkdtemp(prefix="gpu_smoke_jax_cache_")
            atexit.register(shutil.rmtree, cache, True)
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    device = jax.devices()[0]
    flops, bandwidth = datasheet(device.device_kind)
    meta = dict(
        _start=start,
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        device_kind=device.device_kind,
        platform=device.platform,
        device_count=jax.device_count(),
        datasheet_flops=flops,
        datasheet_bandwidth=bandwidth,
        versions=versions(device),
        commit=git_commit(args.commit),
        command=shlex.join(["python3", *sys.argv]) if argv is None else shlex.join(["gpu.main", *argv]),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        budget_s=args.budget,
        smoke=args.smoke,
        notes=[],
    )
    if args.smoke:
        meta["notes"].append(f"SMOKE run: models shrunk to {SMOKE_SHAPE}; the numbers only prove the code paths")
    run = Run(args=args, report=Report(Path(args.out), meta), start=start, device=device)
    run.datasheet_flops, run.datasheet_bandwidth = flops, bandwidth
    arm_deadline(run)
    run.attention = resolve_attention(args.attention, meta["notes"])
    load_settings(run, [m for m in args.models.split(",") if m])
    run.report.write()
    wanted = [s for s in SECTIONS if s[0] in args.sections.split(",")]
    run.report.plan([(key, title) for key, title, _ in wanted])
    for i, (key, title, fn) in enumerate(wanted):
        run_section(run, key, title, fn, later=[k for k, _, _ in wanted[i + 1 :]])
    print((run.report.out_dir / "gpu_results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
