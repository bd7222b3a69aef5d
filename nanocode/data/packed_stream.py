"""The packed stream under the pretraining loader (nanocode.data.loader runs it in a thread): a mixture's documents,
tokenized and best-fit packed into int32 rows of seq_len + 1 tokens (inputs = row[:-1], targets = row[1:]).
Deterministic, sliced per process, and exactly resumable.

Where the documents come from:
- A source's shards of the split are cut into row groups (~1024 documents), numbered across its shards in file order;
  process p of P owns those with number % P == p (nanochat's slicing: disjoint slices that together cover all).
- Each source reads its own row groups in a seeded shuffle, reshuffled every epoch, looping forever (train); the val
  split is read once, in file order. A row group is tokenized in one `encode_batch` call (BOS first; tiktoken spreads
  it over every core without the GIL) and its documents enter that source's packing buffer (nanocode.data.packing)
  as room appears: each source has its own buffer of `buffer_docs` documents.
- The mixture's weights apply per batch, row by row: the rows of the batch of step s are shared out among the
  sources in proportion to `mixture.weights_at(s, horizon)` (horizon: the run's steps) by systematic sampling with
  one uniform offset keyed on (seed, s), so each source gets its share of the B rows rounded up or down at random
  (exact in expectation), and a curriculum moves from one batch to the next. A row is best-fit packed from its
  source's buffer alone, so the mix of tokens is the mix of rows: `BatchInfo.source_tokens` is that realised mix.
The batches are therefore a function of the data, the tokenizer, the seed, the process slice and the shapes.

Resume: `state()` is a small JSON dict (step, each source's epoch and position, the row group each
source is feeding with the offset of its next document, and the packing buffers as document locators
[source, shard, row group, row], never tokens). `restore` re-reads and re-tokenizes those documents; from then on
the batches are exactly those the uninterrupted loader would have given.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from jaxtyping import Int32

from nanocode.core.errors import DataError
from nanocode.core.interfaces import DataMixture, DataSource, Tokenizer
from nanocode.data import parquet
from nanocode.data.mixture import check_signature, check_weights
from nanocode.data.packing import BestFitPacker, PackStats

STATE_VERSION = 2  # 2: one packing buffer per source, the rows of a batch shared out by the weights
_DRAW, _SHUFFLE = 0, 1  # RNG streams: how a batch's rows are shared out, and each source's epoch order


@dataclass(frozen=True)
class BatchInfo:
    """What went into one batch: its step, the tokens each source contributed, every document placed as
    ((source, shard, row group, row), tokens used) in row order, and the packer's running counters."""

    step: int
    source_tokens: dict[str, int]
    placed: list[tuple[tuple[str, int, int, int], int]] = field(default_factory=list)
    pack: PackStats = field(default_factory=PackStats)


class _RowGroups:
    """One source's row groups (of one split) that belong to this process, and how far reading has got."""

    def __init__(self, name: str, source: DataSource, split: str, *, seed: int, process: tuple[int, int], loop: bool):
        self.name, self.seed, self.loop = name, seed, loop
        self.paths = source.shard_paths(split)
        self.counts = [parquet.num_row_groups(p) for p in self.paths]  # checks every footer: bad shards fail now
        everything = [(s, r) for s, n in enumerate(self.counts) for r in range(n)]
        index, count = process
        self.mine = everything[index::count]
        if not self.mine:
            raise DataError(
                f"{self.paths[0]}: source {name!r} has {len(everything)} {split} row group(s), too few for "
                f"{count} processes (process {index} gets none); write its shards with smaller row groups"
            )
        self.epoch = self.position = 0
        self._order_epoch, self._order = -1, self.mine

    def _ordered(self) -> list[tuple[int, int]]:
        if self.loop and self._order_epoch != self.epoch:
            key = [self.seed, _SHUFFLE, zlib.crc32(self.name.encode()), self.epoch]
            self._order = [self.mine[i] for i in np.random.default_rng(key).permutation(len(self.mine))]
            self._order_epoch = self.epoch
        return self._order

    def next(self) -> tuple[int, int] | None:
        """(shard, row group) to read next, or None when a single pass is over."""
        if self.position == len(self.mine):
            if not self.loop:
                return None
            self.epoch, self.position = self.epoch + 1, 0
        self.position += 1
        return self._ordered()[self.position - 1]

    def read(self, shard: int, row_group: int) -> list[str]:
        if not (0 <= shard < len(self.paths) and 0 <= row_group < self.counts[shard]):
            raise DataError(f"{self.paths[0].parent}: no row group {row_group} in shard {shard} of {self.name!r}")
        return parquet.read_row_group(self.paths[shard], row_group)


@dataclass
class _Feeding:
    """The drawn row group whose documents are entering the buffer: rows first.. are tokenized, `next` is next."""

    name: str
    shard: int
    row_group: int
    first: int
    next: int
    docs: list[np.ndarray]

    @property
    def left(self) -> int:
        return self.first + len(self.docs) - self.next


def tokenize(tokenizer: Tokenizer, texts: list[str]) -> list[Int32[np.ndarray, " n"]]:
    """Each text as int32 tokens with a leading BOS, from one batch encode. One array per document (not views of a
    shared one): a long document may wait in the buffer for ages and must not pin its whole row group's tokens."""
    return [np.array(ids, dtype=np.int32) for ids in tokenizer.encode_batch(texts, bos=True)]


class PackedStream:
    """The loader's deterministic core, without threads: an iterator of int32[batch_size, seq_len + 1] batches."""

    def __init__(
        self,
        mixture: DataMixture,
        tokenizer: Tokenizer,
        *,
        batch_size: int,
        seq_len: int,
        split: str = "train",
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        buffer_docs: int = 1000,
        max_batches: int | None = None,
        horizon: int | None = None,
    ):
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"need batch_size >= 1 and seq_len >= 1, got {batch_size} and {seq_len}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, process_count={process_count})")
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', not {split!r}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        check_signature(mixture)
        self.mixture, self.tokenizer = mixture, tokenizer
        self.batch_size, self.seq_len, self.split, self.seed = batch_size, seq_len, split, seed
        self.process = (process_index, process_count)
        self.max_batches, self.horizon = max_batches, horizon
        self.names = list(mixture.sources)
        self.readers = {
            name: _RowGroups(name, source, split, seed=seed, process=self.process, loop=split == "train")
            for name, source in mixture.sources.items()
        }
        self.buffer_docs = buffer_docs
        self.packers = {name: BestFitPacker(seq_len + 1, buffer_docs) for name in self.names}
        self.step = 0
        self.exhausted: set[str] = set()  # val sources read to the end
        self.feeding: dict[str, _Feeding | None] = dict.fromkeys(self.names)
        self.last_info: BatchInfo | None = None
        self._over = False

    # -- documents in ---------------------------------------------------------------------------------------------
    def _draw(self, row: int) -> str | None:
        """The source of row `row` of the batch being built, or None when every live source is done.

        Systematic sampling: the batch's rows sit at (row + u) / batch_size along the live sources' cumulative
        weights, with one uniform u per batch (keyed on seed and step). So each source gets its expected share of the
        rows, rounded up or down: a batch realises its own step's weights to within one row."""
        weights = self.mixture.weights_at(self.step, self.horizon)
        weights = check_weights(weights, self.mixture.sources, type(self.mixture).__name__)
        live = [(n, weights.get(n, 0.0)) for n in self.names if n not in self.exhausted and weights.get(n, 0.0) > 0]
        if not live:
            return None
        cumulative = list(itertools.accumulate(w for _, w in live))
        u = np.random.default_rng([self.seed, _DRAW, self.step]).random()
        x = (row + u) / self.batch_size * cumulative[-1]
        return live[min(bisect.bisect_right(cumulative, x), len(live) - 1)][0]

    def _refill(self, name: str, wanted: int) -> bool:
        """Add up to `wanted` documents of source `name` to its packer from the row group being fed, reading its next
        row group when that one is used up. False when the source has no more documents (only the val split ends)."""
        while self.feeding[name] is None or self.feeding[name].left == 0:
            where = self.readers[name].next()
            if where is None:
                return False
            docs = tokenize(self.tokenizer, self.readers[name].read(*where))
            self.feeding[name] = _Feeding(name, *where, first=0, next=0, docs=docs)
        f, packer = self.feeding[name], self.packers[name]
        for row in range(f.next, f.next + min(wanted, f.left)):
            packer.add(f.docs[row - f.first], (f.name, f.shard, f.row_group, row))
        f.next += min(wanted, f.left)
        if f.left == 0:
            self.feeding[name] = None
        return True

    def _pack_row(self, row: int, out: np.ndarray) -> list | None:
        """Fill row `row` of the batch from its drawn source; a val source that runs dry mid-row is done (its partial
        row dropped) and the row is drawn again. None when no source is left."""
        while (name := self._draw(row)) is not None:
            placed = self.packers[name].pack_row(out, functools.partial(self._refill, name))
            if placed is not None:
                return placed
            self.exhausted.add(name)
        return None

    # -- batches out ----------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> Int32[np.ndarray, "b row"]:
        if self._over or (self.max_batches is not None and self.step >= self.max_batches):
            raise StopIteration
        batch = np.empty((self.batch_size, self.seq_len + 1), dtype=np.int32)
        placed = []
        for r in range(self.batch_size):
            row = self._pack_row(r, batch[r])
            if row is None:  # the val split ran out: the last partial batch is dropped
                self._over = True
                raise StopIteration
            placed += row
        source_tokens = dict.fromkeys(self.names, 0)
        for (name, *_), used in placed:
            source_tokens[name] += used
        self.last_info = BatchInfo(self.step, source_tokens, placed, self.pack_stats())
        self.step += 1
        return batch

    def pack_stats(self) -> PackStats:
        """The packers' counters, summed over the sources."""
        total = PackStats()
        for packer in self.packers.values():
            for f in fields(PackStats):
                setattr(total, f.name, getattr(total, f.name) + getattr(packer.stats, f.name))
        return total

    # -- resumable state ------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "split": self.split,
            "seed": self.seed,
            "process": list(self.process),
            "step": self.step,
            "sources": {
                n: {"epoch": r.epoch, "position": r.position, "shards": len(r.paths), "row_groups": sum(r.counts)}
                for n, r in self.readers.items()
            },
            "exhausted": sorted(self.exhausted),
            "feeding": {n: None if f is None else [f.shard, f.row_group, f.next] for n, f in self.feeding.items()},
            "buffer": [list(loc) for packer in self.packers.values() for loc in packer.locators()],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue exactly where `state` was taken (re-reads and re-tokenizes the buffered documents)."""
        self._check(state)
        self.step = int(state["step"])
        for name, cursor in state["sources"].items():
            self.readers[name].epoch, self.readers[name].position = int(cursor["epoch"]), int(cursor["position"])
        self.exhausted = set(state["exhausted"])
        locators = [(str(n), int(s), int(g), int(r)) for n, s, g, r in state["buffer"]]
        if any(name not in self.readers for name, *_ in locators):
            raise DataError(f"data state: its buffer names sources outside the mixture's {self.names}")
        docs = list(zip(locators, tokenize(self.tokenizer, self._read_rows(locators))))
        self.packers = {name: BestFitPacker(self.seq_len + 1, self.buffer_docs) for name in self.names}
        try:
            for name, packer in self.packers.items():
                packer.load([doc for doc in docs if doc[0][0] == name])
        except ValueError as e:
            raise DataError(f"data state does not fit these documents: {e}") from None
        self.feeding = dict.fromkeys(self.names)
        for name, cursor in state["feeding"].items():
            if cursor is not None:
                shard, row_group, next_row = (int(x) for x in cursor)
                rows = self.readers[name].read(shard, row_group)
                if not 0 <= next_row <= len(rows):
                    raise DataError(f"{self.readers[name].paths[shard]}: data state points past row group {row_group}")
                docs = tokenize(self.tokenizer, rows[next_row:])
                self.feeding[name] = _Feeding(name, shard, row_group, next_row, next_row, docs)
        self._over, self.last_info = False, None

    def _check(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise DataError(
                f"data state: not a loader state of version {STATE_VERSION} (saved by another nanocode version: "
                "start the stage afresh)"
            )
        ours = self.state()
        for key in ("split", "seed", "process"):
            saved = list(state[key]) if key == "process" else state[key]
            if saved != ours[key]:
                raise DataError(f"data state was saved with {key}={state[key]}, this loader has {key}={ours[key]}")
        if set(state["sources"]) != set(self.readers):
            raise DataError(f"data state sources {sorted(state['sources'])} differ from the mixture's {self.names}")
        for name, saved in state["sources"].items():
            now = ours["sources"][name]
            if (saved["shards"], saved["row_groups"]) != (now["shards"], now["row_groups"]):
                raise DataError(
                    f"{self.readers[name].paths[0].parent}: source {name!r} had {saved['shards']} shards / "
                    f"{saved['row_groups']} row groups when the state was saved, now {now['shards']} / "
                    f"{now['row_groups']}: its data changed"
                )

    def _read_rows(self, locators: list[tuple[str, int, int, int]]) -> list[str]:
        """The texts of the given documents, reading each row group once."""
        rows_by_group: dict[tuple[str, int, int], list[str]] = {}
        for name, shard, group, _ in locators:
            if (name, shard, group) not in rows_by_group:
                rows_by_group[name, shard, group] = self.readers[name].read(shard, group)
        texts = []
        for name, shard, group, row in locators:
            rows = rows_by_group[name, shard, group]
            if not 0 <= row < len(rows):
                path = self.readers[name].paths[shard]
                raise DataError(f"{path}: data state names row {row} of row group {group}, which has {len(rows)}")
            texts.append(rows[row])
        return texts

    def spec(self) -> dict[str, Any]:
        """What the batches depend on besides the tokenizer (for the checkpoint's data fingerprint)."""
        return {
            "split": self.split,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "buffer_docs": self.buffer_docs,
            "mixing": "rows of a batch",  # how the weights apply (the older per-row-group loader's states differ)
            "process_count": self.process[1],
            "sources": {n: [p.name for p in r.paths] + [sum(r.counts)] for n, r in self.readers.items()},
        }
