"""The agentic eval: held-out repository tasks, each run by a policy in a fresh sandbox with a step budget.

The tasks come from EVAL_TEMPLATES (`RepoTasks(templates="heldout")`): the same kinds as training (fix a bug,
implement a stub, rename across files, locate a definition) built from function families and bugs that no training
task uses. The first three need a change to the repository; locate needs a final answer naming the definition's
file:line, which only a search of the repository finds; so a policy that only reads and stops passes none. Locate
is the suite's first rung: it asks only to copy a name into a search and the location out of its result, the
skill a small model learns first, and success is reported per kind, so it never hides the others. Each task runs through
`rollouts.run_episode`: the real tools, a fresh workspace, commands contained by the sandbox (namespaces on by
default: the policy is untrusted), until the policy ends its turn or `max_steps` assistant messages are used.

Metrics: success rate (the hidden check) with its 95% Wilson interval, valid-tool-call rate (known tool, valid
arguments; over all calls), mean steps, SOUL violations per task (the constitution's programmatic checks) and the
rate of each, and success per kind and per family (template: a kind over one held-out bug or function family), each
with its count and interval: a few dozen tasks give intervals tens of points wide, and the report shows them.
`log_path` gets one JSON line per task with its outcome and the whole conversation.

`run_sampled` runs each task several times at a temperature instead (batched as RL samples): success over episodes
with an interval clustered by task, and each task's rate, so that two models' rates pair task by task.

    >>> suite = AgenticEval(n_tasks=14)
    >>> suite.run(suite.oracle()).metrics()["success_rate"]      # 1.0
    >>> suite.run(ReadOnlyPolicy()).metrics()["success_rate"]    # 0.0
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nanocode.agents.policy import OraclePolicy, Policy, system_prompt
from nanocode.agents.rl_episodes import Rollout, sample_episodes
from nanocode.agents.rollouts import run_episode, soul_violations
from nanocode.agents.tasks import RepoTasks, Task
from nanocode.agents.tools import build_tools
from nanocode.align.constitution import SoulConstitution
from nanocode.core.interfaces import Constitution
from nanocode.core.intervals import clustered_interval, wilson_interval
from nanocode.core.io import append_jsonl, write_text
from nanocode.core.kinds import EVAL_SUITES
from nanocode.core.progress import Progress
from nanocode.data.conversation import ConversationCodec
from nanocode.models.engine import Engine
from nanocode.models.sampling import SamplingParams


def success_summary(successes: Sequence[bool]) -> dict[str, Any]:
    """{"tasks", "successes", "success_rate", "interval": [lo, hi]} of some outcomes."""
    n, k = len(successes), sum(bool(s) for s in successes)
    return {"tasks": n, "successes": k, "success_rate": k / n if n else 0.0, "interval": list(wilson_interval(k, n))}


def sampled_summary(counts: Sequence[int], samples: int) -> dict[str, Any]:
    """{"tasks", "samples", "episodes", "successes", "success_rate", "interval", "solved"} of tasks run `samples`
    times each (`solved`: tasks with at least one success, pass@samples)."""
    n, k = len(counts), sum(counts)
    return {
        "tasks": n,
        "samples": samples,
        "episodes": n * samples,
        "successes": k,
        "success_rate": k / (n * samples) if n else 0.0,
        "interval": list(clustered_interval(counts, samples)),
        "solved": sum(c > 0 for c in counts),
    }


@dataclass
class TaskOutcome:
    task_id: str
    kind: str
    template: str
    success: bool
    detail: str  # what the hidden check said
    steps: int
    tool_calls: int
    valid_tool_calls: int
    stop_reason: str
    violations: dict[str, str] = field(default_factory=dict)  # principle -> reason


@dataclass
class AgenticResult:
    policy: str
    outcomes: list[TaskOutcome]

    def metrics(self) -> dict[str, Any]:
        n = len(self.outcomes)
        calls = sum(o.tool_calls for o in self.outcomes)
        by_kind: dict[str, list[bool]] = defaultdict(list)
        by_family: dict[str, list[bool]] = defaultdict(list)
        for o in self.outcomes:
            by_kind[o.kind].append(o.success)
            by_family[o.template].append(o.success)
        principles = sorted({p for o in self.outcomes for p in o.violations})
        return {
            "policy": self.policy,
            "tasks": n,
            "success_rate": sum(o.success for o in self.outcomes) / n if n else 0.0,
            "valid_tool_call_rate": sum(o.valid_tool_calls for o in self.outcomes) / calls if calls else None,
            "mean_steps": sum(o.steps for o in self.outcomes) / n if n else 0.0,
            "violations_per_task": sum(len(o.violations) for o in self.outcomes) / n if n else 0.0,
            "violation_rates": {p: sum(p in o.violations for o in self.outcomes) / n for p in principles},
            "success_interval": list(wilson_interval(sum(o.success for o in self.outcomes), n)),
            "success_by_kind": {k: sum(v) / len(v) for k, v in sorted(by_kind.items())},
            "kinds": {k: success_summary(v) for k, v in sorted(by_kind.items())},
            "families": {k: success_summary(v) for k, v in sorted(by_family.items())},
            "budget_exhausted": sum(o.stop_reason == "budget" for o in self.outcomes),
            "task_successes": {o.task_id: int(o.success) for o in self.outcomes},
        }


@EVAL_SUITES.register("agentic")
class AgenticEval:
    """Held-out repo tasks run by a policy in fresh sandboxes: success, valid tool calls, steps, SOUL violations."""

    def __init__(
        self,
        n_tasks: int = 28,
        seed: int = 0,
        max_steps: int = 30,
        timeout_s: float = 30.0,
        isolate: bool = True,
        constitution: Constitution | None = None,
        system_prompt: str | None = None,
        tasks_per_kind: Mapping[str, int] | None = None,
    ):
        self.n_tasks, self.seed, self.max_steps = n_tasks, seed, max_steps
        # Instead of n_tasks cycled evenly over the templates: so many tasks of each kind, e.g. enough of the kind
        # RL trains on that its interval can tell the stages apart.
        self.tasks_per_kind = dict(tasks_per_kind) if tasks_per_kind else None
        self.system_prompt = system_prompt  # None: nanocode's, listing the tools
        self.timeout_s, self.isolate = timeout_s, isolate
        self.constitution = constitution
        self._tasks: list[Task] | None = None

    def tasks(self) -> list[Task]:
        if self._tasks is None:
            tasks = RepoTasks(self.seed, templates="heldout")
            if self.tasks_per_kind is None:
                self._tasks = tasks.tasks(self.n_tasks)
            else:
                indices = [i for kind, n in self.tasks_per_kind.items() for i in tasks.kind_indices(kind, n)]
                self._tasks = [tasks.task(i) for i in sorted(indices)]
        return self._tasks

    def oracle(self) -> OraclePolicy:
        """The policy that replays every task's scripted solution (the suite's upper bound)."""
        return OraclePolicy(self.tasks())

    def run(self, policy: Policy, *, log_path: str | Path | None = None, progress: bool = False) -> AgenticResult:
        constitution = self.constitution or SoulConstitution()
        tools = build_tools()
        if log_path is not None:
            write_text(log_path, "")
        outcomes = []
        with Progress(len(self.tasks()), "agentic eval", unit="task", enabled=progress) as bar:
            for task in self.tasks():
                episode = run_episode(
                    task, policy, max_steps=self.max_steps, timeout_s=self.timeout_s, isolate=self.isolate,
                    tools=tools, system=self.system_prompt,
                )  # fmt: skip
                outcome = TaskOutcome(
                    task_id=task.id,
                    kind=task.kind,
                    template=task.template,
                    success=episode.check.passed,
                    detail=episode.check.detail,
                    steps=episode.steps,
                    tool_calls=episode.tool_calls,
                    valid_tool_calls=episode.valid_tool_calls,
                    stop_reason=episode.stop_reason,
                    violations=soul_violations(episode.messages, constitution),
                )
                outcomes.append(outcome)
                if log_path is not None:
                    append_jsonl(log_path, {**asdict(outcome), "policy": policy.name, "messages": episode.messages})
                bar.update(1, postfix=f"success {sum(o.success for o in outcomes)}/{len(outcomes)}")
        return AgenticResult(policy.name, outcomes)

    def run_sampled(
        self,
        engine: Engine,
        codec: ConversationCodec,
        *,
        samples: int,
        sampling: SamplingParams,
        max_new_tokens: int,
        kinds: Sequence[str] | None = None,
        rows: int = 32,
        log_path: str | Path | None = None,
        progress: bool = False,
    ) -> dict[str, Any]:
        """`samples` sampled episodes of each task (of `kinds`; default every kind), batched about `rows` episodes
        to a KV cache as RL samples them (rl_episodes.sample_episodes, seeded per batch and row): success over the
        episodes with its clustered interval, overall, per kind and per family; how episodes ended; and each task's
        success rate ("task_rates", for a paired comparison of two models on the same tasks).

        Greedy success counts only the one most likely episode of each task; RL moves probability towards the
        episodes that succeed, which this measures even where the greedy episode stays the same."""
        tasks = [t for t in self.tasks() if not kinds or t.kind in kinds]
        tools = build_tools()
        system = system_prompt(tools) if self.system_prompt is None else self.system_prompt
        per_batch = max(1, rows // samples)
        rollouts: list[Rollout] = []
        if log_path is not None:
            write_text(log_path, "")
        with Progress(len(tasks), "agentic eval (sampled)", unit="task", enabled=progress) as bar:
            for at in range(0, len(tasks), per_batch):
                batch = sample_episodes(
                    engine, codec, tasks[at : at + per_batch], samples=samples, tools=tools, system=system,
                    max_steps=self.max_steps, max_new_tokens=max_new_tokens, sampling=sampling, round_index=at,
                    timeout_s=self.timeout_s, isolate=self.isolate,
                )  # fmt: skip
                rollouts += batch
                for r in batch:
                    if log_path is not None:
                        record = {"task_id": r.task.id, "kind": r.task.kind, "template": r.task.template}
                        record |= {"sample": r.sample, "success": r.reward >= 1.0, "steps": r.steps}
                        append_jsonl(log_path, {**record, "stop_reason": r.stop_reason, "messages": r.messages})
                bar.update(len(batch) // samples, postfix=f"success {sum(r.reward >= 1.0 for r in rollouts)}")
        return {**summarise_sampled(tasks, rollouts, samples), "temperature": sampling.temperature}


def summarise_sampled(tasks: Sequence[Task], rollouts: Sequence[Rollout], samples: int) -> dict[str, Any]:
    """Sampled episodes' success (reward 1) overall, per kind and per family (`sampled_summary` each), how they ended,
    and each task's success rate."""
    counts = {t.id: 0 for t in tasks}
    stops: dict[str, int] = defaultdict(int)
    for r in rollouts:
        counts[r.task.id] += r.reward >= 1.0
        stops[r.stop_reason] += 1
    by_kind: dict[str, list[int]] = defaultdict(list)
    by_family: dict[str, list[int]] = defaultdict(list)
    for t in tasks:
        by_kind[t.kind].append(counts[t.id])
        by_family[t.template].append(counts[t.id])
    return {
        "overall": sampled_summary(list(counts.values()), samples),
        "kinds": {k: sampled_summary(v, samples) for k, v in sorted(by_kind.items())},
        "families": {k: sampled_summary(v, samples) for k, v in sorted(by_family.items())},
        "stops": dict(sorted(stops.items())),
        "task_rates": {t: c / samples for t, c in counts.items()},
    }
