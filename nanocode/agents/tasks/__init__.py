"""Execution-grounded agentic tasks: real small repositories, a request, a hidden check and a scripted solution.

    >>> task = RepoTasks(seed=0).task(7)              # training templates; templates="heldout" for the eval's
    >>> task.request, task.solution.steps[0].tool, task.check

`rollouts.py` replays solutions (and their SOUL-breaking variants) through the real tools; `eval_suite.py` runs
policies on held-out tasks.
"""

from nanocode.agents.tasks.base import AnswerCheck, CheckResult, CommandCheck, Script, Step, Task
from nanocode.agents.tasks.generator import TEMPLATE_SETS, RepoTasks
from nanocode.agents.tasks.templates import EVAL_TEMPLATES, TRAIN_TEMPLATES
from nanocode.agents.tasks.variants import PRINCIPLES, variant, variants
from nanocode.agents.tasks.workspace import open_sandbox, run_check, task_workspace

__all__ = [
    "EVAL_TEMPLATES",
    "PRINCIPLES",
    "TEMPLATE_SETS",
    "TRAIN_TEMPLATES",
    "AnswerCheck",
    "CheckResult",
    "CommandCheck",
    "RepoTasks",
    "Script",
    "Step",
    "Task",
    "open_sandbox",
    "run_check",
    "task_workspace",
    "variant",
    "variants",
]
