"""Progress bars: bounded by an 80-column terminal, plain newline-terminated lines when not on a terminal, an ETA,
and lines printed while a bar is live land on their own line."""

import io
import re

from nanocode.core import progress
from nanocode.core.progress import Progress

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(text: str) -> tuple[list[str], int]:
    """What a terminal shows for `text` (carriage returns overwrite, newlines commit), and the widest column
    the cursor reached (past the terminal's width a line would wrap)."""
    lines, line, col, widest = [], [], 0, 0
    for ch in ANSI.sub("", text):
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        else:
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
            widest = max(widest, col)
    if line:
        lines.append("".join(line).rstrip())
    return lines, widest


LONG_POSTFIX = "loss 3.2100 | 123,456 tok/s | mfu 41.5% | and more words that would never fit"


def test_terminal_bar_fits_80_columns_and_lines_written_meanwhile_stand_alone():
    term = Terminal()
    with Progress(300, "pretrain", unit="step", stream=term, ncols=80) as bar:
        for i in range(300):
            bar.update(1, postfix=LONG_POSTFIX)
            if i == 150:
                progress.write("eval step 151 | val_bpb 1.234", term)
    lines, widest = screen(term.getvalue())
    assert widest <= 80, term.getvalue()
    assert "eval step 151 | val_bpb 1.234" in lines  # a line of its own, not glued to the bar
    assert "300/300" in lines[-1] and lines[-1].startswith("pretrain")
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", lines[-1])  # elapsed<remaining: the ETA


def test_without_a_terminal_lines_are_plain_periodic_and_carry_an_eta():
    log = io.StringIO()
    with Progress(10, "sft", unit="step", stream=log, log_every_s=0.0) as bar:
        for _ in range(10):
            bar.update(1, postfix="loss 2.0")
        progress.write("sft eval step 10 | val_bpb 2.5", log)
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == 11  # one per update (log_every_s=0), the written line, and no repeat at close
    assert lines[0].startswith("sft:") and "1/10" in lines[0] and "loss 2.0" in lines[0]
    assert "10/10" in lines[9] and re.search(r"<\d\d:\d\d", lines[9])
    assert lines[10] == "sft eval step 10 | val_bpb 2.5"


def test_plain_lines_are_rate_limited_and_the_last_count_is_printed_at_close():
    log = io.StringIO()
    with Progress(None, "synth", unit="scenario", stream=log, log_every_s=3600) as bar:
        for _ in range(5):
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "1scenario" in lines[0].replace(" ", "") and "5scenario" in lines[1].replace(" ", "")


def test_a_disabled_bar_prints_nothing_and_a_resumed_one_counts_from_its_start():
    quiet, term = io.StringIO(), Terminal()
    with Progress(10, "x", stream=quiet, enabled=False) as bar:
        bar.update(5)
    assert quiet.getvalue() == ""
    with Progress(10, "align", unit="step", stream=term, ncols=80, initial=6) as bar:
        bar.update(4)
    lines, widest = screen(term.getvalue())
    assert "10/10" in lines[-1] and widest <= 80
