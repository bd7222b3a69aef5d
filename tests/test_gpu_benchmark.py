"""benchmarks/gpu.py's CPU smoke mode: every section runs on tiny shapes and lands in the markdown and the JSON."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("ceilings", "train", "attention", "decode", "profile")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_smoke")
    env = dict(os.environ, PYTHONPATH=str(REPO))  # as the launcher runs it: nanocode from the checkout
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu.py", "--smoke", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "gpu_results.json").read_text()), (out / "gpu_results.md").read_text()


def numbers(rows, key):
    return [r[key] for r in rows if isinstance(r.get(key), int | float) and math.isfinite(r[key])]


@pytest.mark.slow
def test_every_section_runs_and_is_reported(smoke):
    _, data, markdown = smoke
    meta = data["meta"]
    for field in ("date", "device_kind", "versions", "commit", "command"):
        assert meta[field], field
    assert "jax" in meta["versions"] and "--smoke" in meta["command"]
    assert list(data["sections"]) == list(SECTIONS)
    for key, section in data["sections"].items():
        assert section["status"] == "ok", (key, section)
        assert f"## {section['title']}" in markdown
    for header in ("Date:", "Device:", "Versions:", "Commit:", "Command:"):
        assert header in markdown


@pytest.mark.slow
def test_sections_hold_numbers(smoke):
    _, data, _ = smoke
    tables = {k: s["tables"] for k, s in data["sections"].items()}
    assert len(numbers(tables["ceilings"]["ceilings"], "measured")) == 2  # matmul peak and copy bandwidth
    train = tables["train"]["train"]
    assert [r["model"] for r in train] == ["d12", "d20"]  # read from the experiments' gin files
    assert len(numbers(train, "tokens_per_s")) == 2 and len(numbers(train, "mfu_measured")) == 2
    assert len(numbers(train, "compile_s")) == 2
    assert len(numbers(tables["decode"]["decode"], "tokens_per_s")) == 2
    assert numbers(tables["profile"]["roofline"], "value")
    assert numbers(tables["profile"]["variants"], "step_ms")


@pytest.mark.slow
def test_attention_records_cudnn_skip_on_cpu(smoke):
    _, data, markdown = smoke
    attention = data["sections"]["attention"]
    rows = attention["tables"]["attention"]
    assert {r["quantity"] for r in rows} == {"out", "dq", "dk", "dv"}
    assert {r["dtype"] for r in rows} == {"bfloat16", "float32"}
    assert all(r["verdict"].startswith("PASS") for r in rows)
    assert all(r["xla_vs_ref_rel"] <= r["tolerance"] for r in rows)
    assert any("cudnn did not run (expected)" in n and "NVIDIA GPU" in n for n in attention["notes"])
    assert "cudnn skipped" in markdown


@pytest.mark.slow
def test_trace_archive_is_written(smoke):
    out, data, _ = smoke
    assert (out / "gpu_trace.tar.gz").stat().st_size > 0
    assert data["sections"]["profile"]["tables"].get("kernels")  # the trace was read back into a breakdown


def test_experiment_settings_reads_the_gpu_experiments(gin_clean):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    config, micro_batch = gpu.experiment_settings(gpu.EXPERIMENTS["d12"])
    assert (config.n_layer, config.n_embd, config.attention, config.compute_dtype) == (12, 768, "cudnn", "bfloat16")
    assert micro_batch > 0
    config, micro_batch = gpu.experiment_settings(gpu.EXPERIMENTS["d20"])
    assert (config.n_layer, config.n_embd, config.sequence_len) == (20, 1280, 2048)
    assert micro_batch > 0
