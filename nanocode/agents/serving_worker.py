"""The one thread that owns the inference engine: it runs queued requests in batches and streams their text back.

A request is a `Job`: prompt ids, sampling, a token budget, stop strings and a forced prefix (the ids that open the
turn, already at the end of the prompt). The worker takes jobs from a bounded queue in batches (1 row when one
request waits, else `max_batch` rows, so only two batch shapes compile) and puts events on each job's own queue:
('delta', text) as the reply's clean text grows (reply_decoder.py), then ('done', Result) or ('error', reason).

A job whose `cancelled` event is set (its client hung up) is skipped if it has not started, and its row is ended at
the next decoded column if it has; `cancelled` counts both. An engine failure fails only its own batch.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nanocode.agents.chat_session import stop_ids
from nanocode.agents.reply_decoder import ReplyDecoder
from nanocode.agents.tool_schema import FunctionTool, ToolChoice, accept_call, call_as_text
from nanocode.data.conversation import ConversationCodec
from nanocode.models.engine import Engine
from nanocode.models.sampling import SamplingParams


@dataclass
class Job:
    """One request in flight: what to generate, and the events its handler waits on."""

    prompt: list[int]
    sampling: SamplingParams
    max_tokens: int
    stop: list[str] = field(default_factory=list)
    prefix: list[int] = field(default_factory=list)  # the forced opening of the turn (the prompt ends with it)
    events: queue.Queue = field(
        default_factory=queue.Queue
    )  # ('delta', str) ... then ('done', Result) | ('error', str)
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class Result:
    text: str  # the reply's text, exactly the deltas streamed
    call: dict[str, Any] | None  # a well-formed call {"name", "args"}, not yet checked against the client's tools
    call_text: str  # a malformed or unfinished call, as text ('' when none)
    stopped: bool  # the model ended the turn (or a stop string did); False: the token budget ran out
    completion_tokens: int

    def settle(self, tools: Mapping[str, FunctionTool], choice: ToolChoice) -> Reply:
        """What the client gets: the call as a tool call if it can take it, else the call as text, finish 'stop'."""
        if self.call is not None:
            args, _ = accept_call(self.call, tools, choice)
            if args is not None:
                return Reply(self.text, "", self.call["name"], args, "tool_calls")
        extra = call_as_text(self.call) if self.call is not None else self.call_text
        if extra and self.text and not self.text.endswith(("\n", " ")):
            extra = "\n" + extra
        return Reply(self.text, extra, None, None, "stop" if self.stopped else "length")


@dataclass
class Reply:
    streamed: str  # the text already streamed as deltas
    extra: str  # text still to send: a call the client cannot take, written out
    name: str | None  # the tool call, when there is one the client can take
    arguments: dict[str, Any] | None
    finish_reason: str  # 'tool_calls' | 'stop' | 'length'

    @property
    def content(self) -> str:
        return self.streamed + self.extra


class QueueFull(Exception):
    pass


class Worker:
    def __init__(self, engine: Engine, codec: ConversationCodec, *, max_batch: int = 8, max_queue: int = 64):
        self.engine, self.codec = engine, codec
        self.max_batch = max(1, max_batch)
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.running = 0
        self.cancelled = 0  # jobs ended or skipped because their client left
        self.batch_rows: collections.Counter[int] = collections.Counter()  # requests per batch run -> count
        self._caches: dict[int, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nanocode-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the batch that runs, then answer every job still queued with an error (no handler waits on)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        while True:
            try:
                self.queue.get_nowait().events.put(("error", "the server is shutting down"))
            except queue.Empty:
                break

    def submit(self, job: Job) -> None:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise QueueFull from None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                jobs = [self.queue.get(timeout=0.1)]
            except queue.Empty:
                continue
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            live = [j for j in jobs if not j.cancelled.is_set()]
            for job in jobs:
                if job.cancelled.is_set():
                    self.cancelled += 1
                    job.events.put(("error", "cancelled: the client left"))
            if not live:
                continue
            self.running = len(live)
            self.batch_rows[len(live)] += 1
            try:
                self._run(live)
            except Exception as e:  # fail this batch, keep serving
                self._caches.clear()  # its buffers may have been donated to a call that failed
                for job in live:
                    job.events.put(("error", f"{type(e).__name__}: {e}"))
            finally:
                self.running = 0

    def _run(self, jobs: list[Job]) -> None:
        b = 1 if len(jobs) == 1 else self.max_batch
        if b not in self._caches:
            self._caches[b] = self.engine.new_cache(b)
        cache = self._caches[b]
        cache.reset()
        pad = b - len(jobs)
        decoders = [ReplyDecoder(self.codec, job.stop, job.prefix) for job in jobs]
        counts = [0] * len(jobs)
        gone: set[int] = set()
        gen = self.engine.generate(
            cache,
            [job.prompt for job in jobs] + [[]] * pad,
            [job.sampling for job in jobs] + [SamplingParams(temperature=0.0)] * pad,
            max_new_tokens=[job.max_tokens for job in jobs] + [0] * pad,
            stop_ids=stop_ids(self.codec),
        )
        try:
            column = next(gen, None)
            while column is not None:
                ended = []
                for r, job in enumerate(jobs):
                    if column[r] is None:
                        continue
                    counts[r] += 1
                    delta = decoders[r].push(column[r])
                    if delta:
                        job.events.put(("delta", delta))
                    if job.cancelled.is_set() and r not in gone:
                        gone.add(r)
                        ended.append(r)
                    elif decoders[r].stopped_by_string:
                        ended.append(r)
                try:
                    column = gen.send(ended)
                except StopIteration:
                    column = None
        finally:
            gen.close()
        self.cancelled += len(gone)
        for job, decoder, n in zip(jobs, decoders, counts):
            rest = decoder.flush()
            if rest:
                job.events.put(("delta", rest))
            call, call_text = decoder.call()
            job.events.put(("done", Result(decoder.text, call, call_text, decoder.done, n)))
