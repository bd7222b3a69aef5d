"""Download (or build) the pretraining shards of one data source.

    nanocode data --dataset fineweb_edu --shards 300 --workers 8
    nanocode data --dataset stack_v2_python --shards 60
    nanocode data --dataset embedded_code          # built from this interpreter's stdlib, no network
    nanocode data --gin_file experiments/d24_tpu_v6e8.gin   # every source of the experiment's data mixture

Shards land in $NANOCODE_BASE_DIR/base_data/<dataset>/ (or --dir); the last one is the validation split.
Interrupted downloads resume where they stopped; shards already present and valid are kept.
"""

from __future__ import annotations

import argparse
import difflib
import inspect

from nanocode import registry
from nanocode.cli.common import add_config_arguments, load_experiment
from nanocode.core.errors import ConfigError
from nanocode.core.plugins import load_plugins

# nanocode's dataset names -> ours (registry names must be identifiers, so no hyphens)
ALIASES = {"fineweb-edu": "fineweb_edu", "the-stack-v2-dedup": "stack_v2_python"}
# command-line flag -> constructor argument of the data source
FLAGS = {
    "shards": "num_shards",
    "workers": "workers",
    "base_url": "base_url",
    "revision": "revision",
    "dir": "directory",
    "max_docs": "max_docs",
    "max_chars": "max_chars",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        metavar="NAME",
        help="a data_source name (see `nanocode list data_source`); also fineweb-edu, the-stack-v2-dedup",
    )
    parser.add_argument("--shards", type=int, help="shards to download, the last one for validation (-1 = all)")
    parser.add_argument("--workers", type=int, help="parallel downloads")
    parser.add_argument(
        "--base_url",
        help="download from this mirror instead (shard i = BASE_URL/shard_{i:05d}.parquet; $HF_ENDPOINT also works)",
    )
    parser.add_argument(
        "--revision", help="the dataset's revision on the Hub: a branch, tag or commit id (default: main)"
    )
    parser.add_argument("--dir", help="shard directory (default: $NANOCODE_BASE_DIR/base_data/<dataset>)")
    parser.add_argument("--max_docs", type=int, help="built sources: keep at most this many documents")
    parser.add_argument("--max_chars", type=int, help="built sources: stop after about this many characters")
    add_config_arguments(parser)  # --gin_file: prepare the experiment's sources (as configured there) instead


def resolve_name(name: str) -> str:
    """A registry name for `name` (aliases and hyphens accepted), or a one-line error listing the known ones."""
    known = registry.names("data_source")
    for candidate in (ALIASES.get(name), name, name.replace("-", "_")):
        if candidate in known:
            return candidate
    close = difflib.get_close_matches(name, known + list(ALIASES), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    aliases = ", ".join(f"{a} = {b}" for a, b in ALIASES.items())
    raise ConfigError(f"unknown dataset {name!r}{hint} (known: {', '.join(known)}; aliases: {aliases})")


def build_source(name: str, args: argparse.Namespace):
    cls = registry.get("data_source", name)
    params = inspect.signature(cls).parameters
    kwargs = {}
    for flag, param in FLAGS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if param not in params:
            raise ConfigError(f"--{flag} does not apply to dataset {name!r} (its options: {', '.join(params)})")
        kwargs[param] = value
    needed = [p for p, spec in params.items() if spec.default is inspect.Parameter.empty and p not in kwargs]
    if needed:
        flags = {v: k for k, v in FLAGS.items()}
        raise ConfigError(f"dataset {name!r} needs " + ", ".join(f"--{flags.get(p, p)}" for p in needed))
    return cls(**kwargs)


def run(args: argparse.Namespace) -> int:
    if bool(args.dataset) == bool(args.gin_file):
        raise ConfigError("give either --dataset NAME (one source) or --gin_file FILE (the experiment's sources)")
    if args.gin_file:
        given = [f"--{flag}" for flag in FLAGS if getattr(args, flag, None) is not None]
        if given:
            raise ConfigError(f"{', '.join(given)}: set these in the gin file when preparing an experiment's sources")
        sources = dict(load_experiment(args).data.sources)
    else:
        registry.load_builtins()
        load_plugins(args.plugin)
        name = resolve_name(args.dataset)
        sources = {name: build_source(name, args)}
    for name, source in sources.items():
        print(f"{name}: preparing shards in {source.directory}")
        source.prepare(progress=True)
        train, val = source.shard_paths("train"), source.shard_paths("val")
        size = sum(p.stat().st_size for p in train + val)
        print(f"{name}: {len(train)} train + {len(val)} val shards ({size / 1e6:,.1f} MB) in {source.directory}")
    return 0
