"""Packed loader speed: packed-row tokens/s of PackedLoader on the embedded corpus with a BPE tokenizer.

Builds the registered `embedded_prose` / `embedded_code` sources (stdlib docstrings + pydoc topics, stdlib .py files)
into a data directory, trains a BPE tokenizer (vocab 8192) on a sample of them, then times the loader over nanocode's
web/code mix (4:1) with a consumer that takes batches as fast as it can. Also reports the tokens discarded by
best-fit cropping, the state size, and how long a restore takes (it re-reads and re-tokenizes the buffer).

    .venv/bin/python benchmarks/loader.py                              # seq_len 256, 512 and 2048, batch 16
    .venv/bin/python benchmarks/loader.py --seq_len 2048 --tokens 1_000_000 --data_dir /tmp/embedded
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path

from nanocode.data.embedded import EmbeddedCode, EmbeddedProse
from nanocode.data.loader import PackedLoader
from nanocode.data.mixture import WebCodeMixture
from nanocode.data.packed_stream import PackedStream
from nanocode.data.tokenizer import BPETokenizer
from nanocode.data.tokenizer_training import sample_documents


def time_loader(make, batches: int) -> tuple[float, int, Counter, object]:
    """Seconds, tokens and tokens per source for `batches` batches after the first (which fills the buffer)."""
    loader = make()
    next(loader)
    t0, tokens, by_source = time.perf_counter(), 0, Counter()
    for _ in range(batches):
        tokens += next(loader).size
        by_source.update(loader.last_info.source_tokens)
    seconds = time.perf_counter() - t0
    return seconds, tokens, by_source, loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq_len", type=int, nargs="+", default=[256, 512, 2048])
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=3_000_000, help="packed tokens to time per seq_len")
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--tokenizer_chars", type=int, default=3_000_000)
    parser.add_argument("--data_dir", default=None, help="where to build the embedded shards (default: a temp dir)")
    parser.add_argument("--results", default=None, help="append the markdown table to this file")
    args = parser.parse_args()

    root = Path(args.data_dir or tempfile.mkdtemp(prefix="nanocode_loader_bench_"))
    web, code = EmbeddedProse(str(root / "embedded_prose")), EmbeddedCode(str(root / "embedded_code"))
    t0 = time.perf_counter()
    for source in (web, code):
        source.prepare(progress=False)
    print(f"data: {root} ({time.perf_counter() - t0:.1f}s to build/check)")
    mixture = WebCodeMixture(web, code)
    t0 = time.perf_counter()
    tokenizer = BPETokenizer.train(sample_documents(mixture, args.tokenizer_chars, doc_cap=10_000), args.vocab_size)
    print(f"tokenizer: vocab {tokenizer.vocab_size}, trained in {time.perf_counter() - t0:.1f}s")

    rows = []
    for seq_len in args.seq_len:
        kw = dict(batch_size=args.batch_size, seq_len=seq_len)
        batches = max(1, args.tokens // (args.batch_size * (seq_len + 1)))
        make = functools.partial(PackedLoader, mixture, tokenizer, **kw)
        threaded, tokens, by_source, loader = time_loader(make, batches)
        info, state = loader.last_info, loader.state()
        t0 = time.perf_counter()
        restored = PackedLoader(mixture, tokenizer, **kw, state=state)
        restore_s = time.perf_counter() - t0
        loader.close()
        restored.close()
        plain, _, _, _ = time_loader(functools.partial(PackedStream, mixture, tokenizer, **kw), batches)
        code_share = by_source["code"] / tokens
        rows.append(
            f"| {seq_len} | {args.batch_size} | {batches} | {tokens / threaded:,.0f} | {tokens / plain:,.0f} "
            f"| {info.pack.discarded_fraction:.1%} | {code_share:.0%} | {len(json.dumps(state)):,} | {restore_s:.2f} |"
        )
        print(rows[-1], flush=True)

    table = "\n".join(
        [
            "| seq_len | batch | batches | loader tokens/s | no-thread tokens/s | discarded | code share of tokens "
            "| state bytes | restore s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"\n{machine}\n{table}")
    if args.results:
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine}\n\n{table}\n")


if __name__ == "__main__":
    main()
