"""List the registered components, by kind, with one line of description each."""

from __future__ import annotations

import argparse

from nanocode import registry
from nanocode.cli.common import add_config_arguments, load_experiment
from nanocode.core.errors import ConfigError
from nanocode.core.plugins import load_plugins
from nanocode.core.registry import UnknownNameError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", help="only this kind (e.g. preference_objective)")
    add_config_arguments(parser)  # --gin_file: also what the experiment's `import` lines register


def run(args: argparse.Namespace) -> int:
    if args.gin_file:
        load_experiment(args)  # plugins first, then the files: their `import` lines register components too
    else:
        registry.load_builtins()
        load_plugins(args.plugin)
    kinds = [args.kind] if args.kind else registry.kinds()
    for k in kinds:
        try:
            reg = registry.kind(k)
        except UnknownNameError as e:
            raise ConfigError(str(e)) from None
        print(f"{k}: {reg.doc}")
        for entry in reg.entries():
            print(f"  {entry.name:<24} {entry.doc}")
        if not reg.names():
            print("  (none registered)")
    return 0
