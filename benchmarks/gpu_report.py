"""The GPU benchmark's results (benchmarks/gpu.py): kept as one JSON-able dict, rewritten as markdown and JSON after
every change, so a run stopped at its deadline still leaves everything it measured."""

from __future__ import annotations

import json
import math
import threading
import time
import traceback
from pathlib import Path
from typing import Any

# Markdown columns of every table: (key, header, format spec or None).
COLUMNS = {
    "ceilings": [
        ("what", "measurement", None),
        ("median_ms", "median ms", ".3f"),
        ("measured", "measured", ".3g"),
        ("datasheet", "datasheet", ".3g"),
        ("unit", "unit", None),
        ("of_datasheet", "of datasheet", ".1%"),
    ],
    "train": [
        ("model", "model", None),
        ("attention", "attention", None),
        ("rows", "rows x seq", None),
        ("compile_s", "compile s", ".1f"),
        ("step_ms", "step ms (median)", ".1f"),
        ("tokens_per_s", "tokens/s", ",.0f"),
        ("gflop_per_token", "GFLOP/token", ".3f"),
        ("mfu_measured", "MFU vs measured peak", ".1%"),
        ("mfu_datasheet", "MFU vs datasheet", ".1%"),
        ("peak_gib", "peak GiB (process)", ".2f"),
        ("footprint_gib", "step GiB (XLA)", ".2f"),
        ("loss", "loss first -> last", None),
    ],
    "attention": [
        ("shape", "shape [b,t,h,d]", None),
        ("dtype", "inputs", None),
        ("quantity", "quantity", None),
        ("cudnn_vs_xla_max_abs", "cudnn-xla max abs", ".2e"),
        ("cudnn_vs_xla_rel", "cudnn-xla rel", ".2e"),
        ("cudnn_vs_ref_rel", "cudnn-ref rel", ".2e"),
        ("xla_vs_ref_rel", "xla-ref rel", ".2e"),
        ("tolerance", "tol", ".0e"),
        ("verdict", "verdict", None),
    ],
    "decode": [
        ("model", "model", None),
        ("dtype", "engine dtype", None),
        ("prompt", "prompt", None),
        ("new_tokens", "new tokens", None),
        ("ttft_ms", "TTFT ms", ".1f"),
        ("tokens_per_s", "decode tok/s", ",.0f"),
        ("mb_per_token", "MB read/token", ".1f"),
        ("achieved_gb_s", "achieved GB/s", ",.0f"),
        ("bound_measured", "bound (measured BW) tok/s", ",.0f"),
        ("of_bound_measured", "% of it", ".1%"),
        ("bound_datasheet", "bound (datasheet BW) tok/s", ",.0f"),
        ("of_bound_datasheet", "% of it", ".1%"),
    ],
    "roofline": [
        ("what", "per step", None),
        ("value", "value", ".4g"),
        ("unit", "unit", None),
    ],
    "kernels": [
        ("category", "kernel category", None),
        ("ms_per_step", "ms/step", ".2f"),
        ("of_wall", "of wall time", ".1%"),
        ("kernels_per_step", "kernels/step", ".0f"),
    ],
    "top_kernels": [
        ("name", "kernel", None),
        ("category", "category", None),
        ("ms_per_step", "ms/step", ".3f"),
        ("calls_per_step", "calls/step", ".0f"),
    ],
    "variants": [
        ("variant", "variant", None),
        ("compile_s", "compile s", ".1f"),
        ("step_ms", "step ms", ".1f"),
        ("tokens_per_s", "tokens/s", ",.0f"),
        ("mfu_measured", "MFU vs measured", ".1%"),
        ("footprint_gib", "step GiB (XLA)", ".2f"),
    ],
}


class Report:
    """The results (metadata + one entry per section), written as markdown and JSON after every change."""

    def __init__(self, out_dir: Path, meta: dict):
        self.out_dir, self.meta, self.sections = out_dir, meta, {}
        self.lock = threading.RLock()
        self.running: str | None = None

    def plan(self, sections: list[tuple[str, str]]) -> None:
        """List every section up front, so that a run stopped early shows what it never reached."""
        for key, title in sections:
            self.sections[key] = {"title": title, "status": "not started", "seconds": None, "tables": {}, "notes": []}

    def section(self, key: str, title: str) -> dict:
        result = {"title": title, "status": "running", "seconds": None, "tables": {}, "notes": []}
        with self.lock:
            self.sections[key] = result
            self.running = key
        return result

    def add(self, result: dict, table: str, row: dict) -> None:
        with self.lock:
            result["tables"].setdefault(table, []).append(row)
        self.write()

    def stop(self, why: str) -> None:
        """The deadline's hard stop: mark the running section, write everything."""
        with self.lock:
            if self.running and self.sections[self.running]["status"] == "running":
                self.sections[self.running]["status"] = "timeout"
                self.sections[self.running]["notes"].append(why)
            self.meta["stopped"] = why
            self.write()

    def write(self) -> None:
        with self.lock:
            self.meta["wall_s"] = round(time.monotonic() - self.meta["_start"], 1)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            data = {"meta": {k: v for k, v in self.meta.items() if not k.startswith("_")}, "sections": self.sections}
            _atomic_write(self.out_dir / "gpu_results.json", json.dumps(data, indent=1, default=str) + "\n")
            _atomic_write(self.out_dir / "gpu_results.md", render_markdown(data))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:400]


def note_error(result: dict, what: str, exc: BaseException) -> None:
    """A failed piece of a section: its one-line error in the notes (traceback on stderr); the section goes on."""
    traceback.print_exc()
    result["notes"].append(f"{what}: error: {one_line(exc)}")
    result["errors"] = result.get("errors", 0) + 1


# ------------------------------------------------------------------------------------------------ rendering
def cell(value: Any, fmt: str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if fmt and isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, fmt)
    return str(value).replace("|", "/")


def render_table(name: str, rows: list[dict]) -> list[str]:
    columns = [c for c in COLUMNS[name] if any(c[0] in r for r in rows)]
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(k), f) for k, _, f in columns) + " |")
    return lines + [""]


def render_markdown(data: dict) -> str:
    meta = data["meta"]
    lines = [
        f"# GPU readiness: nanocode on {meta.get('device_kind', '?')}",
        "",
        f"- Date: {meta.get('date')}",
        f"- Device: {meta.get('device_kind')} ({meta.get('platform')}, {meta.get('device_count')} device(s) visible,"
        f" one used); datasheet peak {cell(meta.get('datasheet_flops'), '.3g')} FLOP/s,"
        f" {cell(meta.get('datasheet_bandwidth'), '.3g')} B/s",
        f"- Versions: {meta.get('versions')}",
        f"- Commit: {meta.get('commit')}",
        f"- Command: `{meta.get('command')}`"
        + (f" (XLA_FLAGS `{meta['xla_flags']}`)" if meta.get("xla_flags") else ""),
        f"- Budget {meta.get('budget_s')} s; wall {meta.get('wall_s')} s"
        + (f"; STOPPED: {meta['stopped']}" if meta.get("stopped") else ""),
    ]
    lines += [f"- Note: {n}" for n in meta.get("notes", [])] + [""]
    for result in data["sections"].values():
        lines += [f"## {result['title']}", "", f"Status: {result['status']} ({result['seconds']} s)", ""]
        for name, rows in result["tables"].items():
            lines += render_table(name, rows)
        lines += [f"- {n}" for n in result["notes"]] + [""]
    return "\n".join(lines).rstrip() + "\n"
