"""Compression ratio (bytes per token) of the trained tokenizer per text type and per data source of the mixture.

Prints the table and saves it as tok_eval.md in the tokenizer directory (with the resolved config beside it as
tok_eval_config.gin). --compare adds the columns of a second tokenizer directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nanocode.cli.common import add_config_arguments, load_experiment
from nanocode.core import config
from nanocode.core.io import write_text
from nanocode.core.kinds import TOKENIZERS
from nanocode.data.tok_eval import tok_eval


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--compare", metavar="DIR", help="a second tokenizer directory to compare against")
    parser.add_argument(
        "--sample_chars",
        type=int,
        default=1_000_000,
        help="characters sampled from each source split (default 1,000,000)",
    )


def run(args: argparse.Namespace) -> int:
    experiment = load_experiment(args)
    workspace, stage = experiment.workspace, experiment.stage("tokenizer_training")
    cls = TOKENIZERS.get(stage.tokenizer)
    tokenizer = cls.load(workspace.tokenizer_dir, expected_vocab_size=stage.vocab_size)
    other = cls.load(Path(args.compare).expanduser()) if args.compare else None
    _, report = tok_eval(
        tokenizer,
        stage.mixture,
        other=other,
        sample_chars=args.sample_chars,
        ours=workspace.tag,
        other_name=Path(args.compare).parent.name if args.compare else "other",
    )
    print(report, end="")
    write_text(workspace.tokenizer_dir / "tok_eval.md", report)
    write_text(workspace.tokenizer_dir / "tok_eval_config.gin", config.config_str())
    print(f"tok-eval: table -> {workspace.tokenizer_dir / 'tok_eval.md'}")
    return 0
