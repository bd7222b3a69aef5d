"""Data sources whose shards are downloaded: FineWeb-EDU (prose) and The Stack v2, Python only (code).

Both are hosted on the Hugging Face hub as `shard_{i:05d}.parquet` (column `text`, 1024-doc row groups, ~250M
characters a shard). `prepare()` fetches shards 0..num_shards-1; as in nanocode, the last local shard is the
validation split, so the validation shard depends on `num_shards` (keep it fixed across a model's stages).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

from nanocode.core.errors import ConfigError, DataError
from nanocode.core.io import write_json
from nanocode.core.kinds import DATA_SOURCES
from nanocode.data import hub, parquet
from nanocode.data.download import DownloadJob, download_many, file_sha256
from nanocode.data.sources import ParquetSource

PARQUET_MAGIC = b"PAR1"
CHECKSUMS = "checksums.json"  # {shard name: sha256} of the shards as downloaded (and fully verified)


def verify_shard(path: str | Path) -> None:
    """The full check of a downloaded shard: magic at both ends, footer, and every row group decoded.

    `parquet.check_shard` reads only the footer; a download resumed onto a wrong prefix can pass it, so a fresh
    download is decoded completely (in arrow, about a second per 100 MB shard) before it may take a final path.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(-4, 2)
        tail = f.read(4)
    if head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
        raise DataError(f"{path}: not a parquet file (bad magic bytes)")
    row_groups = parquet.check_shard(path)
    try:
        file = pq.ParquetFile(path)
        for i in range(row_groups):
            file.read_row_group(i, columns=[parquet.TEXT_COLUMN])
    except Exception as e:
        raise DataError(f"{path}: corrupt row group ({type(e).__name__}: {e})") from e


def check_recorded(path: Path, sha256: str | None) -> None:
    """A present shard against the sha256 recorded when it was downloaded (a byte flipped since, a truncation);
    a shard without a record (downloaded before records were kept) gets the full `verify_shard`."""
    if sha256 is None:
        verify_shard(path)
    elif file_sha256(path) != sha256:
        raise DataError(f"{path}: corrupt (its sha256 differs from the one recorded when it was downloaded)")


class RemoteParquetSource(ParquetSource):
    """Shards downloaded from `base_url` (default: the dataset `REPO` on the Hub at `revision`, $HF_ENDPOINT and
    $HF_TOKEN honoured): shard i is `{base_url}/shard_{i:05d}.parquet`. The revision, and the commit the Hub resolved
    it to, are recorded beside the shards (`revision.json`); shards of another revision are never mixed in.

    `base_url` may instead be a template with `{index}` (and/or `{name}`, the shard file name), for mirrors with
    another layout. `num_shards = -1` means every shard the dataset has.
    """

    name = "remote"
    REPO = ""  # the Hugging Face dataset that hosts the shards
    MAX_SHARDS = 0  # shards the hosted dataset has

    def __init__(
        self,
        num_shards: int = 8,
        base_url: str | None = None,
        directory: str | None = None,
        workers: int = 4,
        retries: int = 5,
        timeout: float = 60.0,
        revision: str = hub.DEFAULT_REVISION,
    ):
        super().__init__(directory)
        self.revision = revision
        self.base_url = base_url or hub.dataset_url(self.REPO, revision=revision)
        self.num_shards = self.MAX_SHARDS if num_shards == -1 else num_shards
        if not 2 <= self.num_shards <= self.MAX_SHARDS:
            raise ConfigError(
                f"{self.name}.num_shards = {num_shards}: need 2..{self.MAX_SHARDS} (train + val), or -1 for all"
            )
        self.workers, self.retries, self.timeout = workers, retries, timeout

    def url(self, index: int) -> str:
        name = parquet.shard_name(index)
        if "{" in self.base_url:
            return self.base_url.format(index=index, name=name)
        return f"{self.base_url.rstrip('/')}/{name}"

    def expected_paths(self) -> list[Path]:
        return [self.directory / parquet.shard_name(i) for i in range(self.num_shards)]

    def prepare(self, *, progress: bool = True) -> None:
        """Download the missing shards. Present ones are checked against the sha256 recorded when they were
        downloaded (`checksums.json`), so a shard corrupted since is caught; a bad one is fetched again."""
        if any(p.exists() for p in self.expected_paths()):
            hub.check_revision(self.directory, self.REPO, self.revision)
        recorded = self.recorded_checksums()
        for path in self.expected_paths():
            if path.exists():
                try:
                    check_recorded(path, recorded.get(path.name))
                except DataError as e:
                    print(f"{e}; downloading it again", file=sys.stderr)
                    path.unlink()
                    recorded.pop(path.name, None)
                    write_json(self.directory / CHECKSUMS, recorded)  # its old record must not outlive it
        jobs = [DownloadJob(self.url(i), path) for i, path in enumerate(self.expected_paths())]
        try:
            download_many(
                jobs,
                workers=self.workers,
                progress=progress,
                desc=f"{self.name} shards",
                retries=self.retries,
                timeout=self.timeout,
                validate=verify_shard,
            )
        finally:  # the shards that did arrive are recorded even when others failed
            fresh = [job.meta for job in jobs if job.meta]
            if fresh:
                hub.record_revision(self.directory, self.REPO, self.revision, [m["commit"] for m in fresh])
            for job in jobs:  # every shard here passed verify_shard: record what it was
                if job.dest.exists() and job.dest.name not in recorded:
                    recorded[job.dest.name] = job.meta.get("sha256") or file_sha256(job.dest)
            write_json(self.directory / CHECKSUMS, dict(sorted(recorded.items())))

    def recorded_checksums(self) -> dict[str, str]:
        """{shard name: sha256} as downloaded; an unreadable record is ignored (the shards are then fully verified)."""
        try:
            record = json.loads((self.directory / CHECKSUMS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(record, dict):
            return {}
        return {k: v for k, v in record.items() if isinstance(k, str) and isinstance(v, str)}

    def shard_paths(self, split: str) -> list[Path]:
        """Exactly shards 0..num_shards-1, whatever else the directory holds, so the split never drifts."""
        paths = self.expected_paths()
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataError(
                f"{missing[0]}: shard missing ({len(paths) - len(missing)} of {self.num_shards} present; "
                f"run `nanocode data --dataset {self.name} --shards {self.num_shards}`)"
            )
        return parquet.split_shards(paths, split, where=self.directory)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_shards={self.num_shards}, revision={self.revision!r}, "
            f"directory={str(self.directory)!r})"
        )


@DATA_SOURCES.register("fineweb_edu")
class FineWebEdu(RemoteParquetSource):
    """FineWeb-EDU 100B, shuffled (karpathy/fineweb-edu-100b-shuffle): educational English web text, 1,823 shards."""

    name = "fineweb_edu"
    REPO = "karpathy/fineweb-edu-100b-shuffle"
    MAX_SHARDS = 1823


@DATA_SOURCES.register("stack_v2_python")
class StackV2Python(RemoteParquetSource):
    """The Stack v2, Python files only, shuffled (smohammadi/the-stack-v2-python-shuffle): 80 shards."""

    name = "stack_v2_python"
    REPO = "smohammadi/the-stack-v2-python-shuffle"
    MAX_SHARDS = 80
