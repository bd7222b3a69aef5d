"""The embedded corpus: pretraining text that every machine with Python already has, so nothing needs a network.

- `embedded_code`: the standard library's own `.py` sources (tests, encodings tables and site-packages left out).
- `embedded_prose`: English prose from the same interpreter: the docstrings of each stdlib module (one document per
  module) and the topics of the Python reference manual that ship for `help()` (`pydoc_data/topics.py`).

`prepare()` writes the usual layout (`shard_{i:05d}.parquet`, column `text`, last shard = validation). It is
deterministic on one machine (sorted inputs, a fixed-seed shuffle) and idempotent: `manifest.json` is written last,
atomically, so a directory without a manifest (an interrupted build) is rebuilt from scratch.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import random
import re
import sys
import sysconfig
from pathlib import Path

from nanocode.core.errors import DataError
from nanocode.core.io import write_json
from nanocode.core.kinds import DATA_SOURCES
from nanocode.core.progress import Progress
from nanocode.data import parquet
from nanocode.data.sources import ParquetSource

MANIFEST = "manifest.json"
FORMAT_VERSION = 1  # bump when documents change, so old builds are rebuilt
# Directories of the stdlib that are not ordinary code: test suites and their data, generated codec tables,
# the pydoc topics (prose, used by embedded_prose), third-party packages.
SKIP_DIRS = frozenset(
    {
        "test",
        "tests",
        "idle_test",
        "__pycache__",
        "site-packages",
        "dist-packages",
        "encodings",
        "pydoc_data",
        "__phello__",
    }
)
MIN_FILE_BYTES, MAX_FILE_BYTES = 100, 500_000  # the bounds The Stack v2 Python shards were filtered with
MIN_DOCSTRING_WORDS = 8


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[str]:
    """Relative paths of the stdlib's ordinary `.py` files, sorted."""
    root = root or stdlib_root()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]  # prune: site-packages alone can be 10k files
        for name in filenames:
            if not name.endswith(".py") or name.startswith(("_sysconfigdata", "test_")):
                continue
            path = Path(dirpath, name)
            if path.is_file() and MIN_FILE_BYTES <= path.stat().st_size <= MAX_FILE_BYTES:
                out.append(path.relative_to(root).as_posix())
    return sorted(out)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


class EmbeddedSource(ParquetSource):
    """Base of the locally built corpora: subclasses list document keys and turn one key into a document."""

    def __init__(
        self,
        directory: str | None = None,
        docs_per_shard: int = 1024,
        val_fraction: float = 0.05,
        max_docs: int | None = None,
        max_chars: int | None = None,
        seed: int = 42,
        row_group_size: int = parquet.ROW_GROUP_SIZE,
        max_doc_chars: int | None = None,
    ):
        super().__init__(directory)
        if docs_per_shard < 1 or not 0 < val_fraction < 1:
            raise DataError(f"{self.name}: need docs_per_shard >= 1 and 0 < val_fraction < 1")
        self.docs_per_shard, self.val_fraction, self.seed = docs_per_shard, val_fraction, seed
        self.max_docs, self.max_chars, self.row_group_size = max_docs, max_chars, row_group_size
        # Split long files into chunks of at most this many characters at blank lines. A short debug context
        # (256 tokens) would otherwise crop most of every stdlib file away in packing and see the same file
        # openings again and again; chunks are cut after the train/val split, so no file straddles both.
        self.max_doc_chars = max_doc_chars
        self.root = stdlib_root()

    # -- what subclasses define -------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        """Every candidate document, as sorted keys (file paths, topic names)."""
        raise NotImplementedError

    def document(self, key: str) -> str | None:
        """The text of one candidate, or None to skip it."""
        raise NotImplementedError

    # -- building ---------------------------------------------------------------------------------------------
    def params(self) -> dict:
        """Everything the shards depend on; a manifest with other params is stale."""
        return {
            "format": FORMAT_VERSION,
            "source": self.name,
            "docs_per_shard": self.docs_per_shard,
            "val_fraction": self.val_fraction,
            "max_docs": self.max_docs,
            "max_chars": self.max_chars,
            "seed": self.seed,
            "row_group_size": self.row_group_size,
            "max_doc_chars": self.max_doc_chars,
            "python": sys.version,
            "stdlib": str(self.root),
        }

    def documents(self, *, progress: bool = False) -> list[str]:
        """The corpus in its shuffled order, cut at max_docs documents or once max_chars characters are reached.

        Keys are shuffled before any document is read, so a small cap reads only what it keeps.
        """
        keys = self.keys()
        random.Random(self.seed).shuffle(keys)
        docs, chars = [], 0
        with Progress(len(keys), f"{self.name} documents", unit="file", enabled=progress) as bar:
            for key in keys:
                if (self.max_docs is not None and len(docs) >= self.max_docs) or (
                    self.max_chars is not None and chars >= self.max_chars
                ):
                    break
                text = self.document(key)
                bar.update(1)
                if text and text.strip():
                    docs.append(text)
                    chars += len(text)
        return docs

    def manifest(self) -> dict | None:
        try:
            return json.loads((self.directory / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def is_complete(self) -> bool:
        """A manifest for these params, and exactly its shards on disk."""
        m = self.manifest()
        if m is None or m.get("params") != self.params():
            return False
        on_disk = [p.name for p in parquet.list_shards(self.directory)]
        return on_disk == m.get("shards")

    def prepare(self, *, progress: bool = True) -> None:
        if self.is_complete():
            return
        docs = self.documents(progress=progress)
        if len(docs) < 2:
            raise DataError(f"{self.name}: only {len(docs)} documents under {self.root}; need 2 (train + val)")
        n_val = min(self.docs_per_shard, max(1, round(len(docs) * self.val_fraction)))
        train, val = docs[:-n_val], docs[-n_val:]
        if self.max_doc_chars:
            train = [c for d in train for c in chunk(d, self.max_doc_chars)]
            val = [c for d in val for c in chunk(d, self.max_doc_chars)]
        shards = [train[i : i + self.docs_per_shard] for i in range(0, len(train), self.docs_per_shard)] + [val]
        # Clear the old build first: its manifest goes before anything else, so a crash leaves "incomplete".
        (self.directory / MANIFEST).unlink(missing_ok=True)
        for old in parquet.list_shards(self.directory):
            old.unlink()
        for i, texts in enumerate(shards):
            parquet.write_shard(self.directory / parquet.shard_name(i), texts, row_group_size=self.row_group_size)
        write_json(
            self.directory / MANIFEST,
            {
                "params": self.params(),
                "shards": [parquet.shard_name(i) for i in range(len(shards))],
                "docs": len(docs),
                "chars": sum(map(len, docs)),
                "val_docs": len(val),
                "val_chars": sum(map(len, val)),
            },
        )

    def shard_paths(self, split: str) -> list[Path]:
        if self.manifest() is None:
            raise DataError(
                f"{self.directory / MANIFEST}: missing, the {self.name} build is incomplete "
                f"(run `nanocode data --dataset {self.name}`)"
            )
        return super().shard_paths(split)


@DATA_SOURCES.register("embedded_code")
class EmbeddedCode(EmbeddedSource):
    """Python code that needs no download: the running interpreter's standard-library sources."""

    name = "embedded_code"

    def keys(self) -> list[str]:
        return stdlib_files(self.root)

    def document(self, key: str) -> str | None:
        return _read(self.root / key)


@DATA_SOURCES.register("embedded_prose")
class EmbeddedProse(EmbeddedSource):
    """English prose that needs no download: stdlib docstrings (a document per module) and pydoc's manual topics."""

    name = "embedded_prose"

    def keys(self) -> list[str]:
        return [f"topic:{t}" for t in sorted(_pydoc_topics())] + [f"module:{f}" for f in stdlib_files(self.root)]

    def document(self, key: str) -> str | None:
        kind, _, name = key.partition(":")
        if kind == "topic":
            return _pydoc_topics().get(name)
        source = _read(self.root / name)
        return module_docstrings(source, _module_name(name)) if source else None


def chunk(text: str, max_chars: int) -> list[str]:
    """Split at blank lines into pieces of at most max_chars (a longer paragraph is split at line ends, then hard)."""
    pieces, current = [], ""
    for block in re.split(r"(?<=\n\n)", text):
        while len(block) > max_chars:  # one oversized block: cut at the last newline that fits, else hard
            cut = block.rfind("\n", 0, max_chars) + 1 or max_chars
            if current:
                pieces.append(current)
                current = ""
            pieces.append(block[:cut])
            block = block[cut:]
        if len(current) + len(block) > max_chars and current:
            pieces.append(current)
            current = ""
        current += block
    if current.strip():
        pieces.append(current)
    return [p for p in pieces if p.strip()]


def _module_name(rel_path: str) -> str:
    parts = rel_path[: -len(".py")].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _pydoc_topics() -> dict[str, str]:
    return _topics_in(stdlib_root() / "pydoc_data" / "topics.py")


@functools.lru_cache(maxsize=1)
def _topics_in(path: Path) -> dict[str, str]:
    """The reference-manual topics of `help()`, read from this interpreter's stdlib without importing it."""
    source = _read(path) if path.is_file() else None
    if source is None:
        return {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "topics" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def module_docstrings(source: str, module: str) -> str | None:
    """A module's docstrings in source order as one document: the module's first, then `name` + docstring each.

    Docstrings shorter than MIN_DOCSTRING_WORDS words ("Return self.") are dropped: they teach no prose.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    sections = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                doc = ast.get_docstring(child)
                if doc and len(doc.split()) >= MIN_DOCSTRING_WORDS:
                    sections.append(f"{name}\n{doc}")
                visit(child, f"{name}.")

    doc = ast.get_docstring(tree)
    if doc and len(doc.split()) >= MIN_DOCSTRING_WORDS:
        sections.append(f"{module}\n\n{doc}")
    visit(tree, "")
    return "\n\n".join(sections) if sections else None
