"""Process-wide settings a trainer asks for before JAX starts its backend: `configure_process()` applies them all.

1. XLA:CPU's default scheduler orders work for concurrency: it starts independent computations (rematerialised
   activations included) as early as possible, which keeps more buffers alive and undoes remat. The plain scheduler
   orders for memory, as the TPU and GPU backends do: on this project's 2-core machine the train step was also ~5%
   faster with it (benchmarks/train_cpu_results.md), and `nanocode plan --compile`'s memory analysis only matches an
   accelerator's with it. The flag is read once, when the backend starts; other backends ignore it.
2. XLA:CPU takes each step's temporaries (~400 MiB for the CPU benchmark's step) from malloc and frees them at the
   end of the step. glibc serves a block that large with a fresh mmap and unmaps it on free, so every step
   page-faults all of it back in (~108,000 faults and ~0.2 s of kernel time per step there): 9-28% of the step's time
   (fp32 and bf16 runs of benchmarks/train_cpu.py with and without this).
   `retain_freed_memory` makes glibc keep freed memory for reuse instead, as PyTorch's caching allocator and
   jemalloc do: the process's resident memory stays at its peak rather than falling between steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"

# mallopt(3) parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8


def configure_process() -> None:
    """Both settings below; call at start-up, before any device use (the CLI does, for every command)."""
    use_memory_ordered_cpu_scheduler()
    retain_freed_memory()


def use_memory_ordered_cpu_scheduler() -> None:
    """Add the flag to $XLA_FLAGS unless it is already there (an explicit setting wins). Call before any device use."""
    flags = os.environ.get("XLA_FLAGS", "")
    if CPU_SCHEDULER_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_SCHEDULER_FLAG}=false".strip()


def retain_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse rather than unmapping it; False where there is no glibc.

    Three settings, all needed: one arena (a thread's own arena serves any block over 64 MiB with mmap, whatever the
    limits below), no mmap'd blocks (large blocks come from the heap instead), and no trimming of the heap's top.
    Call it before JAX starts its thread pools, so that their threads share the one arena.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)
