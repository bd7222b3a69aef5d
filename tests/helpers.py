"""Small real components shared by tests (no mocks): a BPE tokenizer trained on stdlib text, cached per session."""

from __future__ import annotations

import functools
import sysconfig
from pathlib import Path


def stdlib_texts(max_chars: int = 400_000) -> list[str]:
    """Python sources from the interpreter's standard library (code) — deterministic order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out, total = [], 0
    for path in sorted(root.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        out.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return out


@functools.cache
def small_tokenizer(vocab_size: int = 512):
    from nanocode.data.tokenizer import BPETokenizer

    return BPETokenizer.train(stdlib_texts(), vocab_size)
