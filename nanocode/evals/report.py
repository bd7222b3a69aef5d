"""The run report: `<tag>/report/report.md` (+ report.html when pandoc is installed) with its PNG plots.

It reads only what the stages wrote — speedrun markers (stage times), each stage's `metrics.jsonl` and
`config.gin`, the tokenizer's `tok_eval.md`, `samples.jsonl`, and `eval/results.json` — and says next to every
number which file it came from. Published reference numbers are quoted with their source.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nanocode.core.errors import ConfigError
from nanocode.core.io import read_jsonl, write_text
from nanocode.core.registry import register_config
from nanocode.core.workspace import Workspace

STAGES = ("pretrain", "sft", "align")
# Published numbers (nanocode README, TPU v6e-8; nanochat README for GPT-2): (CORE, fwe bpb, sv2 bpb, MFU).
PUBLISHED = {
    "nanocode d12 (135M)": (0.090, 0.956, 0.689, "17.4%"),
    "nanocode d20 (477M)": (0.170, 0.838, 0.533, "45.2%"),
    "nanocode d24 (1.3B)": (0.227, 0.759, 0.445, "52.5%"),
    "GPT-2 XL (1.5B)": (0.256525, None, None, None),
}
PUBLISHED_SOURCE = "nanocode README scaling table; GPT-2 XL CORE from nanochat's core_eval reference"


def hardware() -> dict[str, str]:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": str(os.cpu_count())}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem_kb = int(
            next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")).split()[1]
        )
        info["memory"] = f"{mem_kb / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    try:
        import jax

        info["accelerators"] = ", ".join(sorted({f"{d.platform}:{d.device_kind}" for d in jax.devices()}))
    except Exception:  # report what we can; the report must not fail for want of a device query
        pass
    return info


def plot_curves(records: list[dict], keys: list[str], path: Path, title: str) -> bool:
    """Plot metric keys against 'step' into a PNG; False when there is nothing to plot."""
    series = {k: [(r["step"], r[k]) for r in records if k in r and "step" in r and r[k] is not None] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for k, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 30 else None, label=k)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


@dataclass(frozen=True, kw_only=True)
class Report:
    """The `report` stage: what the report shows and whether it is also rendered to HTML."""

    html: bool = True  # report.html beside report.md, when pandoc is installed
    samples: int = 5  # the last samples shown per training stage

    def __post_init__(self):
        if self.samples < 0:
            raise ConfigError(f"Report.samples = {self.samples}: must be >= 0")

    def run(self, workspace: Workspace) -> Path:
        return build_report(workspace, html=self.html, samples=self.samples)


register_config(Report)


def build_report(workspace: Workspace, *, html: bool = True, samples: int = 5) -> Path:
    out = workspace.report_dir
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# nanocode report: `{workspace.tag}`", ""]
    md += ["## Hardware", "", "| | |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in hardware().items()] + [""]

    markers = sorted((workspace.model_dir / "speedrun").glob("*.json"), key=lambda m: m.stat().st_mtime)  # run order
    if markers:
        md += [
            "## Stages",
            "",
            f"Source: `{workspace.model_dir / 'speedrun'}/*.json`",
            "",
            "| stage | seconds |",
            "|---|---|",
        ]
        total = 0.0
        for m in markers:
            rec = json.loads(m.read_text())
            total += rec["seconds"]
            md.append(f"| {rec['stage']} | {rec['seconds']:.1f} |")
        md += [f"| **total** | {total:.1f} |", ""]

    tok_eval = workspace.tokenizer_dir / "tok_eval.md"
    if tok_eval.exists():
        md += ["## Tokenizer", "", f"Source: `{tok_eval}`", "", tok_eval.read_text(encoding="utf-8").strip(), ""]

    for stage in STAGES:
        run = workspace.run_dir(stage)
        records = read_jsonl(run / "metrics.jsonl")
        if not records:
            continue
        md += [f"## {stage}", "", f"Source: `{run / 'metrics.jsonl'}` ({len(records)} records)", ""]
        final = {}
        for r in records:
            final.update({k: v for k, v in r.items() if isinstance(v, int | float)})
        md += ["| metric | last value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in sorted(final.items())]
        md.append("")
        loss_keys = sorted({k for r in records for k in r if k in ("loss", "train/loss") or k.endswith("/loss")})
        bpb_keys = sorted({k for r in records for k in r if "bpb" in k})
        acc_keys = sorted({k for r in records for k in r if "accuracy" in k})
        for name, keys in (("loss", loss_keys), ("bpb", bpb_keys), ("accuracy", acc_keys)):
            png = out / f"{stage}_{name}.png"
            if keys and plot_curves(records, keys, png, f"{stage}: {name}"):
                md += [f"![{stage} {name}]({png.name})", ""]
        last_samples = read_jsonl(run / "samples.jsonl")[-samples:] if samples else []
        if last_samples:
            md += ["Last samples (source: `samples.jsonl`):", "", "```"]
            md += [json.dumps(s, ensure_ascii=False)[:400] for s in last_samples] + ["```", ""]

    results = workspace.run_dir("eval") / "results.json"
    if results.exists():
        data = json.loads(results.read_text())
        md += ["## Evaluation", "", f"Source: `{results}`", "", "```json", json.dumps(data, indent=2)[:6000], "```", ""]
    md += [
        "## Published reference points",
        "",
        f"Source: {PUBLISHED_SOURCE}.",
        "",
        "| model | CORE | fwe bpb | sv2 bpb | MFU |",
        "|---|---|---|---|---|",
    ]
    md += [
        f"| {name} | {_fmt(c)} | {_fmt(f) if f else '-'} | {_fmt(s) if s else '-'} | {m or '-'} |"
        for name, (c, f, s, m) in PUBLISHED.items()
    ]
    path = out / "report.md"
    write_text(path, "\n".join(md) + "\n")
    if html and shutil.which("pandoc"):
        subprocess.run(
            [
                "pandoc",
                str(path),
                "-o",
                str(out / "report.html"),
                "--standalone",
                "--resource-path",
                str(out),
                "--metadata",
                f"title=nanocode {workspace.tag}",
            ],
            check=False,
        )
    return path
