"""Checksums of array values that do not depend on how the arrays are sharded.

A checkpoint records one per array when it is saved and compares it when the array is read back, so a flipped
byte in a saved file (which orbax/tensorstore may restore without complaint) is caught. The checksum is a sum of
per-element hashes, each mixing the element's bits with its position: integer addition is associative, so XLA may
reduce the shards in any order, on any mesh, over any number of processes, and every process gets the same value.
An array saved on an 8-way FSDP mesh and restored on a (2, 2, 2) mesh checks against the same number.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_M1, _M2 = np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35)  # murmur3's finaliser constants
_SEED_A, _SEED_B = np.uint32(0x9E3779B9), np.uint32(0x7F4A7C15)  # two independent 32-bit lanes -> 64 bits


def _fmix(h: jax.Array) -> jax.Array:
    h = h ^ (h >> 16)
    h = h * _M1
    h = h ^ (h >> 13)
    h = h * _M2
    return h ^ (h >> 16)


def _words(x: jax.Array) -> jax.Array:
    """The array's bits as uint32 words (16-bit and 8-bit types widened, 64-bit types split in two)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if jnp.iscomplexobj(x):
        x = jnp.stack([x.real, x.imag], axis=-1)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    bits = x.dtype.itemsize * 8
    if bits > 32:
        return lax.bitcast_convert_type(x, jnp.uint32)  # adds a trailing axis of bits // 32 words
    return lax.bitcast_convert_type(x, jnp.dtype(f"uint{bits}")).astype(jnp.uint32)


def _position(shape: tuple[int, ...]) -> jax.Array:
    """Each element's row-major index (mod 2**32), built from iotas so every shard computes only its own."""
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        index = index + lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride % 2**32)
        stride *= shape[axis]
    return index


def _checksum(x: jax.Array) -> jax.Array:
    words = _words(x)
    position = _position(words.shape)
    lane_a = jnp.sum(_fmix(words + _fmix(position ^ _SEED_A)), dtype=jnp.uint32)
    lane_b = jnp.sum(_fmix(words ^ _fmix(position + _SEED_B)), dtype=jnp.uint32)
    return jnp.stack([lane_a, lane_b])


_checksums = jax.jit(lambda leaves: [_checksum(x) for x in leaves])


def is_array(x: Any) -> bool:
    return isinstance(x, jax.Array | np.ndarray)


def array_checksums(arrays: Iterable[jax.Array | np.ndarray]) -> list[str]:
    """A 16-hex-digit checksum per array, equal for equal values whatever their sharding.

    Call it on every process of a multi-process run (it is one collective computation per group of devices)."""
    arrays = list(arrays)
    out: list[str | None] = [None] * len(arrays)
    groups: dict[Any, list[int]] = {}  # one jit per device set: jit refuses arrays committed to different devices
    for i, x in enumerate(arrays):
        key = x.sharding.device_set if isinstance(x, jax.Array) else None
        groups.setdefault(frozenset(key) if key is not None else None, []).append(i)
    for indices in groups.values():
        sums = _checksums([arrays[i] for i in indices])
        for i, s in zip(indices, sums, strict=True):
            # the sum is replicated on every device: any one local copy is the whole value
            lanes = np.asarray(s.addressable_data(0)) if isinstance(s, jax.Array) else np.asarray(s)
            out[i] = f"{int(lanes[0]):08x}{int(lanes[1]):08x}"
    return out  # type: ignore[return-value]
