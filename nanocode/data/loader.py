"""The pretraining loader: `PackedLoader` builds the batches of a `PackedStream` (nanocode.data.packed_stream: which
documents, how they are packed, the exact resume state) `prefetch` batches ahead in a background thread, and hands
them out with the stream's state after each, so `state()` is that of the last batch the consumer took.
`validation_loaders` gives one finite loader per source for per-source bits per byte.

Why a thread and not grain (which the issue asked us to weigh): reading (pyarrow) and tokenizing (tiktoken) both
release the GIL and `encode_batch` already uses every core, so one producer thread keeps the CPU busy and the loader
runs far ahead of training (benchmarks/loader_results.md); grain's worker processes would add a dependency and copy
documents between processes for nothing here. And the exact resume state is the packing buffer's locators, which
depend on the whole history of best-fit choices: grain's own checkpoints would have to carry this same custom state.
`PackedStream` (no threads) is a plain iterator with state()/restore(), so wrapping it in grain later stays easy.
"""

from __future__ import annotations

import copy
import functools
import queue
import threading
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np
from jaxtyping import Int32

from nanocode.core.interfaces import DataMixture, Tokenizer
from nanocode.data.mixture import WeightedMixture
from nanocode.data.packed_stream import BatchInfo, PackedStream

_END = object()


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            pass
    return False


def _produce(stream: PackedStream, q: queue.Queue, stop: threading.Event) -> None:
    """Build batches ahead into the bounded queue, each with the state after it; an error goes into the queue too."""
    try:
        for batch in stream:
            if not _put(q, (batch, stream.state(), stream.last_info), stop):
                return
        _put(q, _END, stop)
    except BaseException as e:  # handed to the consumer, who raises it with its one-line message
        _put(q, e, stop)


class PackedLoader:
    """Packed int32[batch_size, seq_len + 1] batches of this process's slice, built `prefetch` batches ahead.

    `batch_size` is this process's rows; `horizon` the run's steps (a curriculum's `weights_at` is told it). Iterate
    it; `state()` / `restore(state)` (or `state=`) resume exactly; `close()` stops the thread (also on `with`).
    `last_info` describes the batch just returned (its realised mix: `source_tokens`).
    """

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
        prefetch: int = 4,
        max_batches: int | None = None,
        horizon: int | None = None,
        state: Mapping[str, Any] | None = None,
    ):
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        self._new_stream = functools.partial(
            PackedStream,
            mixture,
            tokenizer,
            batch_size=batch_size,
            seq_len=seq_len,
            split=split,
            seed=seed,
            process_index=process_index,
            process_count=process_count,
            buffer_docs=buffer_docs,
            max_batches=max_batches,
            horizon=horizon,
        )
        self.prefetch = prefetch
        self._stream: PackedStream | None = self._new_stream()  # bad sources and shards fail here, in one line
        self._spec = self._stream.spec()
        if state is not None:
            self._stream.restore(state)
        self._state = self._stream.state()
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._finished = False
        self.last_info: BatchInfo | None = None

    def __iter__(self) -> PackedLoader:
        return self

    def __next__(self) -> Int32[np.ndarray, "b row"]:
        if self._finished:
            raise StopIteration
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if item is _END:
            self._finished = True
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()  # iterating again rebuilds from the last good state (and meets the same error)
            raise item
        batch, self._state, self.last_info = item
        return batch

    def _start(self) -> None:
        if self._stream is None:  # an earlier thread ran ahead of the consumer: rebuild from the consumer's state
            self._stream = self._new_stream()
            self._stream.restore(self._state)
        self._queue, self._stop = queue.Queue(maxsize=self.prefetch), threading.Event()
        self._thread = threading.Thread(
            target=_produce, args=(self._stream, self._queue, self._stop), name="nanocode-loader", daemon=True
        )
        self._thread.start()
        weakref.finalize(self, self._stop.set)  # a loader dropped without close() still lets its thread end

    def state(self) -> dict[str, Any]:
        """The position after the last batch handed out (JSON-serialisable; a copy)."""
        return copy.deepcopy(self._state)

    def restore(self, state: Mapping[str, Any]) -> None:
        self.close()
        stream = self._new_stream()
        stream.restore(state)
        self._stream, self._state, self._finished, self.last_info = stream, stream.state(), False, None

    def spec(self) -> dict[str, Any]:
        return copy.deepcopy(self._spec)

    def close(self) -> None:
        """Stop the producer thread (waits for the batch it is building)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = self._queue = None
            self._stream = None

    def __enter__(self) -> PackedLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def validation_loaders(
    mixture: DataMixture,
    tokenizer: Tokenizer,
    batch_size: int,
    seq_len: int,
    *,
    max_batches: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    buffer_docs: int = 1000,
    prefetch: int = 2,
) -> dict[str, PackedLoader]:
    """One finite loader per source over its val shard alone (one pass in file order, at most `max_batches`), for
    per-source bits per byte. Processes should pass the same `max_batches` so they run the same number of steps."""
    return {
        name: PackedLoader(
            WeightedMixture({name: source}, {name: 1.0}),
            tokenizer,
            batch_size=batch_size,
            seq_len=seq_len,
            split="val",
            process_index=process_index,
            process_count=process_count,
            buffer_docs=buffer_docs,
            prefetch=prefetch,
            max_batches=max_batches,
        )
        for name, source in mixture.sources.items()
    }
