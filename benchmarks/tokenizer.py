"""Tokenizer speed: rustbpe training (chars/s) and tiktoken batch encoding (tokens/s, all cores) on stdlib text.

The text is this interpreter's standard library (.py sources, ~31 MB) plus pydoc's help topics, cut into documents of
at most 10,000 chars (tok-train's doc_cap), so it runs offline anywhere. Training time covers everything
`BPETokenizer.train` does: parallel splitting and counting, then the merges.

    .venv/bin/python benchmarks/tokenizer.py                      # vocab 8192 and 32768, best of 3 encodes
    .venv/bin/python benchmarks/tokenizer.py --vocab_size 8192 --max_chars 5_000_000
"""

from __future__ import annotations

import argparse
import os
import platform
import sysconfig
import time
from pathlib import Path

from nanocode.data.tokenizer import BPETokenizer

DOC_CHARS = 10_000


def stdlib_documents(max_chars: int) -> list[str]:
    from pydoc_data.topics import topics

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [topics[k] for k in sorted(topics)]
    texts += [
        p.read_text(encoding="utf-8", errors="replace")
        for p in sorted(stdlib.rglob("*.py"))
        if "site-packages" not in p.parts
    ]
    docs, total = [], 0
    for text in texts:
        for i in range(0, len(text), DOC_CHARS):
            docs.append(text[i : i + DOC_CHARS][: max_chars - total])
            total += len(docs[-1])
            if total >= max_chars:
                return docs
    return docs


def encode_each(tok: BPETokenizer, docs: list[str]) -> list[list[int]]:
    """The sequential baseline: one encode() call per document."""
    return [tok.encode(d) for d in docs]


def best_of(repeat: int, fn, *args) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab_size", type=int, action="append", help="repeatable (default 8192 and 32768)")
    parser.add_argument("--max_chars", type=int, default=10**9, help="cap on the text used (default: all of it)")
    parser.add_argument("--repeat", type=int, default=3, help="encode timings: best of this many runs")
    args = parser.parse_args()

    docs = stdlib_documents(args.max_chars)
    chars = sum(map(len, docs))
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}"
    )
    print(f"text: {len(docs):,} docs, {chars:,} chars, {n_bytes:,} bytes (stdlib + pydoc topics)\n")
    print("| vocab | train s | train chars/s | encode threads | encode s | tokens | encode tokens/s | bytes/token |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for vocab_size in args.vocab_size or [8192, 32768]:
        start = time.perf_counter()
        tok = BPETokenizer.train(iter(docs), vocab_size)
        train_s = time.perf_counter() - start
        n_tokens = sum(map(len, tok.encode_batch(docs)))  # also warms tiktoken's caches
        threads_list = sorted({1, os.cpu_count() or 1})
        for threads in threads_list:
            encode = encode_each if threads == 1 else BPETokenizer.encode_batch  # encode_batch uses all cores
            seconds = best_of(args.repeat, encode, tok, docs)
            print(
                f"| {vocab_size:,} | {train_s:.1f} | {chars / train_s:,.0f} | {threads} | {seconds:.2f} | "
                f"{n_tokens:,} | {n_tokens / seconds:,.0f} | {n_bytes / n_tokens:.2f} |"
            )


if __name__ == "__main__":
    main()
