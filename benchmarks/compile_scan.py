"""Compile time of the train step, blocks unrolled vs scanned (GPTConfig.scan_layers), for deep narrow models on CPU.

The model: width 128 (2 heads of 64), sequence 64, vocab 8192, batch 8, at several depths; nanocode's real train step
(nanocode.train.step with the fused loss) and optimizer (Muon + AdamW) on a one-device mesh. For each depth and
layout the step is traced and lowered (`lower`) then compiled by XLA (`compile`), from a fresh jit each time with
the persistent compilation cache off, so nothing is reused; variants are interleaved over `--rounds` rounds and the
median is reported. Then a few steps run, for the step time (median) and XLA's temporaries per device.

    .venv/bin/python benchmarks/compile_scan.py [--depths 6 12 24] [--remat none dots] [--rounds 2] [--out FILE]

Run it on a quiet machine (check `uptime`: load below ~1.5).
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
from common import cpu_name, one_device_train_step

from nanocode.models.gpt import GPTConfig
from nanocode.optim.muon import MuonAdamW
from nanocode.train.runtime import use_memory_ordered_cpu_scheduler

BENCH = dict(sequence_len=64, vocab_size=8192, n_head=2, n_kv_head=2, n_embd=128)
BATCH = 8


def build(n_layer: int, scan_layers: bool, remat: str | None):
    """(jitted step, initial state, batch) on a one-device mesh."""
    config = GPTConfig(**BENCH, n_layer=n_layer, scan_layers=scan_layers)
    return one_device_train_step(config, MuonAdamW(), BATCH, remat=remat)


def measure(n_layer: int, scan_layers: bool, remat: str | None, steps: int) -> dict:
    step, state, batch = build(n_layer, scan_layers, remat)
    t0 = time.perf_counter()
    lowered = step.lower(state, batch)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        float(metrics["loss"])
        times.append(time.perf_counter() - start)
    return {
        "lower": t1 - t0,
        "compile": t2 - t1,
        "step": statistics.median(times[1:] or times),
        "temp": compiled.memory_analysis().temp_size_in_bytes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[6, 12, 24])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--remat", nargs="+", default=["none"], help="remat policies to compare: none, dots")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    jax.config.update("jax_enable_compilation_cache", False)  # every compile is a real one

    load_before = os.getloadavg()[0]
    variants = [(d, r, s) for r in args.remat for d in args.depths for s in (False, True)]
    results: dict[tuple[int, str, bool], list[dict]] = {}
    for r in range(args.rounds):
        for depth, remat, scanned in variants:
            m = measure(depth, scanned, None if remat == "none" else remat, args.steps)
            results.setdefault((depth, remat, scanned), []).append(m)
            label = "scanned" if scanned else "unrolled"
            print(
                f"round {r} depth {depth:3d} remat {remat:4s} {label:8s}: lower {m['lower']:6.2f}s "
                f"compile {m['compile']:6.2f}s step {m['step'] * 1e3:7.1f} ms temp {m['temp'] / 2**20:7.1f} MiB",
                flush=True,
            )
    load_after = os.getloadavg()[0]

    def med(variant, key):
        return statistics.median(m[key] for m in results[variant])

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cmd = "benchmarks/compile_scan.py " + " ".join(sys.argv[1:])
    lines = [
        "# Train-step compile time: blocks unrolled vs scanned (GPTConfig.scan_layers)",
        "",
        f"Command: `.venv/bin/python {cmd.strip()}` (commit {commit}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())};"
        f" 1-minute load average {load_before:.2f} before, {load_after:.2f} after)",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, jax {jax.__version__}, "
        f"Python {platform.python_version()}",
        "",
        f"Model: width {BENCH['n_embd']} ({BENCH['n_head']} heads of 64), sequence {BENCH['sequence_len']}, vocab "
        f"{BENCH['vocab_size']}, batch {BATCH}; nanocode's train step with Muon + AdamW, one device. Medians of "
        f"{args.rounds} rounds (variants interleaved); lower = trace + lower to StableHLO, compile = XLA; step = "
        f"median of {args.steps - 1} timed steps; temporaries = XLA's memory analysis.",
        "",
        "| layers | remat | layout | lower s | compile s | total s | step ms | temporaries MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant in variants:
        depth, remat, scanned = variant
        lower, comp = med(variant, "lower"), med(variant, "compile")
        lines.append(
            f"| {depth} | {remat} | {'scanned' if scanned else 'unrolled'} | {lower:.2f} | {comp:.2f} | "
            f"{lower + comp:.2f} | {med(variant, 'step') * 1e3:.1f} | {med(variant, 'temp') / 2**20:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    use_memory_ordered_cpu_scheduler()  # as pretraining and plan --compile run
    sys.exit(main())
