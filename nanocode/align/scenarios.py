"""Scenario seeds for synthetic agentic data: task types x codebase domains x complexity modifiers (nanocode's lists).

A teacher turns a sampled (task types, domains, modifier) triple into concrete user requests; `scenario_seeds` makes
the triples deterministically from a seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TASK_TYPES = (
    "bug fix with a stack trace",
    "performance optimization",
    "refactor",
    "rename a symbol across files",
    "dead code analysis",
    "add a feature",
    "add tests",
    "fix failing tests",
    "update docs",
    "config changes",
    "dependency migration",
    "add an API endpoint",
    "security audit fix",
    "resolve git conflicts",
    "codebase understanding",
    "compare two implementations",
    "remove a feature",
    "devops: deployment scaling",
    "devops: CI pipeline",
)
CODEBASE_DOMAINS = (
    "a FastAPI web service",
    "LLM training code in JAX or PyTorch",
    "a CLI tool",
    "data pipelines",
    "a testing framework",
    "configuration management",
    "a distributed system",
    "attention implementations",
    "LLM evaluation suites",
    "ML optimizers",
    "hyperparameter sweeps",
    "computer vision",
    "data science notebooks",
    "tokenizers",
    "a Rust crate",
    "reinforcement learning",
)
COMPLEXITY_MODIFIERS = (
    "the user rejects the first attempt with a technical reason",
    "a tool returns an error the agent must recover from",
    "the request is ambiguous and needs one clarifying question mid-task",
    "the change crosses a module boundary",
    "the user pivots to a related goal midway",
)


@dataclass(frozen=True)
class ScenarioSeed:
    id: str
    task_types: tuple[str, ...]
    domains: tuple[str, ...]
    modifier: str  # "" for none (half the seeds, as nanocode pads the list 1:1 with empty strings)


def scenario_seeds(n: int, seed: int = 0, per_seed: int = 5) -> list[ScenarioSeed]:
    rng = random.Random(seed)
    modifiers = COMPLEXITY_MODIFIERS + ("",) * len(COMPLEXITY_MODIFIERS)
    return [
        ScenarioSeed(
            id=f"seed-{seed}-{i:05d}",
            task_types=tuple(rng.sample(TASK_TYPES, per_seed)),
            domains=tuple(rng.sample(CODEBASE_DOMAINS, per_seed)),
            modifier=rng.choice(modifiers),
        )
        for i in range(n)
    ]


SCENARIO_SCHEMA = {
    "type": "object",
    "properties": {
        "scenarios": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "prompt": {"type": "string"}},
                "required": ["id", "prompt"],
            },
        }
    },
    "required": ["scenarios"],
}


def scenario_request(seed: ScenarioSeed, count: int = 20) -> list[dict]:
    """The chat messages asking a teacher for `count` realistic user requests from one seed."""
    text = (
        f"Write {count} realistic requests a developer might type to a terminal coding agent working in their "
        f"repository. Mix casual and professional tones. Each request names its codebase context.\n"
        f"Task types to draw from: {', '.join(seed.task_types)}.\n"
        f"Codebase domains to draw from: {', '.join(seed.domains)}.\n"
        'Answer as JSON: {"scenarios": [{"id": "...", "prompt": "..."}]}'
    )
    return [{"role": "user", "content": text}]
