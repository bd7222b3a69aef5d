"""Serve a trained checkpoint over HTTP with an OpenAI-compatible API.

    POST /v1/chat/completions   (messages, tools, tool_choice, stream, temperature, top_p, max_tokens, stop, seed)
    POST /v1/responses          (input, instructions, tools, previous_response_id, stream); GET /v1/responses/{id}
    GET  /v1/models, GET /health
    GET  /                      a web chat page (streams replies; shows tool calls; asks for the key if one is set)

The model, checkpoint and tokenizer are found as for `nanocode chat`. Requests run on one engine in batches of up to
--max_batch; at most --max_queue wait, more get 503. It listens on 127.0.0.1 unless --host says otherwise; with
--api-key (or NANOCODE_API_KEY) every /v1 request needs `Authorization: Bearer <key>`. Any OpenAI client works:

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="<key, or anything without --api-key>")

Example: nanocode serve --gin_file experiments/debug_cpu.gin --stage sft --port 8000
"""

from __future__ import annotations

import argparse
import os

from nanocode.cli.chat import add_model_arguments, load_engine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every one)")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed at start)")
    parser.add_argument("--model_name", help="the model id clients see (default nanocode-<tag>-<stage>)")
    parser.add_argument("--max_batch", type=int, default=8, help="requests generated together")
    parser.add_argument("--max_queue", type=int, default=64, help="requests waiting at most; more get 503")
    parser.add_argument("--max_tokens", type=int, default=512, help="completion tokens when a request names none")
    parser.add_argument(
        "--api_key", "--api-key", help="require `Authorization: Bearer KEY` on /v1 (default: $NANOCODE_API_KEY)"
    )
    parser.add_argument("--request_timeout", type=float, default=10.0, help="seconds for a whole request to arrive")
    parser.add_argument("--idle_timeout", type=float, default=15.0, help="seconds an idle connection is kept")
    parser.add_argument("--max_connections", type=int, default=1024, help="open connections; more get 503")
    parser.add_argument("--verbose", action="store_true", help="log connection errors")


def run(args: argparse.Namespace) -> int:
    from nanocode.agents.server import CompletionServer
    from nanocode.core.errors import ConfigError

    for flag in ("max_batch", "max_queue", "max_tokens", "max_connections", "request_timeout", "idle_timeout"):
        if getattr(args, flag) <= 0:
            raise ConfigError(f"--{flag} must be > 0, got {getattr(args, flag)}")
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
            api_key=args.api_key or os.environ.get("NANOCODE_API_KEY") or None,
            request_timeout=args.request_timeout,
            idle_timeout=args.idle_timeout,
            max_connections=args.max_connections,
            verbose=args.verbose,
        )
    except OSError as e:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    print(f"nanocode serve: {name} from {loaded.checkpoint} (step {loaded.step}) on {server.url}/v1", flush=True)
    print(f"nanocode serve: web chat at {server.url}/", flush=True)
    if server.api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"nanocode serve: warning: listening on {args.host} with no api key", flush=True)
    try:
        server.serve_forever()  # returns on Ctrl-C or SIGTERM
    except KeyboardInterrupt:  # one that came before the loop took the signals over
        pass
    print("nanocode serve: stopped", flush=True)
    return 0
