"""Synth against a local OpenAI-compatible teacher: time, requests and tokens per 1,000 rollouts.

Runs the real pipeline (`synthesize`: rollout -> checks -> critique -> revision -> pair) with the real teacher client
against the scripted server of the tests (tests/teacher_server.py), which answers every scenario with a rollout that
breaks two SOUL rules, then with its revision. `--latency_s` makes each answer take that long, as a real model's
would; `--rate_limited_for_s` makes the server answer 429 + Retry-After for that long first. The token counts are
the server's usage (about four characters a token); the prompts are the pipeline's real prompts, the completions
the scripted rollouts (shorter than a real teacher's). Cost = tokens x your teacher's price.

    .venv/bin/python benchmarks/teacher.py                                         # 200 rollouts, no latency
    .venv/bin/python benchmarks/teacher.py --latency_s 0.5 --workers 8 --rollouts 200
    .venv/bin/python benchmarks/teacher.py --rate_limited_for_s 60 --retry_after 5 --rollouts 100
    .venv/bin/python benchmarks/teacher.py --price_in 1.25 --price_out 10            # $ per million tokens
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: tests.teacher_server

from nanocode.align.constitution import SoulConstitution  # noqa: E402
from nanocode.align.synth import JsonlStore, SynthPipeline, synthesize  # noqa: E402
from nanocode.align.teacher import OpenAICompatibleTeacher  # noqa: E402
from tests.teacher_server import ScriptedTeacher  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--api", choices=["chat", "responses"], default="chat")
    parser.add_argument("--latency_s", type=float, default=0.0, help="seconds each answer takes")
    parser.add_argument("--rate_limited_for_s", type=float, default=0.0, help="429 + Retry-After this long first")
    parser.add_argument("--retry_after", default="5", help="the Retry-After header the server sends with a 429")
    parser.add_argument("--price_in", type=float, default=None, help="$ per million input tokens")
    parser.add_argument("--price_out", type=float, default=None, help="$ per million output tokens")
    args = parser.parse_args()

    out = Path(tempfile.mkdtemp(prefix="nanocode_teacher_bench_"))
    scenarios = [{"id": f"s{i:05d}", "prompt": "fix the bug in calc.py"} for i in range(args.rollouts)]
    server = ScriptedTeacher(delay_s=args.latency_s, rate_limited_for_s=args.rate_limited_for_s,
                             retry_after=args.retry_after)  # fmt: skip
    with server:
        teacher = OpenAICompatibleTeacher(base_url=server.url, api=args.api)
        pipeline = SynthPipeline(teacher, SoulConstitution(), max_attempts=3)
        t0 = time.perf_counter()
        summary = synthesize(pipeline, scenarios, out, workers=args.workers, progress=False)
        seconds = time.perf_counter() - t0
    ids = [r["id"] for r in JsonlStore(out).read("rollouts.jsonl")]
    stats, per = teacher.stats, 1000 / max(1, len(ids))
    print(f"out: {out}")
    print(f"counts: {summary['counts']}  unique rollout ids: {len(set(ids))} of {args.rollouts} requested")
    print(f"teacher: {stats}  server 429s: {server.rate_limited}")
    print(f"wall: {seconds:.1f} s  ->  {seconds * per:.0f} s per 1,000 rollouts ({args.workers} workers)")
    print(f"per 1,000 rollouts: {stats['requests'] * per:,.0f} requests, {stats['tokens_in'] * per:,.0f} input tokens, "
          f"{stats['tokens_out'] * per:,.0f} output tokens")  # fmt: skip
    if args.price_in is not None and args.price_out is not None:
        cost = (stats["tokens_in"] * args.price_in + stats["tokens_out"] * args.price_out) / 1e6 * per
        print(f"cost per 1,000 rollouts at ${args.price_in}/M in, ${args.price_out}/M out: ${cost:,.2f}")


if __name__ == "__main__":
    main()
