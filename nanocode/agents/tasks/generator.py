"""The task generator: task i of a seed is a pure function of (templates, seed, i).

`RepoTasks(seed).task(i)` draws its template, domain and everything else from `random.Random("<set>:<seed>:<i>")`,
so any task can be rebuilt alone, and the first n tasks of a seed are the same whatever count is asked for (a
larger run extends a smaller one). Training tasks draw a kind by TRAIN_KIND_WEIGHTS, then a template of that kind;
the held-out set cycles through its templates so a small eval covers every one.

Domains (the names of a repository, its module, records and fields): "varied" draws each from the product of the
word lists in vocab.py, "fixed" picks one of the 24 hand-written DOMAINS. Training defaults to varied, so that the
names in a request are new and the model must copy them; the held-out set defaults to fixed, so eval results stay
comparable across versions of the training data.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from nanocode.agents.tasks.base import Task
from nanocode.agents.tasks.templates import EVAL_TEMPLATES, TRAIN_KIND_WEIGHTS, TRAIN_TEMPLATES, TaskTemplate
from nanocode.agents.tasks.vocab import DOMAINS, varied_domain
from nanocode.core.errors import ConfigError
from nanocode.core.kinds import TASK_GENERATORS

TEMPLATE_SETS: dict[str, dict[str, TaskTemplate]] = {"train": TRAIN_TEMPLATES, "heldout": EVAL_TEMPLATES}
DEFAULT_DOMAINS = {"train": "varied", "heldout": "fixed"}


@TASK_GENERATORS.register("repo_tasks")
class RepoTasks:
    """Small real Python repositories with a bug to fix, a stub to implement, a rename, or a definition to find."""

    def __init__(
        self, seed: int = 0, templates: str = "train", kinds: Sequence[str] | None = None, domains: str | None = None
    ):
        if templates not in TEMPLATE_SETS:
            raise ConfigError(f"repo_tasks: templates must be one of {sorted(TEMPLATE_SETS)}, got {templates!r}")
        self.domains = domains or DEFAULT_DOMAINS[templates]
        if self.domains not in ("varied", "fixed"):
            raise ConfigError(f"repo_tasks: domains must be 'varied' or 'fixed', got {domains!r}")
        self.seed = seed
        self.set_name = templates
        self.templates = TEMPLATE_SETS[templates]
        known = sorted({t.kind for t in self.templates.values()})
        self.kinds = list(kinds) if kinds is not None else known
        unknown = [k for k in self.kinds if k not in known]
        if unknown or not self.kinds:
            raise ConfigError(f"repo_tasks: unknown task kinds {unknown} for the {templates} set (known: {known})")

    def _template(self, rng: random.Random, index: int) -> TaskTemplate:
        eligible = [t for t in self.templates.values() if t.kind in self.kinds]
        if self.set_name == "heldout":
            return eligible[index % len(eligible)]
        kinds = sorted({t.kind for t in eligible})
        kind = rng.choices(kinds, weights=[TRAIN_KIND_WEIGHTS.get(k, 1.0) for k in kinds])[0]
        return rng.choice([t for t in eligible if t.kind == kind])

    def task(self, index: int, template: str | None = None) -> Task:
        """Task `index` of this seed; `template` forces the template (by name) instead of drawing it."""
        rng = random.Random(f"{self.set_name}:{self.seed}:{index}")
        drawn = self._template(rng, index)
        if template is not None and template not in self.templates:
            raise ConfigError(f"repo_tasks: no template {template!r} in the {self.set_name} set")
        chosen = self.templates[template] if template is not None else drawn
        domain = varied_domain(rng) if self.domains == "varied" else rng.choice(DOMAINS)
        built = chosen.build(rng, domain)
        return Task(
            id=f"{self.set_name}-s{self.seed}-{index:05d}",
            kind=chosen.kind,
            template=chosen.name,
            repo=domain.repo,
            files=dict(built.repo.files),
            request=built.request,
            check=built.check,
            solution=built.solution,
            facts={"domain": domain.repo, **built.facts},
        )

    def tasks(self, count: int, start: int = 0) -> list[Task]:
        return [self.task(i) for i in range(start, start + count)]

    def kind_indices(self, kind: str, count: int) -> list[int]:
        """The first `count` task indices of this held-out set whose template is of `kind`: the same tasks an even
        suite of that many of the kind would hold, so a larger sample of one kind extends the even one."""
        if self.set_name != "heldout":
            raise ConfigError("repo_tasks: kind_indices needs the held-out set (training draws its templates)")
        eligible = [t for t in self.templates.values() if t.kind in self.kinds]
        positions = [i for i, t in enumerate(eligible) if t.kind == kind]
        if not positions:
            raise ConfigError(f"repo_tasks: no {kind!r} template in the held-out set (kinds: {self.kinds})")
        return [cycle * len(eligible) + p for cycle in range(count) for p in positions][:count]
