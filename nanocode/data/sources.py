"""Data sources: documents in local parquet shards under `$NANOCODE_BASE_DIR/base_data/<name>/`.

`ParquetSource` is the base every source extends: remote sources download their shards in `prepare()`
(nanocode.data.remote), the embedded corpus builds them from local text (nanocode.data.embedded).
"""

from __future__ import annotations

from pathlib import Path

from nanocode.core.errors import DataError
from nanocode.core.interfaces import DataSource
from nanocode.core.workspace import Workspace
from nanocode.data import parquet


class ParquetSource(DataSource):
    """Shards `shard_{i:05d}.parquet` in one directory; the last one is the validation split."""

    name = "parquet"

    def __init__(self, directory: str | None = None):
        self._directory = Path(directory).expanduser() if directory else None

    @property
    def directory(self) -> Path:
        return self._directory or Workspace().data_dir(self.name)

    def prepare(self, *, progress: bool = True) -> None:
        """A plain directory of shards has nothing to fetch: it only has to be there."""
        self.shard_paths("train")

    def shard_paths(self, split: str) -> list[Path]:
        paths = parquet.list_shards(self.directory)
        if not paths:
            raise DataError(f"{self.directory}: no shards for source {self.name!r} (run `nanocode data` first?)")
        return parquet.split_shards(paths, split, where=self.directory)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.directory)!r})"
