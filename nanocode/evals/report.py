"""The run report: `<tag>/report/report.md` (+ report.html when pandoc is installed) with its PNG plots.

It reads only what the stages wrote — speedrun markers (stage times), each stage's `metrics.jsonl` and
`config.gin`, the tokenizer's `tok_eval.md`, `samples.jsonl`, and `eval/results.json` — and says next to every
number which file it came from. Published reference numbers are quoted with their source.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nanocode.core.errors import ConfigError
from nanocode.core.intervals import paired_difference
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


def curve(records: list[dict], key: str) -> list[tuple[int, float]]:
    """(step, value) of `key`, one point per step in step order: a resumed run re-logs the steps after its
    checkpoint, and the last record of a step is the one that counts."""
    last = {r["step"]: r[key] for r in records if r.get(key) is not None and "step" in r}
    return sorted(last.items())


def plot_curves(records: list[dict], keys: list[str], path: Path, title: str) -> bool:
    """Plot metric keys against 'step' into a PNG; False when there is nothing to plot."""
    series = {k: curve(records, k) for k in keys}
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


# ---------------------------------------------------------------------------------------------------- agentic, RL
def _success_cell(summary: dict | None) -> str:
    if not summary:
        return "-"
    lo, hi = summary["interval"]
    n = summary.get("episodes", summary["tasks"])
    return f"{summary['successes']}/{n} ({summary['success_rate']:.0%}; {lo:.0%}-{hi:.0%})"


# The field of each stage's config naming the stage it starts from (its run's config.gin records it).
STARTS_FROM = {"sft": "SFTTraining.init_from", "align": "Alignment.init_from", "rl": "RLTraining.init_from"}


def starting_points(workspace: Workspace) -> dict[str, str]:
    """stage -> the stage its model started from, as its run's resolved config.gin says (stages without one left
    out)."""
    out = {}
    for stage, field in STARTS_FROM.items():
        path = workspace.run_dir(stage) / "config.gin"
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        found = re.search(rf"^{re.escape(field)}\s*=\s*'(\w+)'", text, re.MULTILINE)
        if found:
            out[stage] = found.group(1)
    return out


def _change_line(stages: list[str], by_stage: dict[str, dict], parents: dict[str, str]) -> str:
    """Each stage's change from the stage it started from (`parents`; else the one before it in the table), paired
    over the tasks both ran."""
    parts = []
    for i, after in enumerate(stages[1:], 1):
        before = parents.get(after, stages[i - 1])
        if before not in by_stage:
            continue
        a, b = by_stage[before].get("task_rates"), by_stage[after].get("task_rates")
        if not a or not b:
            continue
        d = paired_difference(a, b)
        lo, hi = d["interval"]
        parts.append(
            f"{after} - {before}: {100 * d['difference']:+.1f} points ({100 * lo:+.1f} to {100 * hi:+.1f}; "
            f"{d['better']} tasks better, {d['worse']} worse of {d['tasks']})"
        )
    if not parts:
        return ""
    return (
        "Change from the stage each started from, paired over the same tasks (mean of per-task differences, 95% "
        "interval): " + "; ".join(parts) + "."
    )


def _stage_table(stages: list[str], by_stage: dict[str, dict], parents: dict[str, str]) -> list[str]:
    md = [
        "| | " + " | ".join(stages) + " |",
        "|---|" + "---|" * len(stages),
        "| **all** | " + " | ".join(_success_cell(by_stage[s].get("overall")) for s in stages) + " |",
    ]
    for group in ("kinds", "families"):
        names = sorted({n for s in stages for n in by_stage[s].get(group, {})})
        md += [f"| {n} | " + " | ".join(_success_cell(by_stage[s][group].get(n)) for s in stages) + " |" for n in names]
    change = _change_line(stages, by_stage, parents)
    return md + ([""] + [change] if change else [])


def agentic_section(results_path: Path, parents: dict[str, str] | None = None) -> list[str]:
    """Held-out agentic success of each evaluated stage side by side: overall, per kind and per family, each as
    successes/tasks with its 95% Wilson interval, and each stage's change from the stage it started from (`parents`,
    stage -> stage; else the one before it) paired over the tasks; then the same for the sampled episodes, when the
    eval sampled some."""
    entry = json.loads(results_path.read_text()).get("suites", {}).get("agentic", {})
    if entry.get("status") != "ok":
        return []
    by_stage = {s: v for s, v in (entry.get("by_stage") or {}).items() if v.get("status") == "ok"}
    if not by_stage and "summary" in entry:
        by_stage = {entry["source"]["stage"]: entry["summary"]}
    if not by_stage:
        return []
    order = ("pretrain", "sft", "align", "rl")  # the pipeline's (results.json keeps its keys sorted)
    stages = sorted(by_stage, key=lambda s: order.index(s) if s in order else len(order))
    md = [
        "## Agentic success on held-out tasks",
        "",
        f"Source: `{results_path}` (suite agentic: `by_stage`, logs `agentic_<stage>.jsonl`). Each cell: tasks whose "
        "hidden check passed / tasks (rate; 95% Wilson interval). Families are the held-out templates: a kind over "
        "one bug or function family that training never used. The **all** row weighs the kinds as the suite drew "
        "them: "
        + ", ".join(f"{k} {v['tasks']}" for k, v in sorted(by_stage[stages[0]].get("kinds", {}).items()))
        + ".",
        "",
        *_stage_table(stages, by_stage, parents or {}),
        "",
    ]
    sampled = {s: by_stage[s]["sampled"] for s in stages if "sampled" in by_stage[s]}
    if sampled:
        first = sampled[next(iter(sampled))]
        md += [
            "### Sampled episodes",
            "",
            f"Source: the same (`sampled` of each stage, logs `agentic_sampled_<stage>.jsonl`). Each task run "
            f"{first['overall']['samples']} times at temperature {first['temperature']} (the distribution RL "
            "samples and changes): episodes whose hidden check passed / episodes (rate; 95% interval clustered by "
            "task).",
            "",
            *_stage_table(list(sampled), sampled, parents or {}),
            "",
        ]
    return md


def evaluation_section(results_path: Path) -> list[str]:
    """Every suite's metrics as a table (value, count, interval, definition) under a line saying which checkpoint
    it measured and whether it ran; a results file of another shape is shown as its JSON."""
    data = json.loads(results_path.read_text())
    md = ["## Evaluation", "", f"Source: `{results_path}`", ""]
    suites = data.get("suites") if isinstance(data, dict) else None
    if not isinstance(suites, dict):
        return md + ["```json", json.dumps(data, indent=2)[:6000], "```", ""]
    for name, entry in suites.items():
        source = entry.get("source", {})
        where = ", ".join(f"{k} {source[k]}" for k in ("stage", "step", "seconds") if k in source)
        md += [f"### {name}", "", f"{entry.get('status', '?')}" + (f" ({where})" if where else "")]
        if entry.get("status") != "ok":
            md += ["", f"{entry.get('reason', '')}", ""]
            continue
        md += ["", "| metric | value | n | 95% interval | definition |", "|---|---|---|---|---|"]
        for metric, m in entry.get("metrics", {}).items():
            interval = "-".join(_fmt(x) for x in m["interval"]) if m.get("interval") else ""
            definition = str(m.get("definition", "")).replace("|", "\\|")  # a bar would end the cell
            md.append(f"| {metric} | {_fmt(m.get('value'))} | {m.get('n', '')} | {interval} | {definition} |")
        md.append("")
    return md


def rl_section(workspace: Workspace, out: Path, samples: int) -> list[str]:
    """The RL stage: reward and success per step (plotted, and averaged over each quarter of the run), the
    policy's entropy and KL, how episodes ended, and the last sampled episodes."""
    run = workspace.run_dir("rl")
    records = [r for r in read_jsonl(run / "metrics.jsonl") if "reward" in r]
    if not records:
        return []
    md = ["## rl", "", f"Source: `{run / 'metrics.jsonl'}` ({len(records)} step records)", ""]
    steps = curve(records, "reward")
    n = len(steps)
    quarters = [steps[i * n // 4 : (i + 1) * n // 4] for i in range(4) if steps[i * n // 4 : (i + 1) * n // 4]]
    success = dict(curve(records, "success"))
    md += ["| steps | mean reward | mean success |", "|---|---|---|"]
    for q in quarters:
        mean_reward = sum(v for _, v in q) / len(q)
        mean_success = sum(success.get(step, 0.0) for step, _ in q) / len(q)
        md.append(f"| {q[0][0]}-{q[-1][0]} | {mean_reward:.3f} | {mean_success:.3f} |")
    md.append("")
    for name, keys in (("reward", ["reward", "success"]), ("policy", ["entropy", "kl", "mean_steps"])):
        png = out / f"rl_{name}.png"
        if plot_curves(records, keys, png, f"rl: {', '.join(keys)}"):
            md += [f"![rl {name}]({png.name})", ""]
    last = records[-1]
    ended = ", ".join(f"{k.split('/')[1]} {last[k]:.2f}" for k in sorted(last) if k.startswith("stop/"))
    md += [f"Last step ({last['step']}): episodes ended by {ended}.", ""]
    episodes = read_jsonl(run / "samples.jsonl")[-samples:] if samples else []
    if episodes:
        md += ["Last sampled episodes (source: `samples.jsonl`):", "", "```"]
        md += [json.dumps(e, ensure_ascii=False)[:400] for e in episodes] + ["```", ""]
    return md


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

    md += rl_section(workspace, out, samples)
    results = workspace.run_dir("eval") / "results.json"
    if results.exists():
        md += agentic_section(results, starting_points(workspace))
        md += evaluation_section(results)
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
