"""The DCLM CORE metric, computed as nanochat and nanocode do, so numbers compare with their leaderboards.

The eval bundle holds `core.yaml` (the tasks), `eval_data/*.jsonl` and `eval_meta_data.csv` (each task's random
baseline, in percent). Task types:
- multiple_choice `{"query", "choices", "gold"}`: prompts share a prefix; pick the choice with the lowest MEAN
  cross-entropy over its continuation tokens.
- schema `{"context_options", "continuation", "gold"}`: contexts differ, the continuation is shared; pick the context
  under which the continuation has the lowest mean cross-entropy.
- language_modeling `{"context", "continuation"}`: correct iff greedy argmax reproduces every continuation token.
Few-shot examples are drawn with `random.Random(1234 + index)` excluding the item; data is shuffled with
`random.Random(1337)` before `max_per_task`. centered = (acc - 0.01 rb) / (1 - 0.01 rb); CORE = mean of centered.
"""

from __future__ import annotations

import csv
import json
import random
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from nanocode.core.errors import DataError
from nanocode.core.io import atomic_dir
from nanocode.core.workspace import base_dir

BUNDLE_URL = "https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip"
GPT2_XL_CORE = 0.256525  # nanochat's reference: GPT-2 1.5B

# Scores a batch of token sequences: returns, per sequence, (per-position cross-entropy of the next token,
# per-position argmax prediction), each of length len(seq) - 1.
Scorer = Callable[[Sequence[Sequence[int]]], list[tuple[np.ndarray, np.ndarray]]]


@dataclass(frozen=True)
class Task:
    label: str
    task_type: str  # multiple_choice | schema | language_modeling
    dataset_uri: str
    num_fewshot: int
    delimiter: str = " "


# ------------------------------------------------------------------------------------------------ the bundle
TASK_TYPES = ("multiple_choice", "schema", "language_modeling")


def parse_core_yaml(text: str, where: str = "core.yaml") -> list[Task]:
    """The `icl_tasks` list of DCLM's core.yaml. A real YAML loader, because DCLM writes items as a bare `-` with the
    keys below and delimiters as double-quoted escapes ("\\nAnswer: "). Errors are one line naming `where`."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise DataError(f"{where}{at}: not valid YAML: {problem}") from e
    items = doc.get("icl_tasks") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise DataError(f"{where}: no icl_tasks list")
    tasks = []
    for i, t in enumerate(items):
        if not isinstance(t, dict):
            raise DataError(f"{where}: icl_tasks[{i}] is not a mapping")
        name = f"{where}: icl_tasks[{i}]" + (f" {t['label']!r}" if isinstance(t.get("label"), str) else "")
        for key in ("label", "icl_task_type", "dataset_uri"):
            if t.get(key) in (None, ""):
                raise DataError(f"{name}: no {key}")
            if not isinstance(t[key], str):  # e.g. an unquoted `yes` or `2024`
                raise DataError(f"{name}: {key} {t[key]!r} is not a string (quote it)")
        if t["icl_task_type"] not in TASK_TYPES:
            raise DataError(f"{name}: unknown icl_task_type {t['icl_task_type']!r} (one of {', '.join(TASK_TYPES)})")
        shots = t.get("num_fewshot", 0)
        shots = shots[0] if isinstance(shots, list) and shots else shots  # DCLM lists them, e.g. [10]; we run the first
        if type(shots) is not int or shots < 0:  # `type`, not isinstance: a YAML `true` is no count
            raise DataError(f"{name}: num_fewshot {t['num_fewshot']!r} is not a count or a list of counts")
        delimiter = t.get("continuation_delimiter", " ")
        if not isinstance(delimiter, str):
            raise DataError(f"{name}: continuation_delimiter {delimiter!r} is not a string")
        tasks.append(Task(t["label"], t["icl_task_type"], t["dataset_uri"], shots, delimiter))
    return tasks


def random_baselines(path: Path) -> dict[str, float]:
    with open(path, newline="", encoding="utf-8") as f:
        return {row["Eval Task"]: float(row["Random baseline"]) for row in csv.DictReader(f)}


def bundle_dir() -> Path:
    return base_dir() / "eval_bundle"


def download_bundle(url: str = BUNDLE_URL, dest: Path | None = None) -> Path:
    """Download and unpack the eval bundle (resumable, validated, unpacked atomically)."""
    from nanocode.data.download import download_file  # evals sit above data

    dest = dest or bundle_dir()
    if (dest / "core.yaml").exists():
        return dest
    archive = dest.parent / "eval_bundle.zip"

    def validate(path: Path) -> None:
        with zipfile.ZipFile(path) as z:
            if z.testzip() is not None or not any(n.endswith("core.yaml") for n in z.namelist()):
                raise DataError(f"{path}: not an eval bundle (no core.yaml)")

    download_file(url, archive, validate=validate)
    with atomic_dir(dest) as tmp, zipfile.ZipFile(archive) as z:
        z.extractall(tmp)
        inner = next(tmp.rglob("core.yaml")).parent
        if inner != tmp:  # the zip holds a top-level eval_bundle/ folder
            for p in inner.iterdir():
                p.rename(tmp / p.name)
    return dest


# ------------------------------------------------------------------------------------------------ prompts
def _fewshot(data: list[dict], index: int, k: int) -> list[dict]:
    if k <= 0:
        return []
    rng = random.Random(1234 + index)
    return [data[i] for i in rng.sample([i for i in range(len(data)) if i != index], k)]


def render_prompts(task: Task, data: list[dict], index: int) -> list[str]:
    item, shots, d = data[index], _fewshot(data, index, task.num_fewshot), task.delimiter
    if task.task_type == "multiple_choice":
        head = "".join(f"{e['query']}{d}{e['choices'][e['gold']]}\n\n" for e in shots)
        return [f"{head}{item['query']}{d}{choice}" for choice in item["choices"]]
    if task.task_type == "schema":
        head = "".join(f"{e['context_options'][e['gold']]}{d}{e['continuation']}\n\n" for e in shots)
        return [f"{head}{ctx}{d}{item['continuation']}" for ctx in item["context_options"]]
    if task.task_type == "language_modeling":
        head = "".join(f"{e['context'].strip()}{d}{e['continuation']}\n\n" for e in shots)
        without = f"{head}{item['context'].strip()}{d}".strip()  # stripped so it is a clean token prefix
        return [without, f"{head}{item['context'].strip()}{d}{item['continuation']}"]
    raise DataError(f"task {task.label}: unknown icl_task_type {task.task_type!r}")


def continuation_spans(task_type: str, sequences: list[list[int]]) -> list[tuple[int, int]]:
    """[start, end) of the scored tokens in each sequence."""
    if task_type == "multiple_choice":  # choices differ after a common prefix
        prefix = 0
        while all(len(s) > prefix for s in sequences) and len({s[prefix] for s in sequences}) == 1:
            prefix += 1
        return [(prefix, len(s)) for s in sequences]
    if task_type == "schema":  # contexts differ before a common suffix
        suffix = 0
        while all(len(s) > suffix for s in sequences) and len({s[-1 - suffix] for s in sequences}) == 1:
            suffix += 1
        return [(len(s) - suffix, len(s)) for s in sequences]
    without, with_ = sequences
    if with_[: len(without)] != without:
        raise DataError("language_modeling: the prompt without continuation is not a token prefix of the prompt with")
    return [(len(without), len(with_))]


def score_item(
    task: Task, data: list[dict], index: int, encode: Callable[[str], list[int]], bos: int, scorer: Scorer
) -> bool:
    prompts = render_prompts(task, data, index)
    sequences = [[bos, *encode(p)] for p in prompts]
    spans = continuation_spans(task.task_type, sequences)
    if task.task_type == "language_modeling":
        (start, end), seq = spans[0], sequences[1]
        _, argmax = scorer([seq])[0]
        return bool(np.array_equal(argmax[start - 1 : end - 1], np.asarray(seq[start:end])))
    results = scorer(sequences)
    mean_ce = [float(np.mean(ce[s - 1 : e - 1])) for (ce, _), (s, e) in zip(results, spans)]
    return int(np.argmin(mean_ce)) == data[index]["gold"]


def centered(accuracy: float, random_baseline_percent: float) -> float:
    rb = 0.01 * random_baseline_percent
    return (accuracy - rb) / (1.0 - rb)


def core_metric(accuracies: dict[str, float], baselines: dict[str, float]) -> tuple[float, dict[str, float]]:
    """(CORE, centered accuracy per task): the mean over tasks of each task's centered accuracy."""
    per_task = {label: centered(acc, baselines[label]) for label, acc in accuracies.items()}
    return float(np.mean(list(per_task.values()))), per_task


def evaluate(
    bundle: Path,
    encode: Callable[[str], list[int]],
    bos: int,
    scorer: Scorer,
    *,
    max_per_task: int = -1,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """CORE over every task of a bundle: {'core', 'centered': {...}, 'accuracy': {...}}."""
    tasks = parse_core_yaml((bundle / "core.yaml").read_text(encoding="utf-8"), str(bundle / "core.yaml"))
    baselines = random_baselines(bundle / "eval_meta_data.csv")
    accuracy = {}
    for task in tasks:
        path = bundle / "eval_data" / task.dataset_uri
        data = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        random.Random(1337).shuffle(data)
        if max_per_task > 0:
            data = data[:max_per_task]
        correct = 0
        for i in range(len(data)):
            correct += score_item(task, data, i, encode, bos, scorer)
            if progress:
                progress(task.label, i + 1, len(data))
        accuracy[task.label] = correct / len(data)
    missing = set(accuracy) - set(baselines)
    if missing:
        raise DataError(f"{bundle / 'eval_meta_data.csv'}: no random baseline for {', '.join(sorted(missing))}")
    core, per_task = core_metric(accuracy, baselines)
    return {"core": core, "centered": per_task, "accuracy": accuracy}
