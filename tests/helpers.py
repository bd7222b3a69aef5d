"""Small real components shared by tests (no mocks): a BPE tokenizer trained on stdlib text, cached per session."""

from __future__ import annotations

import functools
import sysconfig
from pathlib import Path


def stdlib_texts(max_chars: int = 400_000) -> list[str]:
    """Python sources from the interpreter's standard library (code) — deterministic order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out, total = [], 0
    for path in sorted(root.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        out.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return out


@functools.cache
def small_tokenizer(vocab_size: int = 512):
    from nanocode.data.tokenizer import BPETokenizer

    return BPETokenizer.train(stdlib_texts(), vocab_size)


def load_experiment(files, params=(), plugins=()):
    """The Experiment the CLI builds from these gin files and bindings (gin's global config replaced)."""
    import gin

    from nanocode.cli.experiment import load

    gin.clear_config()
    return load(list(files), list(params), list(plugins))


STAGE_FIELDS = ("tokenizer_training", "pretraining", "synth", "sft", "align", "rl", "eval", "report")


def experiment_gin(*includes: str, keep: tuple[str, ...] = ()) -> list[str]:
    """The lines of a gin experiment: the skeleton, then `includes` (paths under experiments/), every stage but
    those in `keep` left out (and the pretraining data with them when no stage reads it)."""
    lines = ["include 'experiments/base/experiment.gin'", *(f"include 'experiments/{i}'" for i in includes)]
    lines += [f"Experiment.{stage} = None" for stage in STAGE_FIELDS if stage not in keep]
    if not {"tokenizer_training", "pretraining"} & set(keep):
        lines.append("Experiment.data = None")
    return lines
