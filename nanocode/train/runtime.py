"""Process-wide XLA settings a trainer asks for before JAX starts its backend.

XLA:CPU's default scheduler orders work for concurrency: it starts independent computations (rematerialised
activations included) as early as possible, which keeps more buffers alive and undoes remat. The plain scheduler
orders for memory, as the TPU and GPU backends do: on this project's 2-core machine the train step was also ~5%
faster with it (benchmarks/train_cpu_results.md), and `nanocode plan --compile`'s memory analysis only matches an
accelerator's with it. The flag is read once, when the backend starts; other backends ignore it.
"""

from __future__ import annotations

import os

CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


def use_memory_ordered_cpu_scheduler() -> None:
    """Add the flag to $XLA_FLAGS unless it is already there (an explicit setting wins). Call before any device use."""
    flags = os.environ.get("XLA_FLAGS", "")
    if CPU_SCHEDULER_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_SCHEDULER_FLAG}=false".strip()
