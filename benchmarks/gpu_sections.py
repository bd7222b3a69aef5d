"""The GPU benchmark's five sections (benchmarks/gpu.py documents what each measures): each fills its result dict
from the shared Run."""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import math
import shutil
import statistics
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from common import one_device_train_step
from decode_cpu import step_bytes, time_generation
from flax import nnx
from gpu_report import note_error, one_line
from gpu_run import NEEDS, Run, compiled_costs, copy_bandwidth, matmul_peak, models, process_peak_bytes
from gpu_trace import kernel_breakdown

from nanocode.core.errors import ConfigError
from nanocode.core.kinds import ATTENTION
from nanocode.models.engine import Engine
from nanocode.models.gpt import GPT, GPTConfig
from nanocode.models.sampling import GREEDY
from nanocode.optim.muon import MuonAdamW

# Relative error (||x - ref|| / ||ref||) allowed against the highest-precision fp32 reference. bf16 rounds the
# output and the probabilities (2^-9 relative; XLA's bf16 path measured ~2.3e-3 on CPU at the d12/d20 shapes);
# fp32 leaves room for TF32 tensor-core dots (XLA:GPU's default for f32), ~3e-4 per product over a chain of them.
ATTENTION_TOLERANCE = {"bfloat16": 1e-2, "float32": 5e-3}


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
