"""A small progress bar with rate and ETA for long work (training, downloads, tokenizer training).

It writes to stderr, redraws at most ~10 times a second, and degrades to periodic log lines when stderr is not a
terminal (CI logs stay readable).
"""

from __future__ import annotations

import sys
import time


def _fmt_time(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):  # NaN or inf
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    def __init__(
        self,
        total: int | None,
        desc: str = "",
        unit: str = "it",
        *,
        stream=None,
        enabled: bool = True,
        initial: int = 0,
        log_every_s: float = 10.0,
    ):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.n = initial
        self._start_n = initial
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._redraw_s = 0.1 if self._tty else log_every_s
        self.postfix = ""

    def update(self, k: int = 1, postfix: str | None = None) -> None:
        self.n += k
        if postfix is not None:
            self.postfix = postfix
        now = time.monotonic()
        if now - self._last_draw >= self._redraw_s or (self.total is not None and self.n >= self.total):
            self._last_draw = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = now - self.start
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        if self.total:
            frac = min(1.0, self.n / self.total)
            bar = "#" * int(frac * 20) + "-" * (20 - int(frac * 20))
            eta = (self.total - self.n) / rate if rate > 0 else float("inf")
            head = f"{self.desc} [{bar}] {self.n}/{self.total} {frac:4.0%}"
            tail = f"{rate:.2f} {self.unit}/s, {_fmt_time(elapsed)} elapsed, ETA {_fmt_time(eta)}"
        else:
            head = f"{self.desc} {self.n} {self.unit}"
            tail = f"{rate:.2f} {self.unit}/s, {_fmt_time(elapsed)} elapsed"
        return f"{head} | {tail}" + (f" | {self.postfix}" if self.postfix else "")

    def _draw(self, now: float) -> None:
        if not self.enabled:
            return
        text = self.line(now)
        if self._tty:
            self.stream.write("\r\x1b[2K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            if self._tty:
                self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
