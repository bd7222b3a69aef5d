"""Confidence intervals of success rates: of independent outcomes (Wilson), of several samples per task (clustered),
and of the change between two models run on the same tasks (paired)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def wilson_interval(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% at z = 1.96): honest at 0/n and n/n, unlike p +- z*se."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def clustered_interval(counts: Sequence[int], samples: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% interval of a success rate over `samples` episodes of each task, `counts[i]` of task i succeeding.

    Episodes of one task are not independent (an easy task succeeds in most of its samples), so the Wilson interval
    is taken at the effective number of episodes: p(1-p) over the squared standard error of the mean of per-task
    rates, kept between the number of tasks (samples that all agree) and of episodes (samples as good as fresh
    tasks); at 0 or all successes, the number of tasks. With one sample per task it is the plain Wilson interval."""
    n = len(counts)
    if n == 0:
        return 0.0, 1.0
    episodes = n * samples
    p = sum(counts) / episodes
    rates = [c / samples for c in counts]
    var = sum((r - p) ** 2 for r in rates) / (n - 1) if n > 1 else 0.0
    if var > 0:
        effective = p * (1 - p) / (var / n)
    else:  # every task at the same rate: as good as fresh tasks, unless all pass or all fail (no sign either way)
        effective = float(episodes) if 0 < p < 1 else float(n)
    effective = min(max(effective, float(n)), float(episodes))
    return wilson_interval(p * effective, effective, z)


def paired_difference(before: Mapping[str, float], after: Mapping[str, float], z: float = 1.96) -> dict[str, Any]:
    """How a success rate changed between two models run on the same tasks (task id -> that task's success rate):
    the mean of per-task differences with its 95% normal interval (paired: a task's difficulty cancels), and how
    many tasks got better or worse. Tasks only one side ran are left out."""
    common = [t for t in before if t in after]
    diffs = [after[t] - before[t] for t in common]
    n = len(diffs)
    mean = sum(diffs) / n if n else 0.0
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    half = z * math.sqrt(var / n) if n else 0.0
    return {
        "tasks": n,
        "difference": mean,
        "interval": [mean - half, mean + half],
        "better": sum(d > 0 for d in diffs),
        "worse": sum(d < 0 for d in diffs),
    }
