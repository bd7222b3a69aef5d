"""The GPU benchmark's shared state and measuring tools (benchmarks/gpu.py): the run's clock and budget, the section
runner, timed calls, the two ceilings and XLA's own accounting of a compiled step."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import time
import traceback
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from gpu_report import Report, one_line

from nanocode.models.gpt import GPTConfig

# Seconds a piece of work needs left on the clock to be started (compiles dominate; a miss is a skip, not an overrun).
NEEDS = {"ceilings": 20, "train": 45, "attention": 10, "decode": 25, "profile": 15, "trace": 15, "variant": 30}


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
