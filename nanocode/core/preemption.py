"""Stop a training loop cleanly on SIGTERM or a first Ctrl-C: save a checkpoint at the next step, then exit."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class PreemptionGuard:
    """Turn SIGTERM (and a first Ctrl-C) into a flag the training loop checks, so it saves and exits cleanly.

    Single process: a Python handler sets the flag; a second signal restores the old handler and re-delivers it
    (so a second Ctrl-C still aborts). Multi-process: JAX's preemption service owns SIGTERM and agrees on a step
    all processes save at, so `should_stop(step)` asks orbax instead; call it on every process at every step.
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)):
        self.signals = tuple(signals)
        self._flag = threading.Event()
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self._flag.is_set()

    def request(self) -> None:
        """Ask the loop to stop as if a signal had arrived (tests, or a wall-clock budget)."""
        self._flag.set()

    def should_stop(self, step: int) -> bool:
        if self._flag.is_set():
            return True
        if jax.process_count() > 1 and ocp.multihost.reached_preemption(step):
            self._flag.set()
        return self._flag.is_set()

    def _handle(self, signum: int, frame: Any) -> None:
        if self._flag.is_set():  # second signal: give up on a clean exit
            self._restore()
            signal.raise_signal(signum)
            return
        log.warning("received %s: saving a checkpoint and stopping after this step", signal.Signals(signum).name)
        self._flag.set()

    def __enter__(self) -> PreemptionGuard:
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def __exit__(self, *exc) -> None:
        self._restore()
