"""The tokenizer training stage: sample text from the data mixture, learn the BPE merges, save the tokenizer.

As in nanocode, text is drawn a row group (~1024 documents) at a time: each row group comes from a source picked with
probability proportional to the mixture's weights at step 0 (web 0.8 / code 0.2), every document is cropped to
`doc_cap` characters (so a few huge files cannot dominate the merge statistics), and sampling stops at `max_chars`.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from nanocode.core.errors import ConfigError, DataError
from nanocode.core.interfaces import SPECIAL_TOKENS, DataMixture, DataSource, Tokenizer
from nanocode.core.kinds import TOKENIZERS
from nanocode.core.progress import Progress
from nanocode.core.registry import register_config
from nanocode.core.workspace import Workspace
from nanocode.data import parquet


def train_row_groups(source: DataSource) -> Iterator[list[str]]:
    """The documents of a source's train shards, one row group at a time, in order."""
    for path in source.shard_paths("train"):
        for index in range(parquet.num_row_groups(path)):
            yield parquet.read_row_group(path, index)


def sample_documents(
    mixture: DataMixture, max_chars: int, doc_cap: int, seed: int = 0, chars_by_source: Counter | None = None
) -> Iterator[str]:
    """Documents (each cropped to `doc_cap` chars) drawn row group by row group from the mixture's train shards,
    until `max_chars` characters. A source that runs out drops out of the draw (text is never repeated: repeats
    would skew the merge counts). `chars_by_source`, if given, is filled with the characters taken per source."""
    weights = {name: w for name, w in mixture.weights_at(0).items() if w > 0}
    unknown = set(weights) - set(mixture.sources)
    if unknown or not weights:
        raise ConfigError(
            f"{type(mixture).__name__}: weights_at(0) must give a positive weight to some of its "
            f"sources ({', '.join(mixture.sources)}); got {dict(mixture.weights_at(0))}"
        )
    readers = {name: train_row_groups(mixture.sources[name]) for name in weights}
    for name in readers:  # fail now, in one line, if a source's shards are missing
        mixture.sources[name].shard_paths("train")
    rng = random.Random(seed)
    taken = 0
    while taken < max_chars and weights:
        name = rng.choices(list(weights), weights=list(weights.values()))[0]
        docs = next(readers[name], None)
        if docs is None:  # this source is exhausted
            del weights[name]
            continue
        for doc in docs:
            doc = doc[: min(doc_cap, max_chars - taken)]  # the last document is cropped to end exactly at max_chars
            taken += len(doc)
            if chars_by_source is not None:
                chars_by_source[name] += len(doc)
            yield doc
            if taken >= max_chars:
                return


@dataclass(frozen=True, kw_only=True)
class TokenizerTraining:
    """The `tok-train` stage: train a registered tokenizer on `max_chars` of the mixture and save it.

    The tokenizer name, the mixture and the vocabulary size (the model's) are the experiment's (FROM_EXPERIMENT);
    built on its own in Python, the stage takes them as arguments."""

    FROM_EXPERIMENT: ClassVar[tuple[str, ...]] = ("tokenizer", "mixture", "vocab_size")

    tokenizer: str = "bpe"
    vocab_size: int | None = None
    mixture: DataMixture | None = field(default=None, repr=False)
    max_chars: int
    doc_cap: int = 10_000
    seed: int = 0

    def __post_init__(self):
        if self.vocab_size is not None and self.vocab_size < 256 + len(SPECIAL_TOKENS):
            raise ConfigError(
                f"TokenizerTraining.vocab_size = {self.vocab_size}: needs at least 256 bytes + "
                f"{len(SPECIAL_TOKENS)} special tokens"
            )
        for name in ("max_chars", "doc_cap"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"TokenizerTraining.{name} = {getattr(self, name)}: must be positive")
        if self.mixture is not None and not isinstance(self.mixture, DataMixture):
            raise ConfigError(f"TokenizerTraining.mixture: expected a DataMixture, got {type(self.mixture).__name__}")
        cls = TOKENIZERS.get(self.tokenizer)  # unknown names raise with the registered ones listed
        if not hasattr(cls, "train"):
            raise ConfigError(f"TokenizerTraining.tokenizer = {self.tokenizer!r}: {cls.__name__} has no train()")

    def require_experiment(self) -> None:
        missing = [name for name in self.FROM_EXPERIMENT if getattr(self, name) is None]
        if missing:
            raise ConfigError(
                f"TokenizerTraining.{missing[0]} is not set: the stage gets {', '.join(self.FROM_EXPERIMENT)} from "
                "its Experiment (nanocode.cli.experiment), or as arguments when built in Python"
            )

    def texts(self, *, progress: bool = True, chars_by_source: Counter | None = None) -> Iterator[str]:
        """The training documents, with a progress bar over characters."""
        with Progress(self.max_chars, "tok-train text", unit="char", enabled=progress) as bar:
            for doc in sample_documents(self.mixture, self.max_chars, self.doc_cap, self.seed, chars_by_source):
                bar.update(len(doc))
                yield doc
        if progress:
            print(
                f"tok-train: learning {self.vocab_size} ids (merges are computed now, no progress shown)",
                file=sys.stderr,
            )

    def run(self, workspace: Workspace, *, progress: bool = True) -> Tokenizer:
        """Train, save into `workspace.tokenizer_dir`, print a one-line summary; returns the tokenizer."""
        self.require_experiment()
        start = time.monotonic()
        chars = Counter()
        tokenizer = TOKENIZERS.get(self.tokenizer).train(
            self.texts(progress=progress, chars_by_source=chars), self.vocab_size
        )
        if not chars:
            raise DataError(f"{type(self.mixture).__name__}: the mixture's train shards gave no text")
        tokenizer.save(workspace.tokenizer_dir)
        total = sum(chars.values())
        mix = ", ".join(f"{name} {n / total:.1%}" for name, n in sorted(chars.items()))
        print(
            f"tok-train: {tokenizer!r} from {total:,} chars ({mix}) in {time.monotonic() - start:.1f}s "
            f"-> {workspace.tokenizer_dir}",
            file=sys.stderr,
        )
        return tokenizer


register_config(TokenizerTraining)
