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
import glob
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from common import one_device_train_step
from decode_cpu import step_bytes, time_generation
from flax import nnx
from gpu_report import Report, note_error, one_line
from gpu_trace import kernel_breakdown

from nanocode.core.errors import ConfigError
from nanocode.core.kinds import ATTENTION
from nanocode.models.engine import Engine
from nanocode.models.gpt import GPT, GPTConfig
from nanocode.models.sampling import GREEDY
from nanocode.optim.muon import MuonAdamW

REPO = Path(__file__).resolve().parents[1]

# The experiment each model's settings come from (model config and micro-batch); --gin NAME=FILE adds or replaces.
EXPERIMENTS = {"d12": "experiments/d12_gpu.gin", "d20": "experiments/d20_tpu_v6e8.gin"}

# Vendor datasheets: (substring of jax's device_kind, dense bf16 tensor-core FLOP/s, HBM bandwidth B/s).
# Dense = half the with-sparsity figure. NVIDIA H200 Tensor Core GPU datasheet (SXM: 1,979 TFLOP/s bf16 with
# sparsity, 4.8 TB/s HBM3e); NVIDIA H100 Tensor Core GPU datasheet (SXM: 1,979 TFLOP/s, 3.35 TB/s; PCIe: 1,513
# TFLOP/s, 2.0 TB/s). First match wins, so "H100 PCIe" comes before "H100".
DATASHEET = (("H200", 989e12, 4.8e12), ("H100 PCIe", 756e12, 2.0e12), ("H100", 989e12, 3.35e12))

# Relative error (||x - ref|| / ||ref||) allowed against the highest-precision fp32 reference. bf16 rounds the
# output and the probabilities (2^-9 relative; XLA's bf16 path measured ~2.3e-3 on CPU at the d12/d20 shapes);
# fp32 leaves room for TF32 tensor-core dots (XLA:GPU's default for f32), ~3e-4 per product over a chain of them.
ATTENTION_TOLERANCE = {"bfloat16": 1e-2, "float32": 5e-3}

# Seconds a piece of work needs left on the clock to be started (compiles dominate; a miss is a skip, not an overrun).
NEEDS = {"ceilings": 20, "train": 45, "attention": 10, "decode": 25, "profile": 15, "trace": 15, "variant": 30}

# --smoke: a d3-sized model on short rows (every path runs on a CPU in seconds), the experiment's numerics kept.
SMOKE_SHAPE = dict(n_layer=2, n_embd=192, n_head=2, n_kv_head=2, sequence_len=64, vocab_size=1024)
SMOKE_MICRO_BATCH = 2


# ------------------------------------------------------------------------------------------------ experiment settings
def experiment_settings(gin_file: str) -> tuple[GPTConfig, int]:
    """(model config, micro-batch rows) of the experiment's pretraining stage, built as the CLI builds it."""
    from nanocode.cli.experiment import load

    experiment = load([gin_file])
    return experiment.model_config, experiment.pretraining.micro_rows


# ------------------------------------------------------------------------------------------------ run state and report
@dataclasses.dataclass
class Run:
    """Everything the sections share: flags, clock, device, measured ceilings and the kept train bench."""

    args: argparse.Namespace
    report: Report
    start: float
    device: Any = None
    datasheet_flops: float | None = None
    datasheet_bandwidth: float | None = None
    peak_flops: float | None = None  # measured in section 1
    bandwidth: float | None = None  # measured in section 1 (or 4)
    attention: str = "cudnn"
    settings: dict[str, tuple[GPTConfig, int]] = dataclasses.field(default_factory=dict)
    bench: dict | None = None  # the profiled model's train step, kept from section 2 for section 5
    reserve: float = 0.0  # seconds kept for the sections after the running one (their NEEDS)
    took: dict[str, tuple[float, int]] = dataclasses.field(default_factory=dict)  # kind -> (seconds, layers) last

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.start)

    def fits(self, what: str, seconds: float, result: dict) -> bool:
        """Whether `what` (~`seconds`) can start and still leave the later sections their share; if not, note the
        skip in `result`. A skipped piece costs one line; an overrun would cost every section after it."""
        if self.left() - self.reserve >= seconds:
            return True
        result["notes"].append(
            f"{what}: skipped, {self.left():.0f} s left of the budget, {self.reserve:.0f} s of it kept for the "
            f"later sections (needs ~{seconds:.0f} s)"
        )
        self.report.write()
        return False

    def need(self, kind: str, config: GPTConfig) -> float:
        """Seconds to allow a per-model piece: NEEDS[kind], or more when the last model's took longer once scaled
        to this model's depth (compile time grows with the unrolled layers)."""
        if kind not in self.took:
            return NEEDS[kind]
        seconds, layers = self.took[kind]
        return max(NEEDS[kind], 1.2 * seconds * config.n_layer / layers)

    @contextlib.contextmanager
    def timing(self, kind: str, config: GPTConfig):
        t0 = time.monotonic()
        yield
        self.took[kind] = (time.monotonic() - t0, config.n_layer)


def run_section(run: Run, key: str, title: str, fn: Callable[[Run, dict], None], later: list[str]) -> None:
    """Run one section: skip it when too little time is left, record its error in one line when it fails.
    `later` are the sections still to come: their NEEDS are kept in reserve while this one runs."""
    result = run.report.section(key, title)
    t0 = time.monotonic()
    run.reserve = sum(NEEDS[k] for k in later)
    if run.left() - run.reserve < NEEDS[key]:
        result["status"] = (
            f"skipped: {run.left():.0f} s left of the budget, {run.reserve:.0f} s of it kept for the later "
            f"sections (needs ~{NEEDS[key]} s)"
        )
    else:
        try:
            fn(run, result)
            errors = result.get("errors", 0)
            result["status"] = f"ok with {errors} error(s): see the notes" if errors else "ok"
        except Exception as e:  # the rest of the run goes on: one line here, the traceback on stderr
            traceback.print_exc()
            result["status"] = f"error: {one_line(e)}"
    result["seconds"] = round(time.monotonic() - t0, 1)
    print(f"[{time.monotonic() - run.start:6.1f} s] section {key}: {result['status']}", flush=True)
    run.report.write()


def models(run: Run) -> dict[str, tuple[GPTConfig, int]]:
    if not run.settings:
        raise RuntimeError("no model to run: every experiment's settings failed to load (see the notes at the top)")
    return run.settings


# ------------------------------------------------------------------------------------------------ timing helpers
def timed(fn: Callable[[], Any], repeats: int, inner: int, warmup: int = 3) -> list[float]:
    """Seconds per call of `fn`, one value per repeat: `inner` calls dispatched back to back (launch overheads
    overlap the device work, as in a real program), then a block on the last result."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            out = fn()
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / inner)
    return times


def matmul_peak(size: int, repeats: int) -> tuple[float, float]:
    """(median FLOP/s, median seconds) of a size^3 bf16 matmul accumulated in f32, on random data (zeros run
    faster than real data on these chips)."""
    ka, kb = jax.random.split(jax.random.key(1))
    a = jax.random.normal(ka, (size, size), jnp.float32).astype(jnp.bfloat16)
    b = jax.random.normal(kb, (size, size), jnp.float32).astype(jnp.bfloat16)
    mm = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    seconds = statistics.median(timed(lambda: mm(a, b), repeats, inner=10))
    return 2 * size**3 / seconds, seconds


def copy_bandwidth(mbytes: int, repeats: int) -> tuple[float, float]:
    """(median bytes read + written per second, median seconds) of an elementwise pass over an f32 array.
    Not `jnp.copy`: jit may hand back an unchanged input instead of copying it."""
    x = jax.random.normal(jax.random.key(2), (mbytes * (1 << 20) // 4,), jnp.float32)
    double = jax.jit(lambda v: v * 2.0)
    seconds = statistics.median(timed(lambda: double(x), repeats, inner=10))
    return 2 * x.nbytes / seconds, seconds


def process_peak_bytes(device) -> int | None:
    """The allocator's peak since the process started (None where the backend keeps no statistics)."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return (stats or {}).get("peak_bytes_in_use")


def compiled_costs(compiled) -> dict:
    """XLA's own accounting of a compiled step: FLOPs and bytes accessed (cost analysis), and its memory footprint
    (arguments + outputs - donated aliases + temporaries). Either may be missing on a backend or JAX version."""
    costs: dict[str, float] = {}
    with contextlib.suppress(Exception):
        analysis = compiled.cost_analysis()
        if isinstance(analysis, list | tuple):  # older JAX: one dict per program
            analysis = analysis[0] if analysis else {}
        costs["xla_flops"] = float(analysis.get("flops", float("nan")))
        costs["xla_bytes"] = float(analysis.get("bytes accessed", float("nan")))
    with contextlib.suppress(Exception):
        m = compiled.memory_analysis()
        total = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
        costs["footprint_bytes"] = float(total)
    return costs


# ------------------------------------------------------------------------------------------------ 1. ceilings
def section_ceilings(run: Run, result: dict) -> None:
    n, mbytes, repeats = run.args.matmul_size, run.args.copy_mb, run.args.repeats
    run.peak_flops, seconds = matmul_peak(n, repeats)
    add_ceiling(run, result, f"bf16 matmul {n}^3, f32 accumulation", seconds, run.peak_flops, "TFLOP/s")
    run.bandwidth, seconds = copy_bandwidth(mbytes, repeats)
    add_ceiling(run, result, f"copy {mbytes} MiB f32 (read + write)", seconds, run.bandwidth, "TB/s")


def add_ceiling(run: Run, result: dict, what: str, seconds: float, measured: float, unit: str) -> None:
    """A row in tera-units per second (TFLOP/s or TB/s) next to the datasheet's number."""
    datasheet = run.datasheet_flops if unit == "TFLOP/s" else run.datasheet_bandwidth
    row = dict(what=what, median_ms=1e3 * seconds, measured=measured / 1e12, unit=unit)
    row |= dict(datasheet=_per(datasheet, 1e12), of_datasheet=_ratio(measured, datasheet))
    run.report.add(result, "ceilings", row)


def _per(value: float | None, unit: float) -> float | None:
    return None if value is None else value / unit


def _ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


# ------------------------------------------------------------------------------------------------ 2. train step
def train_bench(run: Run, config: GPTConfig, micro_batch: int, *, accum: int = 1, remat: str | None = None) -> dict:
    """Build, compile and time nanocode's train step; returns the numbers and what later sections reuse."""
    rows = micro_batch * accum
    step, state, batch = one_device_train_step(config, MuonAdamW(), rows, accum_steps=accum, remat=remat)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    state, times, losses = time_steps(compiled, state, batch, run.args.warmup, run.args.steps)
    step_s = statistics.median(times)
    tokens = rows * config.sequence_len
    flops_per_token = nnx.eval_shape(lambda: GPT(config, rngs=nnx.Rngs(0))).flops_per_token()
    tokens_per_s = tokens / step_s
    model_flops = flops_per_token * tokens_per_s
    bench = dict(compiled=compiled, state=state, batch=batch, config=config, micro_batch=micro_batch, accum=accum)
    bench |= dict(compile_s=compile_s, step_s=step_s, tokens=tokens, flops_per_token=flops_per_token)
    bench |= compiled_costs(compiled)
    bench["row"] = dict(
        attention=config.attention,
        rows=f"{rows} x {config.sequence_len}" + (f" ({accum} micro-batches)" if accum > 1 else ""),
        compile_s=compile_s,
        step_ms=1e3 * step_s,
        tokens_per_s=tokens_per_s,
        gflop_per_token=flops_per_token / 1e9,
        mfu_measured=_ratio(model_flops, run.peak_flops),
        mfu_datasheet=_ratio(model_flops, run.datasheet_flops),
        peak_gib=_gib(process_peak_bytes(run.device)),
        footprint_gib=_gib(bench.get("footprint_bytes")),
        loss=f"{losses[0]:.3f} -> {losses[-1]:.3f}",
    )
    return bench


def time_steps(compiled, state, batch, warmup: int, steps: int):
    """(final state, seconds of each timed step, every loss). Each step blocks on its loss, as the trainer's
    per-step logging does."""
    times, losses = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch)
        losses.append(float(metrics["loss"]))
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return state, times, losses


def _gib(n: float | None) -> float | None:
    return None if n is None else n / 2**30


def section_train(run: Run, result: dict) -> None:
    result["notes"].append(
        "One optimizer update per micro-batch here (the real run accumulates many micro-batches per update), so the "
        "optimizer's share is larger than in training; section 5's two-micro-batch variant measures it. MFU = "
        "nanocode's model FLOPs/token (GPT.flops_per_token: 6 x non-embedding params + the full causal [t, t] "
        "attention) x tokens/s / peak. 'peak GiB (process)' is the allocator's peak since the process started "
        "(cumulative over models); 'step GiB (XLA)' is the compiled step's own footprint."
    )
    for name, (config, micro_batch) in models(run).items():
        if not run.fits(f"{name} train step", run.need("train", config), result):
            continue
        with run.timing("train", config):
            bench = train_with_fallback(
                run, result, name, dataclasses.replace(config, attention=run.attention), micro_batch
            )
        if bench is None:
            continue
        run.report.add(result, "train", {"model": name, **bench.pop("row")})
        if run.bench is None:  # kept (state included) for section 5's profile; the others are freed now
            run.bench = dict(bench, name=name)


def train_with_fallback(run: Run, result: dict, name: str, config: GPTConfig, micro_batch: int) -> dict | None:
    """The train bench; if cuDNN attention fails, its error is noted and XLA attention gives the number instead."""
    try:
        return train_bench(run, config, micro_batch)
    except Exception as e:
        note_error(result, f"{name} ({config.attention})", e)
        if config.attention == "xla" or not run.fits(f"{name} with xla attention", run.need("train", config), result):
            return None
    try:
        return train_bench(run, dataclasses.replace(config, attention="xla"), micro_batch)
    except Exception as e:
        note_error(result, f"{name} (xla)", e)
        return None


# ------------------------------------------------------------------------------------------------ 3. attention
def section_attention(run: Run, result: dict) -> None:
    result["notes"].append(
        "Random N(0, 1) q, k, v and output cotangent; rel = ||x - y|| / ||y||; ref = the 'xla' implementation on the "
        "same inputs upcast to fp32 at highest matmul precision. Gradients dq, dk, dv are the VJP of the output. "
        f"PASS: every implementation that ran is within tol of ref (tol by input dtype: {ATTENTION_TOLERANCE})."
    )
    checked: dict[tuple, str] = {}
    for name, (config, _) in models(run).items():
        shape = (config.sequence_len, config.n_head, config.n_kv_head, config.head_dim)
        if shape in checked:  # e.g. the smoke run's shrunk models
            result["notes"].append(f"{name}: same attention shape as {checked[shape]}, not checked twice")
            continue
        checked[shape] = name
        for dtype in ("bfloat16", "float32"):
            if not run.fits(f"{name} {dtype} attention check", NEEDS["attention"], result):
                continue
            try:
                for row in compare_attention(config, dtype, run.args.attention_batch, result):
                    run.report.add(result, "attention", {"shape": f"{name} " + row.pop("shape"), **row})
            except Exception as e:
                note_error(result, f"{name} {dtype} attention check", e)
    verdicts = [row["verdict"] for row in result["tables"].get("attention", [])]
    passed = verdicts and all(v.startswith("PASS") for v in verdicts) and not result.get("errors")
    result["notes"].insert(0, f"Overall: {'PASS' if passed else 'FAIL'} ({len(verdicts)} comparisons)")


def attention_vjp(attend: Callable, q, k, v, cotangent, scale: float, precision: str | None = None) -> list:
    """[output, dq, dk, dv] of `attend` (a registered attention function) as fp64 numpy arrays."""

    def outputs(q, k, v, ct):
        out, vjp = jax.vjp(lambda q, k, v: attend(q, k, v, scale=scale), q, k, v)
        return (out, *vjp(ct.astype(out.dtype)))

    set_precision = getattr(jax, "default_matmul_precision", None)  # feature-detected: a config context manager
    context = set_precision(precision) if precision and set_precision is not None else contextlib.nullcontext()
    with context:  # the precision is read when jit traces, inside this block
        values = jax.jit(outputs)(q, k, v, cotangent)
    return [np.asarray(x.astype(jnp.float32), np.float64) for x in values]


def _rel(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def compare_attention(config: GPTConfig, dtype: str, batch: int, result: dict) -> list[dict]:
    """One row per quantity (out, dq, dk, dv): cudnn and xla against the fp32 reference and each other."""
    b, t, h, hkv, d = batch, config.sequence_len, config.n_head, config.n_kv_head, config.head_dim
    keys = jax.random.split(jax.random.key(3), 4)
    shapes = [(b, t, h, d), (b, t, hkv, d), (b, t, hkv, d), (b, t, h, d)]
    q, k, v, ct = (jax.random.normal(key, s, jnp.float32).astype(dtype) for key, s in zip(keys, shapes))
    scale = 1.0 / math.sqrt(d)
    up = [x.astype(jnp.float32) for x in (q, k, v, ct)]
    ref = attention_vjp(ATTENTION.get("xla"), *up, scale, precision="highest")
    xla = attention_vjp(ATTENTION.get("xla"), q, k, v, ct, scale)
    cudnn, refused_as_designed = None, False
    try:
        cudnn = attention_vjp(ATTENTION.get("cudnn"), q, k, v, ct, scale)
    except Exception as e:  # on CPU: no cuDNN; for fp32 inputs: refused by design (bf16/fp16 only)
        refused_as_designed = isinstance(e, ConfigError)  # nanocode's own one-line refusal, not a crash
        if refused_as_designed:
            result["notes"].append(f"{t}-token {dtype}: cudnn did not run (expected): {one_line(e)}")
        else:
            note_error(result, f"{t}-token {dtype}: cudnn did not run (FAIL)", e)
    tol, rows = ATTENTION_TOLERANCE[dtype], []
    for i, quantity in enumerate(("out", "dq", "dk", "dv")):
        row = dict(shape=f"[{b},{t},{h},{d}]", dtype=dtype, quantity=quantity, tolerance=tol)
        row["xla_vs_ref_rel"] = _rel(xla[i], ref[i])
        errors = [row["xla_vs_ref_rel"]]
        if cudnn is not None:
            row["cudnn_vs_xla_max_abs"] = float(np.max(np.abs(cudnn[i] - xla[i])))
            row["cudnn_vs_xla_rel"] = _rel(cudnn[i], xla[i])
            row["cudnn_vs_ref_rel"] = _rel(cudnn[i], ref[i])
            errors.append(row["cudnn_vs_ref_rel"])
        passed = all(e <= tol for e in errors) and (cudnn is not None or refused_as_designed)
        row["verdict"] = ("PASS" if passed else "FAIL") + ("" if cudnn is not None else " (xla only; cudnn skipped)")
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ 4. decode
def section_decode(run: Run, result: dict) -> None:
    if run.bandwidth is None:  # section 1 did not run
        run.bandwidth, _ = copy_bandwidth(run.args.copy_mb, run.args.repeats)
    result["notes"].append(
        "Batch 1, greedy, random weights, the engine's compute dtype, prompt = half the context, through "
        "`Engine.generate` (as benchmarks/decode_cpu.py). Bytes read per token = every weight but the embedding "
        "table + one embedding row + the whole preallocated KV cache; bound = bandwidth / bytes per token. "
        f"Measured bandwidth: {run.bandwidth / 1e12:.3f} TB/s (section 1's copy)."
    )
    for name, (config, _) in models(run).items():
        if not run.fits(f"{name} decode", run.need("decode", config), result):
            continue
        try:
            with run.timing("decode", config):
                row = decode_row(run, config)
            run.report.add(result, "decode", {"model": name, **row})
        except Exception as e:
            note_error(result, name, e)


def decode_row(run: Run, config: GPTConfig) -> dict:
    model = GPT(config, rngs=nnx.Rngs(0))
    engine = Engine(model, max_len=config.sequence_len)
    prompt = config.sequence_len // 2
    new_tokens = min(run.args.new_tokens, config.sequence_len - prompt)
    ttft, rate = time_generation(engine, 1, prompt, new_tokens, GREEDY, run.args.decode_repeats)
    weights, kv = step_bytes(engine, model, 1)
    per_token = weights + kv
    bound_measured = run.bandwidth / per_token
    bound_datasheet = None if run.datasheet_bandwidth is None else run.datasheet_bandwidth / per_token
    return dict(
        dtype=engine.config.compute_dtype,
        prompt=prompt,
        new_tokens=new_tokens,
        ttft_ms=1e3 * ttft,
        tokens_per_s=rate,
        mb_per_token=per_token / 1e6,
        achieved_gb_s=rate * per_token / 1e9,
        bound_measured=bound_measured,
        of_bound_measured=rate / bound_measured,
        bound_datasheet=bound_datasheet,
        of_bound_datasheet=_ratio(rate, bound_datasheet),
    )


# ------------------------------------------------------------------------------------------------ 5. profile
def section_profile(run: Run, result: dict) -> None:
    bench = run.bench
    if bench is None:
        raise RuntimeError("no train step to profile (section 2 was skipped or failed for every model)")
    result["notes"].append(
        f"Model {bench['name']}: {bench['config'].attention} attention, {bench['micro_batch']} rows."
    )
    for row in roofline_rows(run, bench):
        run.report.add(result, "roofline", row)
    if run.args.trace and run.fits("profiler trace", NEEDS["trace"], result):
        try:
            profile_trace(run, bench, result)
        except Exception as e:
            note_error(result, "trace", e)
    profile_variants(run, bench, result)


def roofline_rows(run: Run, bench: dict) -> list[dict]:
    """Where the step sits between its compute floor (FLOPs at the measured peak) and its memory floor (XLA's bytes
    accessed at the measured bandwidth)."""
    model_flops = bench["flops_per_token"] * bench["tokens"]
    xla_flops, xla_bytes = bench.get("xla_flops", float("nan")), bench.get("xla_bytes", float("nan"))
    rows = [
        ("measured step time", 1e3 * bench["step_s"], "ms"),
        ("model FLOPs (flops_per_token x tokens)", model_flops, "FLOP"),
        ("XLA cost-analysis FLOPs (custom calls such as cuDNN's may go uncounted)", xla_flops, "FLOP"),
        ("XLA FLOPs / model FLOPs", xla_flops / model_flops, "x"),
        ("XLA bytes accessed", xla_bytes, "B"),
        ("arithmetic intensity (XLA FLOPs / bytes)", xla_flops / xla_bytes, "FLOP/B"),
    ]
    if run.peak_flops:
        rows.append(("compute floor: model FLOPs at the measured peak", 1e3 * model_flops / run.peak_flops, "ms"))
        rows.append(("compute floor: XLA FLOPs at the measured peak", 1e3 * xla_flops / run.peak_flops, "ms"))
    if run.bandwidth:
        rows.append(("memory floor: XLA bytes at the measured bandwidth", 1e3 * xla_bytes / run.bandwidth, "ms"))
    return [dict(what=what, value=value, unit=unit) for what, value, unit in rows]


def profile_trace(run: Run, bench: dict, result: dict) -> None:
    """Trace a few steps with jax.profiler, tar the trace into the output folder, and sum kernel time by kind."""
    trace_dir = Path(tempfile.mkdtemp(prefix="gpu_trace_"))
    steps, state = run.args.trace_steps, bench["state"]
    t0 = time.perf_counter()
    with jax.profiler.trace(str(trace_dir)):
        for _ in range(steps):
            state, metrics = bench["compiled"](state, bench["batch"])
            float(metrics["loss"])
    wall = (time.perf_counter() - t0) / steps
    bench["state"] = state
    try:
        archive = run.report.out_dir / "gpu_trace.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(trace_dir, arcname="gpu_trace")
        result["notes"].append(
            f"Trace of {steps} steps ({wall * 1e3:.1f} ms/step wall while tracing): {archive.name}, "
            f"{archive.stat().st_size / 2**20:.1f} MiB (open the .xplane.pb with TensorBoard's profile plugin or xprof)."
        )
        files = glob.glob(str(trace_dir / "**" / "*.xplane.pb"), recursive=True)
        if not files:
            raise RuntimeError("the profiler wrote no .xplane.pb")
        if not hasattr(jax.profiler, "ProfileData"):
            raise RuntimeError("this JAX has no jax.profiler.ProfileData to read the trace with")
        categories, top = kernel_breakdown(jax.profiler.ProfileData.from_file(files[0]), steps, wall)
    finally:
        shutil.rmtree(trace_dir, ignore_errors=True)
    for row in categories:
        run.report.add(result, "kernels", row)
    for row in top:
        run.report.add(result, "top_kernels", row)


def profile_variants(run: Run, bench: dict, result: dict) -> None:
    """The same step with one thing changed, each compiled and timed like section 2's (time permitting)."""
    config, micro = bench["config"], bench["micro_batch"]
    label = f"as section 2 ({config.attention} attention, no remat, 1 micro-batch)"
    run.report.add(result, "variants", variant_row(run, label, bench))
    variants = [("remat 'dots'", config, dict(remat="dots")), ("2 micro-batches per step", config, dict(accum=2))]
    if config.attention != "xla":  # else (no cuDNN) the baseline already is this variant
        variants.insert(0, ("xla attention", dataclasses.replace(config, attention="xla"), {}))
    if run.args.smoke:  # one variant proves the code path; each costs a compile
        variants = variants[-1:]
    needs = max(NEEDS["variant"], 1.5 * bench["compile_s"] + 10)
    for label, changed, kw in variants:
        if not run.fits(f"variant {label!r}", needs, result):
            continue
        try:
            other = train_bench(run, changed, micro, **kw)
        except Exception as e:
            note_error(result, f"variant {label!r}", e)
            continue
        run.report.add(result, "variants", variant_row(run, label, other))
        if other["accum"] == 2:  # t(1) = m + o and t(2) = 2m + o for a micro-batch m and a per-step overhead o
            overhead = 2 * bench["step_s"] - other["step_s"]
            noise = " (negative: timing noise exceeds it)" if overhead < 0 else ""
            result["notes"].append(
                f"optimizer update + per-step overhead ~ 2 t(1) - t(2) = {1e3 * overhead:.1f} ms "
                f"({overhead / bench['step_s']:.1%} of a one-micro-batch step){noise}"
            )
        del other  # its state and executable: the next variant gets the memory


def variant_row(run: Run, label: str, bench: dict) -> dict:
    tokens_per_s = bench["tokens"] / bench["step_s"]
    return dict(
        variant=label,
        compile_s=bench["compile_s"],
        step_ms=1e3 * bench["step_s"],
        tokens_per_s=tokens_per_s,
        mfu_measured=_ratio(bench["flops_per_token"] * tokens_per_s, run.peak_flops),
        footprint_gib=_gib(bench.get("footprint_bytes")),
    )


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
