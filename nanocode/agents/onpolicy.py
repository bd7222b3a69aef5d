"""On-policy constitutional pairs: the model does the task, the SOUL critiques it, the scripted solution revises it.

Constitutional AI's loop with the model being trained as the generator. For each execution-grounded repo task, a
policy (usually `ServedPolicy`: `nanocode serve` with the debug checkpoint, or any OpenAI-compatible model) works
the task through the real tools in the sandbox; the constitution's programmatic checks critique its rollout. When
the rollout breaks a named principle, the revision is the task's scripted solution replayed through the same tools,
which passes every check and the hidden check (asserted), and the two become a rejected/chosen pair naming the
principles the rejected side broke. A rollout that breaks no principle makes no pair (counted as `clean`): the
pair teaches the model away from what it actually does, which is why the rejected side comes from the model itself.

Output (one directory, resumable: tasks already in episodes.jsonl are skipped, a torn last line is dropped):

    episodes.jsonl   {"id", "task_id", "kind", "stop_reason", "check_passed", "violations", "messages"} per task
    pairs.jsonl      {"id", "task_id", "principle", "principles", "reason", "chosen", "rejected", ...}
                     (the layout of the repo-task pairs: `jsonl_preferences` and `nanocode align` read it)
    summary.json     over every episode on disk: episodes, pairs, clean, solved, how often each principle was
                     broken; and this run's skipped_done and policy_failed (with the reasons)

A policy that fails (the server unreachable after its retries) is counted per task, never fatal; the task is tried
again on the next run.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nanocode.agents.policy import Policy
from nanocode.agents.rollouts import replay, run_episode, soul_violations
from nanocode.agents.tasks import RepoTasks, Task
from nanocode.agents.tools import build_tools
from nanocode.align.constitution import SoulConstitution
from nanocode.align.synth import JsonlStore
from nanocode.core.errors import DataError, NanocodeError
from nanocode.core.interfaces import Constitution
from nanocode.core.io import write_json, write_text
from nanocode.core.progress import Progress


def revision(task: Task, constitution: Constitution, **episode_kw: Any) -> list:
    """The scripted solution through the real tools: the chosen side. It must solve the task and keep the SOUL."""
    good = replay(task, task.solution, **episode_kw)
    broken = soul_violations(good.messages, constitution)
    if not good.check.passed or broken:
        raise DataError(f"{task.id}: the scripted revision fails (check: {good.check.detail}; broken: {broken})")
    return good.messages


def onpolicy_pairs(
    policy: Policy,
    out_dir: str | Path,
    *,
    count: int = 16,
    seed: int = 0,
    kinds: Sequence[str] | None = None,
    constitution: Constitution | None = None,
    max_steps: int = 8,
    workers: int = 1,
    timeout_s: float = 30.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run `policy` on tasks 0..count-1 of RepoTasks(seed, kinds) and write the pairs (see the module docstring)."""
    constitution = SoulConstitution() if constitution is None else constitution
    store = JsonlStore(out_dir)
    done = {r["task_id"] for r in store.read("episodes.jsonl")}
    # a pair whose episode line never made it (killed in between) is dropped here and made again below
    kept = [p for p in store.read("pairs.jsonl") if p["task_id"] in done]
    write_text(store.dir / "pairs.jsonl", "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in kept))
    generator = RepoTasks(seed, kinds=kinds)
    tasks = [generator.task(i) for i in range(count)]
    todo = [t for t in tasks if t.id not in done]
    tools = build_tools()
    counts: Counter = Counter(skipped_done=len(tasks) - len(todo))
    failures: Counter = Counter()
    lock = threading.Lock()
    episode_kw = {"timeout_s": timeout_s, "isolate": True, "tools": tools}

    def work(task: Task) -> None:
        try:
            episode = run_episode(task, policy, max_steps=max_steps, **episode_kw)
        except NanocodeError as e:  # TeacherError: the server failed after its retries
            with lock:
                counts["policy_failed"] += 1
                failures[str(e)[:160]] += 1
            return
        violations = soul_violations(episode.messages, constitution)
        record = {
            "id": task.id,
            "task_id": task.id,
            "kind": task.kind,
            "stop_reason": episode.stop_reason,
            "check_passed": episode.check.passed,
            "violations": violations,
            "messages": episode.messages,
        }
        if violations:
            chosen = revision(task, constitution, **episode_kw)
            names = sorted(violations)
            store.append(
                "pairs.jsonl",
                {
                    "id": f"{task.id}/onpolicy",
                    "task_id": task.id,
                    "kind": task.kind,
                    "template": task.template,
                    "principle": names[0],
                    "principles": names,
                    "reason": violations[names[0]],
                    "rejected_check_passed": episode.check.passed,
                    "chosen": {"messages": chosen},
                    "rejected": {"messages": episode.messages},
                },
            )
        store.append("episodes.jsonl", record)  # last: a task counts as done once its pair is on disk
        with lock:
            counts["episodes"] += 1
            counts["pairs" if violations else "clean"] += 1
            counts["solved"] += episode.check.passed

    with Progress(len(todo), "on-policy rollouts", unit="task", enabled=progress) as bar:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for _ in pool.map(work, todo):
                bar.update(1, postfix=f"pairs {counts['pairs']} clean {counts['clean']}")
    episodes = store.read("episodes.jsonl")  # totals over the whole directory, earlier runs included
    totals = {
        "episodes": len(episodes),
        "pairs": sum(bool(e["violations"]) for e in episodes),
        "clean": sum(not e["violations"] for e in episodes),
        "solved": sum(e["check_passed"] for e in episodes),
    }
    this_run = {"skipped_done": counts["skipped_done"], "policy_failed": counts["policy_failed"]}
    broken = Counter(name for e in episodes for name in e["violations"])
    summary = {
        "counts": totals | this_run,
        "broken_principles": dict(sorted(broken.items())),
        "policy_failures": dict(failures),
    }
    write_json(Path(out_dir) / "summary.json", summary)
    return summary
