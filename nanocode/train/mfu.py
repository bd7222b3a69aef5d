"""FLOPs accounting for model FLOPs utilisation (MFU): the peak a run is measured against.

MFU = model FLOPs per token x tokens per second / peak FLOP/s of the whole run. On accelerators the peak is the
vendor's dense bf16 number per chip (bound in gin, or looked up by device kind) times the device count. On a CPU the
vendor number means little, so the peak is *measured* at start-up: a large matmul in the run's compute dtype (fp32,
or bf16 inputs accumulated in fp32, the way the model computes), timed on this machine. Simulated CPU devices share
the same cores, so the measured peak is the whole machine's, never multiplied by the device count.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

# Dense bf16 peak FLOP/s per chip (vendor numbers, no sparsity). Keys are substrings of `jax.Device.device_kind`.
ACCELERATOR_PEAK_FLOPS: dict[str, float] = {
    "TPU v6": 918e12,  # v6e (Trillium); nanocode's MFU denominator
    "TPU v5p": 459e12,
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5e": 197e12,
    "TPU v4": 275e12,
    "H200": 989e12,
    "H100": 989e12,  # SXM; the PCIe card is lower (756e12)
    "A100": 312e12,
    "L4": 121e12,
}


def accelerator_peak_flops(device: jax.Device) -> float | None:
    """The table's per-chip peak for `device`, or None for a kind not in it (and for CPUs)."""
    if device.platform == "cpu":
        return None
    for key, flops in ACCELERATOR_PEAK_FLOPS.items():
        if key.lower() in device.device_kind.lower():
            return flops
    return None


def dtype_name(dtype) -> str:
    return jnp.dtype(dtype).name


@functools.cache
def measure_matmul_flops(dtype: str = "float32", size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an (size x size) @ (size x size) matmul on the default device, best of `repeats` after warm-up.

    bf16 is timed as the model computes it: bf16 inputs with float32 accumulation and output
    (`preferred_element_type=float32`), which is ~2x faster than fp32 on CPUs with AVX-512 bf16 (a bf16 *output*
    is slower than fp32 there). Cached per process: a run measures once.
    """
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (size, size), jnp.float32).astype(dtype)
    b = jax.random.normal(key_b, (size, size), jnp.float32).astype(dtype)
    matmul = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    matmul(a, b).block_until_ready()  # compile and warm the caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def peak_flops(compute_dtype, devices: list[jax.Device], per_device: float | None = None) -> tuple[float, str]:
    """The run's peak FLOP/s and where it came from.

    `per_device` (bound in gin) wins; else the accelerator table; on CPU the measured matmul peak of the whole
    machine in the compute dtype. Returns (nan, reason) for an accelerator the table does not know.
    """
    if per_device is not None:
        return per_device * len(devices), f"{per_device:.3g} FLOP/s per device (config) x {len(devices)}"
    device = devices[0]
    if device.platform == "cpu":
        name = dtype_name(compute_dtype)
        flops = measure_matmul_flops(name)
        return flops, f"measured {name} matmul peak of this CPU: {flops / 1e9:.1f} GFLOP/s"
    table = accelerator_peak_flops(device)
    if table is None:
        return float("nan"), f"unknown accelerator {device.device_kind!r}: bind Pretraining.peak_flops for MFU"
    return table * len(devices), f"{device.device_kind}: {table:.3g} FLOP/s per chip x {len(devices)}"


def mfu(flops_per_token: float, tokens_per_second: float, peak: float) -> float:
    """Model FLOPs utilisation as a fraction (0..1)."""
    return flops_per_token * tokens_per_second / peak
