"""Parquet shards of documents: nanocode's layout (`shard_{i:05d}.parquet`, column `text`, ~1024-doc row groups).

The last shard of a source is its validation split. Writes are atomic; reads check integrity and name the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nanocode.core.errors import DataError
from nanocode.core.io import atomic_path

ROW_GROUP_SIZE = 1024
TEXT_COLUMN = "text"


def _reason(e: Exception) -> str:
    """pyarrow's message on one line (its thrift errors span several)."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


def write_shard(path: str | Path, texts: Iterable[str], row_group_size: int = ROW_GROUP_SIZE) -> None:
    """Write documents as one shard, atomically (zstd, row groups of `row_group_size` documents)."""
    table = pa.table({TEXT_COLUMN: pa.array(list(texts), type=pa.string())})
    if table.num_rows == 0:
        raise DataError(f"{path}: refusing to write an empty shard")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")


def check_shard(path: str | Path) -> int:
    """Validate a shard's footer, schema and row-group metadata; return its number of row groups."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: shard missing")
    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as e:
        raise DataError(f"{path}: not a readable parquet file ({_reason(e)})") from e
    if TEXT_COLUMN not in meta.schema.names:
        raise DataError(f"{path}: no '{TEXT_COLUMN}' column (columns: {', '.join(meta.schema.names)})")
    kind = meta.schema.to_arrow_schema().field(TEXT_COLUMN).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{path}: column '{TEXT_COLUMN}' holds {kind}, not strings")
    if meta.num_row_groups == 0 or meta.num_rows == 0:
        raise DataError(f"{path}: shard has no documents")
    return meta.num_row_groups


def num_row_groups(path: str | Path) -> int:
    return check_shard(path)


def read_row_group(path: str | Path, index: int) -> list[str]:
    """The documents of one row group."""
    try:
        table = pq.ParquetFile(path).read_row_group(index, columns=[TEXT_COLUMN])
    except Exception as e:
        raise DataError(f"{path}: row group {index} unreadable ({_reason(e)})") from e
    column = table.column(TEXT_COLUMN)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise DataError(f"{path}: row group {index}: column '{TEXT_COLUMN}' holds {column.type}, not strings")
    if column.null_count:
        raise DataError(f"{path}: row group {index} has {column.null_count} null documents")
    return column.to_pylist()


def iter_texts(paths: Iterable[str | Path]) -> Iterator[str]:
    """Every document of the given shards, in order."""
    for path in paths:
        for rg in range(check_shard(path)):
            yield from read_row_group(path, rg)


def list_shards(directory: str | Path) -> list[Path]:
    """The shard files in a directory, sorted by index (temporary and partial files are ignored)."""
    directory = Path(directory)
    return sorted(p for p in directory.glob("shard_*.parquet") if p.name[len("shard_") : -len(".parquet")].isdigit())


def split_shards(paths: list[Path], split: str, where: str | Path = "") -> list[Path]:
    """Train = all but the last shard, val = the last one. Needs at least two shards."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    if len(paths) < 2:
        raise DataError(f"{where}: need at least 2 shards (train + val), found {len(paths)}")
    return paths[:-1] if split == "train" else paths[-1:]
