"""Run logs: a stage's metrics go to its writers (`MetricsLog`, see `metric_writers`: JSONL by default, TensorBoard,
W&B, trackio); samples go to `samples.jsonl` (`JsonlLogger`). Both are written by process 0 only.

Values may be jax/numpy scalars; they become plain floats/ints so the files are readable without nanocode.
A resumed run appends to the same JSONL files; records after the resume step from the interrupted attempt are
kept (the step field tells them apart), so a reader takes the last record per step (the report does).
"""

from __future__ import annotations

import math
import resource
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from nanocode.core.interfaces import MetricsWriter
from nanocode.core.io import append_jsonl


def plain(value: Any) -> Any:
    """A JSON-ready version of a metric value (NaN/inf become None: JSON has no such numbers)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        value = np.asarray(value).item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlLogger:
    """Appends records to a JSONL file; a no-op on processes other than 0 (one writer per run)."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def log(self, record: dict[str, Any]) -> None:
        if self.enabled:
            append_jsonl(self.path, plain(record))


class MetricsLog:
    """A stage's metrics, sent to each of its writers; every call is a no-op on processes other than 0."""

    def __init__(self, writers: tuple[MetricsWriter, ...], enabled: bool = True):
        self.writers, self.enabled = tuple(writers), enabled
        self._open: list[MetricsWriter] = []

    def open(self, run_dir: str | Path, *, stage: str, config: str, start_step: int) -> None:
        if self.enabled:
            for writer in self.writers:
                writer.open(Path(run_dir), stage=stage, config=config, start_step=start_step)
                self._open.append(writer)

    def log(self, record: dict[str, Any]) -> None:
        if self._open:
            record = plain(record)
            for writer in self._open:
                writer.write(record)

    def close(self) -> None:
        while self._open:
            self._open.pop().close()


def peak_memory_bytes(devices: list[jax.Device]) -> tuple[int, str]:
    """Peak memory so far: the largest device `peak_bytes_in_use` where the backend reports it (GPU/TPU), else the
    process's peak resident set size (CPU)."""
    peaks = []
    for d in devices:
        try:
            stats = d.memory_stats()
        except Exception:  # some backends raise instead of returning None
            stats = None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    if peaks:
        return max(peaks), "device"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "rss"  # Linux reports KiB, macOS bytes


def format_line(step: int, record: dict[str, Any], keys: tuple[str, ...]) -> str:
    """`step 12 | loss 3.2100 | ...` for the console, only the keys present."""
    parts = [f"step {step}"]
    for k in keys:
        v = record.get(k)
        if v is None:
            continue
        if isinstance(v, float):
            parts.append(f"{k} {v:.4g}" if abs(v) < 1e4 else f"{k} {v:,.0f}")
        else:
            parts.append(f"{k} {v}")
    return " | ".join(parts)
