"""Copy drills: pretraining documents that can only be predicted by copying from the context.

Each document is lines of random identifiers (drawn from the standard library's sources, so every word is a familiar
token sequence), each line written two or three times. Nothing but the earlier copy predicts a repeat, so the loss
on repeats falls only once the model has induction heads: the mechanism an agent needs to put the file name of a
request into its tool call. Natural text at the debug scale does not grow them (benchmarks/sft_conditioning_results.md);
a copy-heavy mix does.

With `forms`, each copy of a line is written in a surface form drawn from `forms` (FORMS: plain words, `backticked`,
"quoted", paths, calls). A BPE tokenizer splits a word differently after a space, a backtick or a quote (`min` +
`utes` in "`minutes_share`", ` min` + `utes` in "def minutes_share("), so an agent that copies the name from a
request into a tool call copies across token boundaries, which identical repeats never practise.

Built like the embedded corpus (same shards, manifest and validation split), deterministic for a seed.
"""

from __future__ import annotations

import collections
import functools
import random
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from nanocode.core.errors import ConfigError, DataError
from nanocode.core.interfaces import DataSource
from nanocode.core.kinds import DATA_MIXTURES, DATA_SOURCES
from nanocode.data.embedded import EmbeddedSource, stdlib_files
from nanocode.data.mixture import WeightedMixture, check_weights

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")

# How a copy of a line writes its words: each puts other characters before a word, so its first token differs.
FORMS: dict[str, Callable[[Sequence[str]], str]] = {
    "plain": lambda words: " ".join(words),
    "backticks": lambda words: " ".join(f"`{w}`" for w in words),
    "quoted": lambda words: ", ".join(f'"{w}"' for w in words),
    "paths": lambda words: " ".join(f"{w}.py" for w in words),
    "calls": lambda words: "; ".join(f"def {w}(" for w in words),
}


@functools.lru_cache(maxsize=4)
def identifier_counts(root: Path, max_files: int) -> collections.Counter[str]:
    """How often each identifier occurs in the first `max_files` stdlib sources."""
    counts: collections.Counter[str] = collections.Counter()
    for name in stdlib_files(root)[:max_files]:
        counts.update(IDENTIFIER.findall((root / name).read_text(encoding="utf-8", errors="replace")))
    return counts


@functools.lru_cache(maxsize=4)
def vocabulary(root: Path, max_files: int, size: int | None) -> tuple[str, ...]:
    """The words drills are made of, sorted: every identifier, or the `size` most frequent. Frequent ones are
    mostly a single token each, so a line is close to a row of random tokens, which only copying predicts: the
    purest signal for induction."""
    counts = identifier_counts(root, max_files)
    if size is None:
        return tuple(sorted(counts))
    return tuple(sorted(w for w, _ in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:size]))


@DATA_SOURCES.register("copy_drills")
class CopyDrills(EmbeddedSource):
    """`count` documents of repeated lines of random identifiers (about `doc_chars` characters each)."""

    name = "copy_drills"

    def __init__(
        self,
        count: int = 10_000,
        doc_chars: int = 1500,
        words_per_line: tuple[int, int] = (8, 30),
        repeats: tuple[int, int] = (2, 3),
        vocab_files: int = 200,
        vocab_size: int | None = None,
        forms: Sequence[str] = ("plain",),
        **kwargs,
    ):
        super().__init__(**kwargs)
        if count < 2 or doc_chars < 1 or not 1 <= words_per_line[0] <= words_per_line[1]:
            raise DataError(
                f"{self.name}: need count >= 2, doc_chars >= 1 and words_per_line a range within [1, ...), got "
                f"count={count}, doc_chars={doc_chars}, words_per_line={words_per_line}"
            )
        if not 2 <= repeats[0] <= repeats[1]:
            raise DataError(f"{self.name}: repeats must be a range within [2, ...), got {repeats}")
        if vocab_size is not None and vocab_size < 2:
            raise DataError(f"{self.name}: vocab_size must be at least 2 words, got {vocab_size}")
        unknown = [f for f in forms if f not in FORMS]
        if not forms or unknown:
            raise DataError(f"{self.name}: forms must name some of {', '.join(FORMS)}; got {list(forms)}")
        self.count, self.doc_chars, self.vocab_files, self.vocab_size = count, doc_chars, vocab_files, vocab_size
        self.forms = tuple(forms)
        self.words_per_line, self.repeats = tuple(words_per_line), tuple(repeats)

    def params(self) -> dict:
        return {
            **super().params(),
            "count": self.count,
            "doc_chars": self.doc_chars,
            "words_per_line": list(self.words_per_line),
            "repeats": list(self.repeats),
            "vocab_files": self.vocab_files,
            "vocab_size": self.vocab_size,
            # only when set, so shards built before forms existed stay valid
            **({"forms": list(self.forms)} if self.forms != ("plain",) else {}),
        }

    def keys(self) -> list[str]:
        return [f"drill:{i:07d}" for i in range(self.count)]

    def document(self, key: str) -> str | None:
        vocab = vocabulary(self.root, self.vocab_files, self.vocab_size)
        if not vocab:
            raise DataError(f"{self.root}: no Python sources to draw the copy drills' words from")
        rng = random.Random(f"{self.seed}:{key}")  # str seeds hash with sha512: the same drill on every machine
        lines: list[str] = []
        chars = 0
        while chars < self.doc_chars:
            words = [rng.choice(vocab) for _ in range(rng.randint(*self.words_per_line))]
            for _ in range(rng.randint(*self.repeats)):
                # one form: no draw, so plain drills stay the ones built before forms existed
                line = FORMS[self.forms[0] if len(self.forms) == 1 else rng.choice(self.forms)](words)
                lines.append(line)
                chars += len(line) + 1
        return "\n".join(lines)


@DATA_MIXTURES.register("with_drills")
class WithDrills(WeightedMixture):
    """A weighted mix with a copy-drill source that the tokenizer's sample (horizon None) leaves out: the tokenizer
    learns its merges from natural text, as the run without drills does, and the drills are made of its words.

    With `then`, a two-phase curriculum: `weights` for the first `switch_at` of the run (drill-heavy, until the
    model can copy), `then` for the rest (mostly natural text, so its language recovers; a few drills keep the
    copying)."""

    def __init__(
        self,
        sources: Mapping[str, DataSource],
        weights: Mapping[str, float],
        drills: str = "copy",
        then: Mapping[str, float] | None = None,
        switch_at: float = 0.5,
    ):
        super().__init__(sources, weights)
        if drills not in self._sources:
            raise ConfigError(f"{type(self).__name__}: no source named {drills!r} (sources: {', '.join(sources)})")
        self.drills = drills
        self._then = check_weights(then, self._sources, type(self).__name__) if then is not None else None
        if not 0.0 <= switch_at <= 1.0:
            raise ConfigError(f"{type(self).__name__}: switch_at is a fraction of the run in [0, 1], got {switch_at}")
        self.switch_at = switch_at
        for phase in (self._weights, self._then or {}):
            if phase and not any(w for name, w in phase.items() if name != drills):
                raise ConfigError(
                    f"{type(self).__name__}: every source but the drills has weight 0: nothing to tokenize"
                )

    def weights_at(self, step: int, horizon: int | None = None) -> dict[str, float]:
        if horizon is None:  # the tokenizer's sample: natural text only
            return {**self._weights, self.drills: 0.0}
        if self._then is not None and step >= round(self.switch_at * horizon):  # 0.67 x 1500 is 1005.0000000000001
            return dict(self._then)
        return dict(self._weights)
