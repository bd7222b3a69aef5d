"""Preference data: paired (chosen, rejected) and unpaired (completion, desirable) conversations, and their batches.

Records are JSONL: paired `{"prompt"?, "chosen": {"messages"}, "rejected": {"messages"}}` as nanocode's
`smohammadi/nanocode-*-preference` sets, unpaired `{"messages", "desirable": bool}`. A pair where either side has no
assistant message with content is dropped and counted (nanocode found this helps). Paired batches are laid out
[chosen; rejected] on the batch axis so one forward pass scores both; each conversation is its own row (per-sequence
log-probs need unpacked rows), padded with BOS under mask 0 and truncated to T+1 as nanocode's renderer does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nanocode.core.errors import DataError
from nanocode.core.kinds import PREFERENCE_DATASETS
from nanocode.data import hub
from nanocode.data.conversation import ConversationCodec, ConversationError, Message, validate_messages
from nanocode.data.sft import HubJsonlPair, jsonl_records


@dataclass
class Pair:
    chosen: list[Message]
    rejected: list[Message]


@dataclass
class Unpaired:
    messages: list[Message]
    desirable: bool


@dataclass
class ReadStats:
    records: int = 0
    dropped_no_assistant_content: int = 0


def _has_assistant_content(messages: list[Message]) -> bool:
    return any(m.get("role") == "assistant" and (m.get("content") or "").strip() for m in messages)


def _conversation(rec: dict, key: str) -> list[Message]:
    side = rec.get(key)
    if not isinstance(side, dict) or "messages" not in side:
        raise ConversationError(f'"{key}" must be an object with "messages"')
    try:
        validate_messages(side["messages"])
    except ConversationError as e:
        raise ConversationError(f"{key}: {e}") from None
    return side["messages"]


def _preference(rec: object) -> Pair | Unpaired:
    """A record's pair or unpaired completion; a wrong shape or type is a ConversationError."""
    if not isinstance(rec, dict):
        raise ConversationError(f"expected an object, got {type(rec).__name__}")
    if "chosen" in rec or "rejected" in rec:
        return Pair(_conversation(rec, "chosen"), _conversation(rec, "rejected"))
    if "messages" not in rec or "desirable" not in rec:
        raise ConversationError('expected "chosen" and "rejected", or "messages" and "desirable"')
    desirable = rec["desirable"]
    if not isinstance(desirable, bool):  # "false" is a non-empty string: bool() would read it as true
        raise ConversationError(f'"desirable" must be true or false, got {desirable!r}')
    validate_messages(rec["messages"])
    return Unpaired(rec["messages"], desirable)


def read_preferences(path: str | Path, stats: ReadStats | None = None) -> list[Pair | Unpaired]:
    path, stats = Path(path), stats if stats is not None else ReadStats()
    if not path.is_file():
        raise DataError(f"{path}: preference file missing")
    out: list[Pair | Unpaired] = []
    for lineno, rec in jsonl_records(path, "not a preference record"):
        try:
            item = _preference(rec)
        except ConversationError as e:
            raise DataError(f"{path}:{lineno}: not a preference record ({e})") from None
        sides = [item.chosen, item.rejected] if isinstance(item, Pair) else [item.messages]
        stats.records += 1
        if not all(_has_assistant_content(s) for s in sides):
            stats.dropped_no_assistant_content += 1
            continue
        out.append(item)
    if not out:
        raise DataError(f"{path}: no usable preference records ({stats.dropped_no_assistant_content} dropped)")
    return out


def to_unpaired(items: list[Pair | Unpaired]) -> list[Unpaired]:
    """Pairs become one desirable and one undesirable completion each (KTO trains on paired data this way)."""
    out = []
    for it in items:
        out += [Unpaired(it.chosen, True), Unpaired(it.rejected, False)] if isinstance(it, Pair) else [it]
    return out


@PREFERENCE_DATASETS.register("jsonl_preferences")
class JSONLPreferences:
    """Local preference JSONL; without a test file a deterministic `test_fraction` is held out."""

    def __init__(self, train: str, test: str | None = None, test_fraction: float = 0.05, seed: int = 0):
        self.train, self.test, self.test_fraction, self.seed = train, test, test_fraction, seed
        self.stats = ReadStats()

    def prepare(self) -> None:
        pass

    def items(self, split: str) -> list[Pair | Unpaired]:
        if self.test is not None:
            return read_preferences(self.train if split == "train" else self.test, self.stats)
        items = read_preferences(self.train, self.stats)
        order = list(range(len(items)))
        random.Random(self.seed).shuffle(order)
        held = set(order[: max(1, int(round(len(items) * self.test_fraction)))]) if len(items) > 1 else set()
        return [x for i, x in enumerate(items) if (i in held) == (split == "test")]


@PREFERENCE_DATASETS.register("hub_preferences")
class HubPreferences(HubJsonlPair, JSONLPreferences):
    """Preference JSONL in the Hugging Face layout, downloaded into the workspace (see HubJsonlPair)."""

    check_file = staticmethod(read_preferences)

    def __init__(
        self,
        repo: str,
        train_file: str,
        test_file: str,
        base_url: str | None = None,
        directory: str | None = None,
        revision: str = hub.DEFAULT_REVISION,
    ):
        JSONLPreferences.__init__(self, *self._locate(repo, train_file, test_file, base_url, directory, revision))


@PREFERENCE_DATASETS.register("nanocode_tulu_selfoss_evol_preference")
def nanocode_tulu_selfoss_evol_preference(
    base_url: str | None = None, directory: str | None = None, revision: str = hub.DEFAULT_REVISION
) -> HubPreferences:
    """nanocode's short-rollout pairs: chosen = SOUL-restyled, rejected = original."""
    return HubPreferences(
        "smohammadi/nanocode-tulu-selfoss-evol-preference",
        "all.pref_train.jsonl",
        "all.pref_test.jsonl",
        base_url,
        directory,
        revision,
    )


@PREFERENCE_DATASETS.register("nanocode_long_context_preference")
def nanocode_long_context_preference(
    base_url: str | None = None, directory: str | None = None, revision: str = hub.DEFAULT_REVISION
) -> HubPreferences:
    """nanocode's long-context pairs: rejected = first failing attempt, chosen = the revision that passed."""
    return HubPreferences(
        "smohammadi/nanocode-long-context-preference",
        "preference_rollouts_train.jsonl",
        "preference_rollouts_test.jsonl",
        base_url,
        directory,
        revision,
    )


def split_prompt(messages: list[Message]) -> tuple[list[Message], list[Message]]:
    """(prompt, completion): the prompt runs through the first user turn (a system message included)."""
    first_user = next(i for i, m in enumerate(messages) if m.get("role") == "user")
    return list(messages[: first_user + 1]), list(messages[first_user + 1 :])


def render_row(codec: ConversationCodec, messages: list[Message], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """One conversation as a padded row of seq_len + 1 tokens and its loss mask."""
    ids, mask = codec.render(messages, max_tokens=seq_len + 1, overflow="truncate")
    pad = seq_len + 1 - len(ids)
    return (np.asarray(ids + [codec.ids["bos"]] * pad, np.int32), np.asarray(mask + [0] * pad, np.int32))


@dataclass
class PreferenceBatcher:
    """Batches of preference data, resumable by (epoch, cursor) state.

    Paired: {"tokens": [2B, T+1], "mask": [2B, T+1]} with chosen rows first. Unpaired (KTO): {"tokens", "mask",
    "desirable": [B], "mismatched_tokens", "mismatched_mask"} where the mismatched row pairs example i's first user
    turn with example i-1's completion (the batch-shifted KL estimate of KTO).
    """

    items: list[Pair | Unpaired]
    codec: ConversationCodec
    batch_size: int
    seq_len: int
    paired: bool = True
    seed: int = 0
    cycle: bool = True
    state_: dict = field(default_factory=lambda: {"epoch": 0, "cursor": 0})

    def __post_init__(self):
        if self.paired and not all(isinstance(x, Pair) for x in self.items):
            raise DataError("paired objective but the data has unpaired records")
        if not self.paired:
            self.items = to_unpaired(self.items)
        if len(self.items) < self.batch_size:
            raise DataError(f"{len(self.items)} preference examples, fewer than one batch of {self.batch_size}")

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.items)))
        if self.cycle:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def state(self) -> dict:
        return dict(self.state_)

    def restore(self, state: dict) -> None:
        self.state_ = {"epoch": int(state["epoch"]), "cursor": int(state["cursor"])}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        while True:
            order = self._order(self.state_["epoch"])
            while self.state_["cursor"] + self.batch_size <= len(order):
                c = self.state_["cursor"]
                chunk = [self.items[i] for i in order[c : c + self.batch_size]]
                self.state_["cursor"] = c + self.batch_size
                yield self._batch(chunk)
            if not self.cycle:
                return
            self.state_ = {"epoch": self.state_["epoch"] + 1, "cursor": 0}

    def _batch(self, chunk: list) -> dict[str, np.ndarray]:
        if self.paired:
            rows = [render_row(self.codec, p.chosen, self.seq_len) for p in chunk]
            rows += [render_row(self.codec, p.rejected, self.seq_len) for p in chunk]
            return {"tokens": np.stack([r[0] for r in rows]), "mask": np.stack([r[1] for r in rows])}
        rows = [render_row(self.codec, u.messages, self.seq_len) for u in chunk]
        mismatched = [
            render_row(
                self.codec, split_prompt(chunk[i].messages)[0] + split_prompt(chunk[i - 1].messages)[1], self.seq_len
            )
            for i in range(len(chunk))
        ]
        return {
            "tokens": np.stack([r[0] for r in rows]),
            "mask": np.stack([r[1] for r in rows]),
            "desirable": np.asarray([u.desirable for u in chunk]),
            "mismatched_tokens": np.stack([r[0] for r in mismatched]),
            "mismatched_mask": np.stack([r[1] for r in mismatched]),
        }
