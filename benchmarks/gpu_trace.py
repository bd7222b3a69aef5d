"""A profiler trace's kernels summed by kind: how much of a train step's wall time matmuls, attention, copies and
fusions take, and how long the device sat idle (benchmarks/gpu.py, section 5)."""

from __future__ import annotations

# Kernel-name substrings (lower case) per category for the trace breakdown; the first match wins.
KERNEL_CATEGORIES = (
    ("attention (cuDNN)", ("sdpa", "flash", "fmha", "attention", "cudnn")),
    ("matmul", ("gemm", "xmma", "nvjet", "cutlass", "matmul", "gemv", "dot")),
    ("copy / memset", ("memcpy", "memset", "copy")),
    ("reduction fusions", ("reduce", "reduction")),
    ("other fusions", ("",)),
)


def kernel_events(data) -> list[tuple[str, int, int]]:
    """(name, start ns, duration ns) of every kernel in a trace: the device planes' stream lines on a GPU, the
    XLA worker threads on a CPU (where there is no device plane)."""
    planes = [p for p in data.planes if p.name.startswith("/device:")]
    if planes:
        lines = [line for p in planes for line in p.lines if not line.name.startswith(("XLA", "Steps", "Launch"))]
        kernels = [e for line in lines for e in line.events]
    else:  # CPU threads also carry the runtime's own spans (ThunkExecutor::Execute, ...) around the kernels
        lines = [
            line for p in data.planes if p.name == "/host:CPU" for line in p.lines if line.name.startswith("tf_XLA")
        ]
        kernels = [e for line in lines for e in line.events if "::" not in e.name]
    return [(e.name, int(e.start_ns), int(e.duration_ns)) for e in kernels if e.duration_ns > 0]


def kernel_category(name: str) -> str:
    lower = name.lower()
    return next(category for category, keys in KERNEL_CATEGORIES if any(k in lower for k in keys))


def kernel_breakdown(data, steps: int, wall_s: float) -> tuple[list[dict], list[dict]]:
    """Per-category kernel time per step (and share of the step's wall time, with the device's idle share), and
    the kernels that take the most time."""
    events = kernel_events(data)
    if not events:
        raise RuntimeError("no kernel events in the trace")
    by_category: dict[str, list[float]] = {}
    by_name: dict[str, list[float]] = {}
    for name, _, duration in events:
        by_category.setdefault(kernel_category(name), []).append(duration)
        by_name.setdefault(name, []).append(duration)
    wall_ms = 1e3 * wall_s
    rows = [
        dict(category=c, ms_per_step=sum(d) / 1e6 / steps, kernels_per_step=len(d) / steps)
        for c, d in sorted(by_category.items(), key=lambda kv: -sum(kv[1]))
    ]
    busy_ms = busy_ns(events) / 1e6 / steps
    rows.append(dict(category="device busy (union of all kernels)", ms_per_step=busy_ms))
    rows.append(dict(category="device idle (wall - busy)", ms_per_step=wall_ms - busy_ms))
    for row in rows:
        row["of_wall"] = row["ms_per_step"] / wall_ms
    top = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:10]
    top_rows = [
        dict(name=n[:90], category=kernel_category(n), ms_per_step=sum(d) / 1e6 / steps, calls_per_step=len(d) / steps)
        for n, d in top
    ]
    return rows, top_rows


def busy_ns(events: list[tuple[str, int, int]]) -> int:
    """Length of the union of the events' intervals (kernels on several streams may overlap)."""
    total, end = 0, None
    for _, start, duration in sorted(events, key=lambda e: e[1]):
        stop = start + duration
        if end is None or start >= end:
            total += duration
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total
