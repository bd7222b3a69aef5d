"""Where a run lives on disk. See WORKSPACE.md for the layout; this class is its single source of truth."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE_DIR = "~/.cache/nanocode"


def base_dir() -> Path:
    """$NANOCODE_BASE_DIR, or ~/.cache/nanocode."""
    return Path(os.environ.get("NANOCODE_BASE_DIR", DEFAULT_BASE_DIR)).expanduser()


@dataclass(frozen=True)
class Workspace:
    """The on-disk workspace of one model tag: shared data under the base dir, everything else under base/tag.

    base/
      base_data/<source>/shard_00000.parquet ...   pretraining shards (last shard = validation)
      sft_data/<dataset>/...                       conversation datasets (JSONL)
      <tag>/tokenizer/                              tokenizer.json, token_bytes.npy, tok_eval.md
      <tag>/<stage>/                                one run per stage: config.gin, metrics.jsonl, samples.jsonl
      <tag>/<stage>/checkpoints/<step>/             orbax checkpoints
      <tag>/report/                                 report.md and plots
    """

    tag: str = "debug"

    @property
    def base(self) -> Path:
        """$NANOCODE_BASE_DIR (or ~/.cache/nanocode): one variable moves the whole workspace, data included."""
        return base_dir()

    def data_dir(self, source: str) -> Path:
        return self.base / "base_data" / source

    def sft_data_dir(self, dataset: str) -> Path:
        return self.base / "sft_data" / dataset

    @property
    def model_dir(self) -> Path:
        return self.base / self.tag

    @property
    def tokenizer_dir(self) -> Path:
        return self.model_dir / "tokenizer"

    def run_dir(self, stage: str) -> Path:
        return self.model_dir / stage

    def checkpoint_dir(self, stage: str) -> Path:
        return self.run_dir(stage) / "checkpoints"

    @property
    def report_dir(self) -> Path:
        return self.model_dir / "report"
