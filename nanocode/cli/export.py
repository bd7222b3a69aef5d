"""Export a trained checkpoint for other frameworks.

--format hf writes a Hugging Face transformers directory (NanoChatForCausalLM): config.json, model.safetensors,
generation_config.json, tokenizer.json and tokenizer_config.json with a chat template that renders nanocode's
conversation and tool-call format. The checkpoint is found as for `nanocode chat` (the last stage that has one,
or --stage / --checkpoint / --step); needs the `export` extra (pip install 'nanocode[export]').

Example: nanocode export --gin_file experiments/debug_cpu.gin --stage sft --format hf --out exported/debug-sft
         python -c "import transformers as t; m = t.AutoModelForCausalLM.from_pretrained('exported/debug-sft')"
"""

from __future__ import annotations

import argparse
import sys

from nanocode.cli.common import add_checkpoint_arguments, add_config_arguments, load_experiment

FORMATS = ("hf",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    add_checkpoint_arguments(parser)
    parser.add_argument("--format", choices=FORMATS, default="hf", help="hf: a transformers NanoChatForCausalLM")
    parser.add_argument("--out", required=True, metavar="DIR", help="the directory to write (new, empty or an export)")


def run(args: argparse.Namespace) -> int:
    from nanocode.agents.loading import load
    from nanocode.agents.policy import SYSTEM_PROMPT_HEAD, TOOL_EXAMPLE
    from nanocode.core.errors import ConfigError
    from nanocode.core.kinds import MODELS
    from nanocode.export.hf import check_exportable, check_out, export_hf

    experiment = load_experiment(args)
    spec, workspace = experiment.inference_model(), experiment.workspace
    if spec.tokenizer != "bpe":
        raise ConfigError(f"tokenizer {spec.tokenizer!r} has no Hugging Face export (only 'bpe')")
    check_exportable(MODELS.get(spec.model), spec.model_config)  # both before reading any checkpoint
    check_out(args.out)
    loaded = load(spec, workspace, stage=args.stage, checkpoint=args.checkpoint, step=args.step)
    print(f"loaded the {loaded.stage} checkpoint, step {loaded.step} ({loaded.checkpoint})", file=sys.stderr)
    files = export_hf(
        loaded.model, workspace.tokenizer_dir, args.out, tools_head=SYSTEM_PROMPT_HEAD, tool_example=TOOL_EXAMPLE
    )
    print(f"wrote {args.out}: {', '.join(f.name for f in files)}")
    return 0
