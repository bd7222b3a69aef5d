"""The abstract interfaces that components implement and meet through.

Higher layers (trainers, align, agents) depend on these classes, never on a concrete component: a tokenizer is
whatever `registry.get("tokenizer", name)` returns, and it is a `Tokenizer`. Array-facing methods carry jaxtyping
annotations; the shapes use b=batch, t=time, v=vocab, n=sequences.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

# The 11 special tokens of nanocode, in id order (id = number of mergeable ranks + index).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|bos|>",
    "<|user_start|>",
    "<|user_end|>",
    "<|assistant_start|>",
    "<|assistant_end|>",
    "<|tool_call_start|>",
    "<|tool_arg|>",
    "<|tool_val|>",
    "<|tool_call_end|>",
    "<|tool_result_start|>",
    "<|tool_result_end|>",
)


# ---------------------------------------------------------------------------------------------------- tokenizer
class Tokenizer(abc.ABC):
    """Text <-> token ids, with the special tokens above appended after the mergeable ranks."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """All ids, special tokens included."""

    @abc.abstractmethod
    def encode(self, text: str, *, bos: bool = False, allowed_special: Iterable[str] = ()) -> list[int]:
        """Encode one text. Special-token strings in `text` are plain text unless named in `allowed_special`."""

    @abc.abstractmethod
    def encode_batch(self, texts: Sequence[str], *, bos: bool = False) -> list[list[int]]:
        """Encode many texts on all cores (no special tokens recognised)."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

    @abc.abstractmethod
    def special_id(self, token: str) -> int: ...

    @abc.abstractmethod
    def token_bytes(self) -> np.ndarray:
        """int32[vocab_size]: UTF-8 bytes of each token, 0 for special tokens (for bits per byte)."""

    @abc.abstractmethod
    def save(self, directory: str | Path) -> None: ...

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: str | Path) -> Tokenizer: ...

    @property
    def bos_id(self) -> int:
        return self.special_id("<|bos|>")


# ---------------------------------------------------------------------------------------------------- data
class DataSource(abc.ABC):
    """Documents in parquet shards `shard_{i:05d}.parquet` (column `text`); the last shard is validation."""

    name: str

    @abc.abstractmethod
    def prepare(self, *, progress: bool = True) -> None:
        """Make the shards exist locally (download, or build from embedded text). Idempotent and resumable."""

    @abc.abstractmethod
    def shard_paths(self, split: str) -> list[Path]:
        """The local shard files of `split` ('train' or 'val'), in order; raises if none are there."""


class DataMixture(abc.ABC):
    """Named sources and their sampling weights, which may change with the training step (curricula)."""

    @property
    @abc.abstractmethod
    def sources(self) -> Mapping[str, DataSource]: ...

    @abc.abstractmethod
    def weights_at(self, step: int, horizon: int | None = None) -> Mapping[str, float]:
        """Relative sampling weights of each source for the batch of `step` (need not sum to 1). `horizon` is the
        run's number of steps (None where there is no run: the tokenizer's sample, a loader on its own)."""


# ---------------------------------------------------------------------------------------------------- metrics
class MetricsWriter(abc.ABC):
    """A destination for a training stage's metrics (a JSONL file, TensorBoard events, an experiment tracker).

    Used on process 0 only: `open` once the run knows where it starts (`start_step` > 0: resumed from that
    checkpoint; its records after `start_step` replace those an interrupted attempt wrote), `write` per record (a
    dict with "step" and plain numbers), `close` at the end. An instance may be opened again after `close`.
    """

    @abc.abstractmethod
    def open(self, run_dir: Path, *, stage: str, config: str, start_step: int) -> None:
        """Start writing for `stage` into (or beside) `run_dir`; `config` is the resolved gin config, logged once."""

    @abc.abstractmethod
    def write(self, record: Mapping[str, Any]) -> None: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release what `open` took (files, a tracker's run)."""


# ---------------------------------------------------------------------------------------------------- model
class LanguageModel(nnx.Module):
    """A causal language model over token ids (Flax NNX). Registered model classes subclass this.

    Construction is `cls(config, rngs=nnx.Rngs(seed))` where `config` is the class's `Config` dataclass.
    (nnx.Module has its own metaclass, so this is not an ABC: unimplemented methods raise.)
    """

    Config: type

    def __call__(self, tokens: Int[Array, "b t"]) -> Float[Array, "b t v"]:
        raise NotImplementedError

    def param_counts(self) -> dict[str, int]:
        """Parameter counts by group ('embedding', 'blocks', 'head', 'total')."""
        raise NotImplementedError

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward)."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------- optimizer
class OptimizerFactory(abc.ABC):
    """Builds the optax transformation for a model's parameters and a run's horizon."""

    @abc.abstractmethod
    def build(self, params: Any, total_steps: int) -> Any:
        """`params` is the (possibly abstract) parameter pytree; returns an `optax.GradientTransformation`."""


# ---------------------------------------------------------------------------------------------------- mesh
class MeshFactory(abc.ABC):
    """Builds the device mesh and carries the logical-axis -> mesh-axis rules."""

    @abc.abstractmethod
    def make(self, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh: ...

    @property
    @abc.abstractmethod
    def rules(self) -> tuple[tuple[str, Any], ...]:
        """Logical axis rules resolved against the mesh (rules naming an absent mesh axis dropped)."""


# ---------------------------------------------------------------------------------------------------- constitution
Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class Principle:
    """One rule of the constitution: text for an LLM critic, and optionally a programmatic check.

    `check(messages)` returns None when the conversation honours the principle, else a one-line reason.
    """

    name: str
    text: str
    check: Callable[[Messages], str | None] | None = None


class Constitution(abc.ABC):
    """A written constitution (SOUL.md) parsed into named principles."""

    @abc.abstractmethod
    def principles(self) -> list[Principle]: ...

    @property
    @abc.abstractmethod
    def text(self) -> str:
        """The whole constitution, for critic and teacher prompts."""

    def violations(self, messages: Messages) -> list[tuple[str, str]]:
        """(principle name, reason) for every programmatic check the conversation fails."""
        out = []
        for p in self.principles():
            reason = p.check(messages) if p.check else None
            if reason:
                out.append((p.name, reason))
        return out


# ---------------------------------------------------------------------------------------------------- preference
@jax.tree_util.register_dataclass
@dataclass
class SequenceLogps:
    """Per-sequence log-probabilities, summed over completion tokens only."""

    policy: Float[Array, " n"]
    counts: Float[Array, " n"]  # completion tokens per sequence (for length-normalised objectives)
    reference: Float[Array, " n"] | None = None  # None when the objective declares needs_reference = False


@jax.tree_util.register_dataclass
@dataclass
class PreferenceBatch:
    """Paired data: `chosen` and `rejected` aligned row by row. Unpaired data: `completions` with `desirable`.

    `mismatched` (unpaired only, when the objective declares needs_mismatched_kl) holds the log-probs of each prompt
    paired with another example's completion, for KTO's KL baseline.
    """

    chosen: SequenceLogps | None = None
    rejected: SequenceLogps | None = None
    completions: SequenceLogps | None = None
    desirable: Bool[Array, " n"] | None = None
    mismatched: SequenceLogps | None = None


class PreferenceObjective(abc.ABC):
    """A preference-optimisation loss. Declares what it needs; the trainer computes only that."""

    needs_reference: bool = True
    paired: bool = True  # False: unpaired completions with desirable/undesirable labels (KTO)
    needs_mismatched_kl: bool = False  # KTO: log-probs of mismatched (prompt, completion) pairs

    @abc.abstractmethod
    def __call__(self, batch: PreferenceBatch) -> tuple[Float[Array, " n"], dict[str, Array]]:
        """Per-example losses (the trainer averages them) and metrics (scalars or per-example arrays)."""


# ---------------------------------------------------------------------------------------------------- reinforcement
@jax.tree_util.register_dataclass
@dataclass
class RLBatch:
    """Sampled episodes as per-token arrays over the targets of each row (row t = the token after position t).

    `mask` is 1 exactly on the tokens the policy sampled itself (its replies), 0 on the prompt, the tool results, the
    harness's closing tokens and the padding; every loss and metric is taken over those tokens only.
    """

    logps: Float[Array, "n t"]  # the policy's fp32 log-prob of each target (gradients flow through it)
    mask: Float[Array, "n t"]
    advantages: Float[Array, " n"]  # one per episode, from `RLObjective.advantages`
    ref_logps: Float[Array, "n t"] | None = None  # the frozen reference's, when the objective declares needs_reference


class RLObjective(abc.ABC):
    """A policy-gradient loss over on-policy episodes, grouped by task (several samples of each)."""

    needs_reference: bool = False  # a frozen reference's token log-probs in the batch (a KL penalty)

    @abc.abstractmethod
    def advantages(self, rewards: np.ndarray) -> np.ndarray:
        """float[groups, samples] rewards -> float[groups, samples] advantages (host-side, before the step)."""

    @abc.abstractmethod
    def __call__(self, batch: RLBatch) -> tuple[Float[Array, "n t"], dict[str, Array]]:
        """Per-token losses and per-token metrics; the trainer averages both over every masked token of the batch
        (token-level normalisation: a long reply weighs by its tokens, not as one sequence)."""
