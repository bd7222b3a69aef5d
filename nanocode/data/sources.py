"""Data sources: documents in local parquet shards under `$NANOCODE_BASE_DIR/base_data/<name>/`.

`ParquetSource` is the base every source extends: remote sources download their shards in `prepare()`
(nanocode.data.remote), the embedded corpus builds them from local text (nanocode.data.embedded).
"""

from __future__ import annotations

from pathlib import Path

from nanocode.core.errors import DataError
from nanocode.core.interfaces import DataSource
from nanocode.core.kinds import DATA_SOURCES
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
        _check_contiguous(paths)
        return parquet.split_shards(paths, split, where=self.directory)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.directory)!r})"


def _check_contiguous(paths: list[Path]) -> None:
    """Shards must be numbered 0..n-1: a gap means an interrupted download, and silently less data."""
    for expected, path in enumerate(paths):
        if path.name != parquet.shard_name(expected):
            raise DataError(
                f"{path.parent / parquet.shard_name(expected)}: shard missing ({len(paths)} shards present, "
                f"next is {path.name}); finish the download or remove the later shards"
            )


@DATA_SOURCES.register("parquet_dir")
class ParquetDir(ParquetSource):
    """Your own shards: a directory of `shard_{i:05d}.parquet` files (column `text`), the last one for validation."""

    def __init__(self, directory: str, name: str | None = None):
        super().__init__(directory)
        self.name = name or Path(directory).expanduser().name
