"""The embedded corpus: pretraining text that every machine with Python already has, so nothing needs a network.

- `embedded_code`: the standard library's own `.py` sources (tests, encodings tables and site-packages left out).
- `embedded_prose`: English prose from the same interpreter: the docstrings of each stdlib module (one document per
  module) and the topics of the Python reference manual that ship for `help()` (`pydoc_data/topics.py`).

`prepare()` writes the usual layout (`shard_{i:05d}.parquet`, column `text`, last shard = validation). It is
deterministic on one machine (sorted inputs, a fixed-seed shuffle) and idempotent: `manifest.json` is written last,
atomically, so a directory without a manifest (an interrupted build) is rebuilt from scratch.

The two sources overlap: a module's source contains its docstrings verbatim. So the train/validation split is made
per module, the same for both: `held_out()` sends a module to validation when a stable hash of its path (not
Python's salted `hash()`) falls below `val_fraction`, and then both its source (embedded_code) and its docstrings
(embedded_prose) are validation documents, whatever the seeds and caps of either build. Sources with different
`val_fraction`s hold out nested sets of modules: only the smaller one's validation stays unseen by the other.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import random
import re
import sys
import sysconfig
from pathlib import Path
from typing import NamedTuple

from nanocode.core.errors import DataError
from nanocode.core.io import write_json
from nanocode.core.kinds import DATA_SOURCES
from nanocode.core.progress import Progress
from nanocode.data import parquet
from nanocode.data.download import file_sha256
from nanocode.data.sources import ParquetSource

MANIFEST = "manifest.json"
FORMAT_VERSION = 2  # bump when documents or their split change, so old builds are rebuilt (2: split by module)
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


def held_out(unit: str, val_fraction: float) -> bool:
    """Whether a split unit (a module's relative path, `topic:<name>`) is validation data, on every machine and run.

    A stable hash of the unit mapped to [0, 1) and compared with val_fraction: about that share of units is held out,
    and a larger fraction holds out a superset.
    """
    digest = hashlib.sha256(unit.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


class Document(NamedTuple):
    key: str
    text: str
    val: bool  # held out for validation


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

    def split_unit(self, key: str) -> str:
        """What decides a key's split: the stdlib module it comes from (its relative path), shared across sources."""
        return key

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

    def documents(self, *, progress: bool = False) -> list[Document]:
        """The corpus in reading order, cut at max_docs documents or once max_chars characters are reached.

        A key's split is fixed by its module (`held_out`), never by this build. Keys are shuffled with the seed,
        then drawn from the two splits interleaved so that after n documents max(1, round(n * val_fraction)) are
        validation ones (at most docs_per_shard: the validation split is one shard), so a capped build holds out
        val_fraction of its documents. Once one split runs out the other goes on alone: an uncapped build holds
        every document, the validation ones being exactly those of the held-out modules. Keys are shuffled before
        any document is read, so a small cap reads only what it keeps.
        """
        keys = self.keys()
        random.Random(self.seed).shuffle(keys)
        pools = {False: [], True: []}
        for key in keys:
            pools[held_out(self.split_unit(key), self.val_fraction)].append(key)
        pending = {val: iter(pool) for val, pool in pools.items()}
        docs: list[Document] = []
        n_val = chars = 0
        with Progress(len(keys), f"{self.name} documents", unit="file", enabled=progress) as bar:

            def draw(val: bool) -> Document | None:
                for key in pending[val]:
                    text = self.document(key)
                    bar.update(1)
                    if text and text.strip():
                        return Document(key, text, val)
                del pending[val]
                return None

            while pending:
                if (self.max_docs is not None and len(docs) >= self.max_docs) or (
                    self.max_chars is not None and chars >= self.max_chars
                ):
                    break
                if n_val >= self.docs_per_shard:
                    pending.pop(True, None)  # the validation shard is full: its other modules are left out
                want_val = n_val < max(1, round((len(docs) + 1) * self.val_fraction))
                for val in (want_val, not want_val):
                    doc = draw(val) if val in pending else None
                    if doc is not None:
                        docs.append(doc)
                        n_val += doc.val
                        chars += len(doc.text)
                        break
        return docs

    def manifest(self) -> dict | None:
        """The build's manifest; None when missing or unreadable (either way the build is redone)."""
        try:
            m = json.loads((self.directory / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return m if isinstance(m, dict) else None

    def is_complete(self) -> bool:
        """A manifest for these params, and exactly its shards on disk, each with the sha256 it was written with."""
        return self._incomplete() is None

    def _incomplete(self) -> str | None:
        """Why the build on disk cannot be used as is (None: it can)."""
        m = self.manifest()
        if m is None or m.get("params") != self.params():
            return "built with other parameters"
        on_disk = [p.name for p in parquet.list_shards(self.directory)]
        if on_disk != m.get("shards"):
            return "its shards are not the ones its manifest lists"
        checksums = m.get("sha256")
        if not isinstance(checksums, dict):
            return "its manifest records no checksums (an older build)"
        for name in on_disk:
            if checksums.get(name) != file_sha256(self.directory / name):
                return f"{self.directory / name}: corrupt (its sha256 differs from the manifest's)"
        return None

    def prepare(self, *, progress: bool = True) -> None:
        reason = self._incomplete()
        if reason is None:
            return
        if self.manifest() is not None:  # a finished build that no longer holds: say why it is rebuilt
            print(f"{self.name}: rebuilding ({reason})", file=sys.stderr)
        docs = self.documents(progress=progress)
        train, val = [d.text for d in docs if not d.val], [d.text for d in docs if d.val]
        if not train or not val:
            raise DataError(
                f"{self.name}: {len(train)} train and {len(val)} validation documents under {self.root}; "
                "need at least one of each"
            )
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
                "sha256": {
                    parquet.shard_name(i): file_sha256(self.directory / parquet.shard_name(i))
                    for i in range(len(shards))
                },
                "docs": len(docs),
                "chars": sum(len(d.text) for d in docs),
                "val_docs": len(val),
                "val_chars": sum(map(len, val)),
                "val_keys": sorted(d.key for d in docs if d.val),
            },
        )

    def shard_paths(self, split: str) -> list[Path]:
        if self.manifest() is None:
            state = "unreadable" if (self.directory / MANIFEST).exists() else "missing"
            raise DataError(
                f"{self.directory / MANIFEST}: {state}, the {self.name} build is incomplete "
                f"(run `nanocode data --dataset {self.name}`)"
            )
        if self.manifest().get("params") != self.params():  # e.g. a gin file changed the recipe after the build
            raise DataError(
                f"{self.directory / MANIFEST}: the {self.name} shards were built with other parameters than the "
                f"experiment's (run `nanocode data` with its gin file to rebuild them)"
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

    def split_unit(self, key: str) -> str:
        """A module's docstrings go where its source goes (embedded_code's key); a topic is a unit of its own."""
        kind, _, name = key.partition(":")
        return name if kind == "module" else key

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
