"""Progress of long work (training, evals, synthesis, downloads, tokenizer training), drawn by tqdm, on stderr.

On a terminal: one bar that fits the terminal's width (tqdm trims the line to it, so an 80-column terminal never
wraps): count, elapsed<ETA, rate, then the postfix, which is what gets cut. Not on a terminal (CI, a log file, a pipe): a plain newline-terminated line
every `log_every_s` seconds and one at the end, with no carriage returns. Any other line printed while a bar is live
must go through `write`, which lifts the bar, prints the line, and redraws the bar below it (never glued to it).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


def write(text: str, stream: TextIO | None = None) -> None:
    """Print a line on `stream` (stderr) without gluing it to a live bar."""
    tqdm.write(text, file=stream or sys.stderr)


class Progress:
    """`with Progress(total, "pretrain", unit="step") as bar: ... bar.update(1, postfix="loss 3.2")`.

    total None: no bar or ETA, only the count and rate. `initial`: where a resumed run starts (the rate and ETA count
    only the work done now). `ncols`: the width of a terminal bar (None: the terminal's, re-read as it changes).
    """

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        unit: str = "it",
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        initial: int = 0,
        log_every_s: float = 10.0,
        ncols: int | None = None,
    ):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.n = self._start_n = initial
        self.postfix = ""
        self.start = time.monotonic()
        self._log_every_s = log_every_s
        self._last_line = -float("inf")
        self._printed_n: int | None = None  # the count the last plain line showed
        self._bar: tqdm | None = None
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        if enabled and tty:
            self._bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                initial=initial,
                file=self.stream,
                ncols=ncols,
                dynamic_ncols=ncols is None,
                mininterval=0.1,
                leave=True,
                bar_format="{l_bar}{bar:20}{r_bar}",  # a fixed bar: a long postfix is trimmed, not the bar squeezed
            )

    def update(self, k: int = 1, postfix: str | None = None) -> None:
        self.n += k
        if postfix is not None:
            self.postfix = postfix
        if self._bar is not None:
            if postfix is not None:
                self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(k)
            return
        now = time.monotonic()
        if now - self._last_line >= self._log_every_s or (self.total is not None and self.n >= self.total):
            self._last_line = now
            self._print_line(now)

    def line(self, now: float | None = None) -> str:
        """The plain status line: `desc: 40%|####      | 120/300 [00:12<00:18,  9.8step/s, postfix]`."""
        now = time.monotonic() if now is None else now
        return tqdm.format_meter(
            self.n,
            self.total,
            now - self.start,
            prefix=self.desc,
            unit=self.unit,
            postfix=self.postfix or None,
            initial=self._start_n,
            ascii=True,
        )

    def _print_line(self, now: float) -> None:
        if self.enabled:
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()
            self._printed_n = self.n

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self._printed_n != self.n:  # the final count, unless the last line showed it
            self._print_line(time.monotonic())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
