"""Speed and shape of the embedded agentic data: `build_agentic_data` (repo tasks replayed through the real tools).

Measures, for `--count` tasks with `--workers` threads (scripted commands without namespaces, the default):
- wall time, tasks/s and conversations/s (SFT conversations + both sides of each pair);
- CPU seconds per task (this process and every command it ran), so the wall time on otherwise idle cores can be
  told apart from the load of a shared machine: idle-machine wall >= CPU seconds / cores;
- the same for one task replayed with sandbox namespaces on (the eval's setting);
- the conversations' length in characters and steps, by kind (the model's context has to hold them).

    .venv/bin/python benchmarks/agentic_rollouts.py          # writes benchmarks/agentic_rollouts_results.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from nanocode.agents.rollouts import build_agentic_data, replay
from nanocode.agents.tasks import RepoTasks

RESULTS = Path(__file__).with_name("agentic_rollouts_results.md")


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as out:
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        manifest = build_agentic_data(out, count=args.count, workers=args.workers, progress=False)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        records = []
        for split in ("train", "test"):
            records += [json.loads(x) for x in (Path(out) / f"sft_{split}.jsonl").read_text().splitlines()]
    load_after = os.getloadavg()[0]
    pairs = sum(manifest["pairs"].values())
    conversations = len(records) + 2 * pairs

    task = RepoTasks(seed=0, kinds=["fix_bug"]).task(0)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    replay(task, task.solution, isolate=True)
    iso_wall, iso_cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    replay(task, task.solution, isolate=False)
    plain_wall, plain_cpu = time.perf_counter() - t0, cpu_seconds() - cpu0

    by_kind: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r in records:
        chars = sum(len(m.get("content") or "") + len(json.dumps(m.get("tool_call") or "")) for m in r["messages"])
        by_kind[r["kind"]].append((chars, sum(m["role"] == "assistant" for m in r["messages"])))

    lines = [
        "# Agentic rollouts benchmark",
        "",
        f"`.venv/bin/python benchmarks/agentic_rollouts.py --count {args.count} --workers {args.workers}`, "
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"load average {load_before:.1f} before / {load_after:.1f} after (a shared machine: wall times include "
        "other people's work; CPU seconds do not).",
        "",
        "| what | value |",
        "|---|---|",
        f"| tasks | {args.count} ({manifest['conversations']}) |",
        f"| pairs | {pairs} ({manifest['principles']}) |",
        f"| wall time | {wall:.1f} s ({args.count / wall:.1f} tasks/s, {conversations / wall:.1f} conversations/s) |",
        f"| CPU seconds (process + commands) | {cpu:.1f} s = {cpu / args.count * 1000:.0f} ms per task |",
        f"| idle-machine estimate on {args.workers} cores | >= {cpu / args.workers:.1f} s |",
        f"| one fix_bug replay, namespaces on | {iso_wall * 1000:.0f} ms wall, {iso_cpu * 1000:.0f} ms CPU |",
        f"| one fix_bug replay, namespaces off | {plain_wall * 1000:.0f} ms wall, {plain_cpu * 1000:.0f} ms CPU |",
        "",
        "Conversation size by kind (characters of message text and tool calls, system prompt included; assistant",
        "turns):",
        "",
        "| kind | conversations | chars median | chars max | assistant turns median |",
        "|---|---|---|---|---|",
    ]
    for kind, rows in sorted(by_kind.items()):
        chars = [c for c, _ in rows]
        turns = [t for _, t in rows]
        lines.append(
            f"| {kind} | {len(rows)} | {statistics.median(chars):.0f} | {max(chars)} | {statistics.median(turns):.0f} |"
        )
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
