"""Serve a trained checkpoint over HTTP with an OpenAI-compatible API.

    POST /v1/chat/completions   (messages, tools, stream, temperature, top_p, max_tokens, stop, seed)
    GET  /v1/models, GET /health

The model, checkpoint and tokenizer are found as for `nanocode chat`. Requests run on one engine in batches of up to
--max_batch; at most --max_queue wait, more get 503. Any OpenAI client works:

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")

Example: nanocode serve --gin_file experiments/debug_cpu.gin --stage sft --port 8000
"""

from __future__ import annotations

import argparse

from nanocode.cli.chat import add_model_arguments, load_engine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every one)")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed at start)")
    parser.add_argument("--model_name", help="the model id clients see (default nanocode-<tag>-<stage>)")
    parser.add_argument("--max_batch", type=int, default=8, help="requests generated together")
    parser.add_argument("--max_queue", type=int, default=64, help="requests waiting at most; more get 503")
    parser.add_argument("--max_tokens", type=int, default=512, help="completion tokens when a request names none")
    parser.add_argument("--verbose", action="store_true", help="log every request")


def run(args: argparse.Namespace) -> int:
    from nanocode.agents.server import CompletionServer
    from nanocode.core.errors import ConfigError

    for flag in ("max_batch", "max_queue", "max_tokens"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    engine, codec, loaded, experiment = load_engine(args)
    name = args.model_name or f"nanocode-{experiment.tag}-{args.stage}"
    try:
        server = CompletionServer(
            engine,
            codec,
            model_name=name,
            host=args.host,
            port=args.port,
            max_batch=args.max_batch,
            max_queue=args.max_queue,
            default_max_tokens=args.max_tokens,
            verbose=args.verbose,
        )
    except OSError as e:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    print(f"nanocode serve: {name} from {loaded.checkpoint} (step {loaded.step}) on {server.url}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("nanocode serve: stopped", flush=True)
    return 0
