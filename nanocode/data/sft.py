"""Conversation datasets for agentic SFT, their mixture, and best-fit packing of whole conversations.

Datasets are JSONL files of `{"messages": [...]}` (nanocode's format), local or in the Hugging Face layout of
nanocode's published sets (downloaded with the same rules as pretraining shards: resume, retries, validation,
atomic rename). A mixture lists datasets with a number of epochs each (listing a set twice = two epochs, as
nanocode's TaskMixture). Packing puts whole conversations into rows of T+1 tokens, largest-first into the space
left; the remainder of a row is padding with loss mask 0. A conversation longer than T+1 is dropped (and counted):
cut conversations would teach the model to stop mid-turn.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nanocode.core.errors import DataError
from nanocode.core.kinds import SFT_DATASETS
from nanocode.core.workspace import Workspace
from nanocode.data import hub
from nanocode.data.conversation import ConversationCodec, ConversationError, Message, validate_messages
from nanocode.data.download import download_file, one_line


def hub_file_url(template: str | None, repo: str, file: str, revision: str = hub.DEFAULT_REVISION) -> str:
    """`file` of dataset `repo` at `revision`: on the Hub, or where a mirror's template ({repo}, {file} and
    optionally {revision}) says."""
    if template is None:
        return hub.dataset_url(repo, file, revision)
    return template.format(repo=repo, file=file, revision=revision)


def download_hub_files(
    directory: Path, repo: str, files: Sequence[str], base_url: str | None, revision: str, validate
) -> None:
    """The missing `files` of `repo` at `revision` into `directory`, recording the revision (and the commit the Hub
    resolved it to) beside them; files of another revision already there are refused, not mixed in."""
    missing = [file for file in files if not (directory / file).is_file()]
    if not missing:
        return
    if len(missing) < len(files):
        hub.check_revision(directory, repo, revision)
    for file in missing:
        meta: dict = {}
        download_file(hub_file_url(base_url, repo, file, revision), directory / file, validate=validate, meta=meta)
        hub.record_revision(directory, repo, revision, [meta.get("commit")])


class HubJsonlPair:
    """A train and a test JSONL file of a Hub dataset repo, downloaded into the workspace on `prepare()` (the Hub's
    `resolve/<revision>/<file>` layout, or `base_url`, a template with {repo}, {file} and {revision}, for a mirror
    of another). Mixed into a dataset class, which sets `check_file` (what makes a downloaded file valid)."""

    check_file: Any

    def _locate(
        self, repo: str, train_file: str, test_file: str, base_url: str | None, directory: str | None, revision: str
    ) -> tuple[str, str]:
        """Remember where the files come from and go; the two local paths."""
        self.repo, self.train_file, self.test_file, self.base_url = repo, train_file, test_file, base_url
        self.revision = revision
        self.directory = Path(directory) if directory else Workspace().sft_data_dir(repo.split("/")[-1])
        return str(self.directory / train_file), str(self.directory / test_file)

    def prepare(self) -> None:
        files = (self.train_file, self.test_file)
        download_hub_files(self.directory, self.repo, files, self.base_url, self.revision, type(self).check_file)


def read_jsonl(path: str | Path) -> list[list[Message]]:
    """Conversations from a JSONL file; a bad line is a one-line DataError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: conversation file missing")
    out = []
    for lineno, record in jsonl_records(path, "not a conversation"):
        try:
            if not isinstance(record, dict) or "messages" not in record:
                raise ConversationError('expected an object with "messages"')
            validate_messages(record["messages"])
        except ConversationError as e:
            raise DataError(f"{path}:{lineno}: not a conversation ({e})") from None
        out.append(record["messages"])
    if not out:
        raise DataError(f"{path}: no conversations")
    return out


def jsonl_records(path: Path, what: str = "not a record") -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of every non-blank line; bad UTF-8 or JSON is a one-line DataError at file:line
    saying `what`."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    yield lineno, json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise DataError(f"{path}:{lineno}: {what} ({type(e).__name__}: {one_line(e)})") from None
            except RecursionError:
                raise DataError(f"{path}:{lineno}: {what} (JSON nested too deeply)") from None


def validate_jsonl(path: Path) -> None:
    read_jsonl(path)


class ConversationDataset:
    """Conversations split into 'train' and 'test'."""

    name = "conversations"

    def prepare(self) -> None:
        """Make the files exist locally (download when remote)."""

    def conversations(self, split: str) -> list[list[Message]]:
        raise NotImplementedError


@SFT_DATASETS.register("jsonl_conversations")
class JSONLConversations(ConversationDataset):
    """Local JSONL conversations; without a test file, a deterministic `test_fraction` is held out."""

    def __init__(self, train: str, test: str | None = None, test_fraction: float = 0.05, seed: int = 0):
        self.train, self.test, self.test_fraction, self.seed = train, test, test_fraction, seed
        self.name = Path(train).stem

    def conversations(self, split: str) -> list[list[Message]]:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if self.test is not None:
            return read_jsonl(self.train if split == "train" else self.test)
        convs = read_jsonl(self.train)
        order = list(range(len(convs)))
        random.Random(self.seed).shuffle(order)
        n_test = max(1, int(round(len(convs) * self.test_fraction))) if len(convs) > 1 else 0
        held = set(order[:n_test])
        return [c for i, c in enumerate(convs) if (i in held) == (split == "test")]


@SFT_DATASETS.register("hub_conversations")
class HubConversations(HubJsonlPair, JSONLConversations):
    """A conversation dataset in the Hugging Face layout, downloaded to the workspace ($HF_ENDPOINT and $HF_TOKEN
    honoured; see HubJsonlPair)."""

    check_file = staticmethod(validate_jsonl)

    def __init__(
        self,
        repo: str,
        train_file: str,
        test_file: str,
        base_url: str | None = None,
        directory: str | None = None,
        revision: str = hub.DEFAULT_REVISION,
    ):
        JSONLConversations.__init__(self, *self._locate(repo, train_file, test_file, base_url, directory, revision))
        self.name = repo.split("/")[-1]


@SFT_DATASETS.register("nanocode_tulu_selfoss_evol")
def nanocode_tulu_selfoss_evol(
    base_url: str | None = None, directory: str | None = None, revision: str = hub.DEFAULT_REVISION
) -> HubConversations:
    """nanocode's ~120K short tool-call rollouts restyled to the SOUL (smohammadi/nanocode-tulu-selfoss-evol)."""
    return HubConversations(
        "smohammadi/nanocode-tulu-selfoss-evol", "all_train.jsonl", "all_test.jsonl", base_url, directory, revision
    )


@SFT_DATASETS.register("nanocode_long_context")
def nanocode_long_context(
    base_url: str | None = None, directory: str | None = None, revision: str = hub.DEFAULT_REVISION
) -> HubConversations:
    """nanocode's ~2K long multi-turn agentic rollouts (smohammadi/nanocode-long-context)."""
    return HubConversations(
        "smohammadi/nanocode-long-context", "rollouts_train.jsonl", "rollouts_test.jsonl", base_url, directory, revision
    )


class ConversationMixture:
    """Datasets with a number of epochs each, shuffled together with a seed (test splits: one epoch, unshuffled).

    `in_order=True` makes a curriculum instead: each dataset's epochs are shuffled within it, and the datasets follow
    one another in the order given (the packer then reads the first to the end before the second begins)."""

    def __init__(
        self, datasets: Sequence[ConversationDataset], epochs: Sequence[int] | None = None, seed: int = 0,
        in_order: bool = False,
    ):  # fmt: skip
        self.datasets = list(datasets)
        self.epochs = list(epochs) if epochs is not None else [1] * len(self.datasets)
        if len(self.epochs) != len(self.datasets):
            raise ValueError(f"one epoch count per dataset: {len(self.datasets)} datasets, {len(self.epochs)} epochs")
        self.seed, self.in_order = seed, in_order

    def prepare(self) -> None:
        for d in self.datasets:
            d.prepare()

    def conversations(self, split: str) -> list[list[Message]]:
        if split != "train":
            return [c for d in self.datasets for c in d.conversations(split)]
        parts = [d.conversations(split) * n for d, n in zip(self.datasets, self.epochs)]
        if not self.in_order:
            parts = [[c for part in parts for c in part]]
        out = []
        for i, part in enumerate(parts):  # the seed and the part's place: two parts never share one permutation
            random.Random(self.seed * 1_000_003 + i if i else self.seed).shuffle(part)
            out += part
        return out


@dataclass
class PackStats:
    conversations: int = 0
    dropped_too_long: int = 0
    rows: int = 0
    tokens: int = 0
    trained_tokens: int = 0


@dataclass
class SFTPacker:
    """Best-fit packs rendered conversations into (tokens, loss mask) rows of seq_len + 1, resumable.

    The conversations are visited in order (process slice: index % process_count == process_index), cycling forever
    over epochs. `state()` is a small dict (epoch, cursor, buffered conversation indices) that restores exactly.
    """

    conversations: list[list[Message]]
    codec: ConversationCodec
    batch_size: int
    seq_len: int
    process_index: int = 0
    process_count: int = 1
    buffer_size: int = 64
    cycle: bool = True
    stats: PackStats = field(default_factory=PackStats)

    def __post_init__(self):
        self._mine = list(range(self.process_index, len(self.conversations), self.process_count))
        if not self._mine:
            raise DataError("no conversations for this process (dataset empty or smaller than the process count)")
        self._cursor, self._epoch, self._buffer = 0, 0, []  # buffer: (index, ids, mask)
        self._rendered: dict[int, tuple[list[int], list[int]] | None] = {}

    def _render(self, index: int):
        if index not in self._rendered:
            self._rendered[index] = self.codec.render(self.conversations[index], max_tokens=self.seq_len + 1)
            if len(self._rendered) > 4 * self.buffer_size:  # bounded cache: keep only what the buffer may revisit
                for k in list(self._rendered)[: len(self._rendered) // 2]:
                    self._rendered.pop(k)
        return self._rendered[index]

    def _refill(self) -> bool:
        dropped_in_a_row = 0
        while len(self._buffer) < self.buffer_size:
            if self._cursor >= len(self._mine):
                if not self.cycle:
                    return bool(self._buffer)
                self._cursor, self._epoch = 0, self._epoch + 1
            index = self._mine[self._cursor]
            self._cursor += 1
            rendered = self._render(index)
            self.stats.conversations += 1
            if rendered is None:
                self.stats.dropped_too_long += 1
                dropped_in_a_row += 1
                if self.cycle and dropped_in_a_row >= len(self._mine) and not self._buffer:  # would loop forever
                    raise DataError(
                        f"none of the {len(self._mine)} conversations fits a row of {self.seq_len + 1} tokens "
                        "(system prompt included): raise the context (sequence_len) or shorten the data"
                    )
                continue
            dropped_in_a_row = 0
            self._buffer.append((index, *rendered))
        return True

    def _row(self) -> tuple[np.ndarray, np.ndarray] | None:
        width = self.seq_len + 1
        tokens, mask = [], []
        while True:
            if not self._refill() and not self._buffer:
                break
            space = width - len(tokens)
            fits = [i for i, (_, ids, _) in enumerate(self._buffer) if len(ids) <= space]
            if not fits:
                break
            best = max(fits, key=lambda i: len(self._buffer[i][1]))
            _, ids, m = self._buffer.pop(best)
            tokens += ids
            mask += m
        if not tokens:
            return None
        pad = width - len(tokens)
        tokens += [self.codec.ids["bos"]] * pad
        mask += [0] * pad
        self.stats.rows += 1
        self.stats.tokens += width
        self.stats.trained_tokens += sum(mask)
        return np.asarray(tokens, np.int32), np.asarray(mask, np.int32)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches of (tokens int32[B, T+1], mask int32[B, T+1]); the loss mask of target t is mask[:, t+1].

        Without `cycle` (held-out data) the last, partial batch is filled with padding rows (mask 0), so every
        held-out conversation is evaluated and the batch shape stays fixed (no recompilation).
        """
        while True:
            rows = []
            for _ in range(self.batch_size):
                row = self._row()
                if row is None:
                    break
                rows.append(row)
            short = self.batch_size - len(rows)
            if not rows or (short and self.cycle):
                return
            pad = (np.full(self.seq_len + 1, self.codec.ids["bos"], np.int32), np.zeros(self.seq_len + 1, np.int32))
            rows += [pad] * short
            yield np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
            if short:
                return

    def state(self) -> dict:
        return {"epoch": self._epoch, "cursor": self._cursor, "buffer": [b[0] for b in self._buffer]}

    def restore(self, state: dict) -> None:
        self._epoch, self._cursor = int(state["epoch"]), int(state["cursor"])
        self._buffer = [(i, *self._render(i)) for i in state["buffer"]]
