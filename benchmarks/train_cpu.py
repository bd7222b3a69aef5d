"""Train-step throughput and MFU on this CPU, in fp32 and bf16 compute, next to the machine's measured matmul peaks.

The bench model is the one in /work/shared/reference/jax-on-this-machine.md (so numbers compare with the PyTorch
figures there): depth 4, width 256, 4 heads of 64, sequence 256, vocab 8192, batch 16, AdamW; 34.6 MFLOP/token.
The step is nanocode's real train step (nanocode.train.step, with the cross-entropy fused into the head) on a
one-device mesh, with the attention nanocode's CPU experiments select ('blocked'); for comparison, `xla` variants
use the full-square XLA attention and `plain` variants also swap in the unfused loss (logits -> log-softmax by
autodiff). The process runs with nanocode's CLI settings (nanocode.train.runtime): XLA:CPU's memory-ordered
scheduler, and glibc keeping freed memory for reuse (otherwise each step page-faults its ~400 MiB of temporaries
back in); `--concurrency-scheduler` and `--return-freed-memory` turn them off for comparison.
Each configuration runs `--steps` timed steps after `--warmup` (compilation) steps; variants are interleaved
A B C D over `--rounds` rounds and the median tokens/s is reported (timing noise here is about +-10%).

    .venv/bin/python benchmarks/train_cpu.py [--rounds 3] [--steps 10] [--out benchmarks/train_cpu_results.md]

Run it on a quiet machine (check `uptime`: load below ~1.5); other processes skew every number.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from common import cpu_name, one_device_train_step
from flax import nnx

from nanocode.models.gpt import GPT, GPTConfig
from nanocode.optim.adamw import AdamW
from nanocode.train import mfu
from nanocode.train.loss import loss_sums, split_rows, token_nll
from nanocode.train.runtime import retain_freed_memory, use_memory_ordered_cpu_scheduler

BENCH = dict(sequence_len=256, vocab_size=8192, n_layer=4, n_head=4, n_kv_head=4, n_embd=256)
BATCH = 16


def plain_loss_sums(model, tokens, mask=None):
    """The unfused loss: full fp32 logits, then token NLL (autodiff does the backward pass)."""
    inputs, targets, valid = split_rows(tokens, mask)
    nll = token_nll(model(inputs), targets)
    return jnp.sum(jnp.where(valid, nll, 0.0)), jnp.sum(valid, dtype=jnp.float32)


def build(dtype: str, attention: str = "blocked", loss_fn=loss_sums):
    config = GPTConfig(**BENCH, compute_dtype=dtype, attention=attention)
    step, state, batch = one_device_train_step(config, AdamW(), BATCH, loss_fn=loss_fn)
    flops = GPT(config, rngs=nnx.Rngs(0)).flops_per_token()
    return {"step": step, "state": state, "batch": batch, "flops": flops, "config": config}


def time_steps(bench: dict, steps: int, warmup: int) -> float:
    """Tokens per second over `steps` steps (after `warmup`), blocking on the loss each step as the trainer does."""
    state, step, batch = bench["state"], bench["step"], bench["batch"]
    for _ in range(warmup):
        state, metrics = step(state, batch)
        float(metrics["loss"])
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
        float(metrics["loss"])
    elapsed = time.perf_counter() - start
    bench["state"] = state
    return steps * BATCH * bench["config"].sequence_len / elapsed


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} logical CPUs, jax {jax.__version__}, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default=None, help="write a markdown results file")
    parser.add_argument(
        "--concurrency-scheduler", action="store_true", help="keep XLA:CPU's default scheduler (for comparison)"
    )
    parser.add_argument(
        "--return-freed-memory",
        action="store_true",
        help="keep glibc's default of unmapping large freed blocks (for comparison: every step page-faults its temporaries)",
    )
    args = parser.parse_args()

    # As the nanocode CLI does for every command (nanocode.train.runtime.configure_process), before JAX starts.
    if not args.concurrency_scheduler:
        use_memory_ordered_cpu_scheduler()
    if not args.return_freed_memory:
        retain_freed_memory()
    load = os.getloadavg()[0]
    peaks = {d: mfu.measure_matmul_flops(d, 2048, repeats=10) for d in ("float32", "bfloat16")}
    benches = {d: build(d) for d in ("float32", "bfloat16")}
    benches |= {f"{d} xla": build(d, "xla") for d in ("float32", "bfloat16")}
    benches |= {f"{d} xla plain": build(d, "xla", plain_loss_sums) for d in ("float32", "bfloat16")}
    rates: dict[str, list[float]] = {d: [] for d in benches}
    for r in range(args.rounds):
        for d, bench in benches.items():
            rates[d].append(time_steps(bench, args.steps, args.warmup if r == 0 else 1))
            print(f"round {r + 1} {d}: {rates[d][-1]:,.0f} tok/s", file=sys.stderr)
    peaks_after = {d: mfu.measure_matmul_flops.__wrapped__(d, 2048, repeats=10) for d in peaks}
    load_after = os.getloadavg()[0]

    rows = []
    for name in benches:
        dtype = name.split()[0]
        tps = statistics.median(rates[name])
        peak = max(peaks[dtype], peaks_after[dtype])
        flops = benches[name]["flops"]
        loss = "unfused (autodiff)" if "plain" in name else "fused into the head"
        attention = "xla" if "xla" in name else "blocked"
        rows.append(
            f"| {dtype} | {attention} | {loss} | {tps:,.0f} | {', '.join(f'{x:,.0f}' for x in rates[name])} | {flops / 1e6:.1f} | "
            f"{peak / 1e9:.0f} | {mfu.mfu(flops, tps, peak):.1%} |"
        )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    report = [
        "# Train step on this CPU: tokens/s and MFU",
        "",
        f"Command: `.venv/bin/python benchmarks/train_cpu.py --rounds {args.rounds} --steps {args.steps}"
        f"{' --concurrency-scheduler' if args.concurrency_scheduler else ''}"
        f"{' --return-freed-memory' if args.return_freed_memory else ''}`"
        f" (commit {commit or '?'}; 1-minute load average {load:.2f} before, {load_after:.2f} after)",
        "",
        f"Machine: {machine()}",
        "",
        f"XLA_FLAGS: `{os.environ.get('XLA_FLAGS', '')}`",
        "",
        "Model: depth 4, width 256, 4 heads of 64, sequence 256, vocab 8192, batch 16, AdamW (nanocode's train step,"
        " one device). MFU = FLOPs/token (nanocode's formula: the full [t, t] attention, whatever an implementation"
        " skips) x tokens/s / the matmul peak of the same dtype, measured in this run"
        " (2048^3; bf16 = bf16 inputs with float32 accumulation; the higher of before/after the timing).",
        "",
        "| compute | attention | loss | tokens/s (median) | rounds | MFLOP/token | matmul peak GFLOP/s | MFU |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Matmul peaks before / after the timing: fp32 {peaks['float32'] / 1e9:.0f} / "
        f"{peaks_after['float32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bfloat16'] / 1e9:.0f} / "
        f"{peaks_after['bfloat16'] / 1e9:.0f} GFLOP/s.",
    ]
    text = "\n".join(report) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
