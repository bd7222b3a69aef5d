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

    >>> suite = AgenticEval(n_tasks=14)
    >>> suite.run(suite.oracle()).metrics()["success_rate"]      # 1.0
    >>> suite.run(ReadOnlyPolicy()).metrics()["success_rate"]    # 0.0
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nanocode.agents.policy import OraclePolicy, Policy
from nanocode.agents.rollouts import run_episode, soul_violations
from nanocode.agents.tasks import RepoTasks, Task
from nanocode.agents.tools import build_tools
from nanocode.align.constitution import SoulConstitution
from nanocode.core.interfaces import Constitution
from nanocode.core.io import append_jsonl, write_text
from nanocode.core.kinds import EVAL_SUITES
from nanocode.core.progress import Progress


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% at z = 1.96): honest at 0/n and n/n, unlike p +- z*se."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def success_summary(successes: Sequence[bool]) -> dict[str, Any]:
    """{"tasks", "successes", "success_rate", "interval": [lo, hi]} of some outcomes."""
    n, k = len(successes), sum(bool(s) for s in successes)
    return {"tasks": n, "successes": k, "success_rate": k / n if n else 0.0, "interval": list(wilson_interval(k, n))}


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
