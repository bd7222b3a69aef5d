"""The embedded corpus: built from this interpreter's stdlib, deterministic, idempotent, and rebuilt when incomplete."""

import ast
import json

import pytest

from nanocode.core.errors import DataError
from nanocode.data import parquet
from nanocode.data.embedded import (
    MANIFEST,
    EmbeddedCode,
    EmbeddedProse,
    module_docstrings,
    stdlib_files,
)

SPLITS = ("train", "val")
SMALL = dict(max_docs=40, docs_per_shard=16, val_fraction=0.1)  # 36 train docs in 3 shards + 4 val docs


def texts(source, split):
    return list(parquet.iter_texts(source.shard_paths(split)))


@pytest.mark.parametrize("cls", [EmbeddedCode, EmbeddedProse])
def test_build_is_deterministic_with_a_validation_shard_last(cls, tmp_path):
    a, b = cls(str(tmp_path / "a"), **SMALL), cls(str(tmp_path / "b"), **SMALL)
    a.prepare(progress=False)
    b.prepare(progress=False)
    assert [p.name for p in a.shard_paths("train")] == [
        "shard_00000.parquet",
        "shard_00001.parquet",
        "shard_00002.parquet",
    ]
    assert [p.name for p in a.shard_paths("val")] == ["shard_00003.parquet"]
    assert texts(a, "train") == texts(b, "train") and texts(a, "val") == texts(b, "val")
    assert len(texts(a, "train")) == 36 and len(texts(a, "val")) == 4
    assert not set(texts(a, "train")) & set(texts(a, "val"))  # held out
    manifest = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert manifest["docs"] == 40 and manifest["chars"] == sum(map(len, texts(a, "train") + texts(a, "val")))


def test_code_documents_are_python_and_prose_documents_are_english(tmp_path):
    code, prose = EmbeddedCode(str(tmp_path / "c"), **SMALL), EmbeddedProse(str(tmp_path / "p"), **SMALL)
    code.prepare(progress=False)
    prose.prepare(progress=False)
    for text in texts(code, "train") + texts(code, "val"):
        ast.parse(text)  # every code document is a whole, valid Python module
    words = " ".join(texts(prose, "train")).split()
    assert len(words) > 2000
    common = sum(w.lower() in {"the", "a", "of", "to", "is", "and", "in"} for w in words)
    assert common / len(words) > 0.08  # English prose, not code


def test_stdlib_listing_leaves_out_tests_and_packages():
    files = stdlib_files()
    assert "argparse.py" in files and "json/decoder.py" in files
    assert not [f for f in files if f.startswith(("test/", "site-packages/", "encodings/")) or "/tests/" in f]
    assert files == sorted(files)


def test_module_docstrings_document():
    source = '''"""A module that explains itself in one sentence of eight words or more."""
def f():
    """Short."""
def g():
    """Return the answer to the question, after thinking it over for a while."""
class C:
    def m(self):
        """Methods are named after their class so the prose keeps its context."""
'''
    doc = module_docstrings(source, "pkg.mod")
    assert doc.startswith("pkg.mod\n\nA module that explains")
    assert "g\nReturn the answer" in doc and "C.m\nMethods are named" in doc and "Short." not in doc
    assert module_docstrings("def broken(:", "x") is None


def test_prepare_is_idempotent(tmp_path):
    source = EmbeddedProse(str(tmp_path / "p"), **SMALL)
    source.prepare(progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.joinpath("p").iterdir()}
    source.prepare(progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.joinpath("p").iterdir()} == stamps


def test_interrupted_build_is_rebuilt_identically(tmp_path):
    source = EmbeddedCode(str(tmp_path / "c"), **SMALL)
    source.prepare(progress=False)
    train, val = texts(source, "train"), texts(source, "val")
    # Simulate a crash mid-build: a shard written, others not, no manifest (plus a stale shard from elsewhere).
    (tmp_path / "c" / MANIFEST).unlink()
    for path in parquet.list_shards(tmp_path / "c")[1:]:
        path.unlink()
    parquet.write_shard(tmp_path / "c" / "shard_00007.parquet", ["stale"])
    with pytest.raises(DataError, match=r"manifest\.json: missing, the embedded_code build is incomplete"):
        source.shard_paths("train")
    source.prepare(progress=False)
    assert texts(source, "train") == train and texts(source, "val") == val
    assert len(parquet.list_shards(tmp_path / "c")) == 4


def test_changed_parameters_rebuild(tmp_path):
    EmbeddedCode(str(tmp_path / "c"), **SMALL).prepare(progress=False)
    bigger = EmbeddedCode(str(tmp_path / "c"), **{**SMALL, "max_docs": 50})
    assert not bigger.is_complete()
    bigger.prepare(progress=False)
    assert len(texts(bigger, "train")) + len(texts(bigger, "val")) == 50


def test_max_chars_caps_the_corpus(tmp_path):
    source = EmbeddedCode(str(tmp_path / "c"), max_chars=100_000, docs_per_shard=8)
    source.prepare(progress=False)
    read = [doc.text for doc in source.documents()]  # in reading order: train and validation interleaved
    assert sum(map(len, read)) >= 100_000 > sum(map(len, read[:-1]))  # stops at the document that crosses the cap
    assert sorted(texts(source, "train") + texts(source, "val")) == sorted(read)


def test_chunking_reassembles_and_respects_the_bound():
    from nanocode.data.embedded import chunk

    text = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(200)) + "x" * 3000 + "\n"
    pieces = chunk(text, 500)
    assert max(map(len, pieces)) <= 500
    assert "".join(pieces) == text[:-1]  # only whitespace-only pieces (here the final newline) are dropped


def _on_modules(cls, modules, topics=()):
    """The source over these stdlib modules (and pydoc topics) alone: both sources then cover the same modules."""

    class OnModules(cls):
        def keys(self):
            return [k for k in super().keys() if k.removeprefix("module:") in modules or k in topics]

    return OnModules


def test_a_module_is_validation_in_both_sources_or_in_neither(tmp_path):
    """A module's source contains its docstrings: validation of one source must not be training text of the other."""
    files = stdlib_files()[::5]  # ~120 modules from all over the stdlib
    modules = set(files)
    topics = {"topic:assert", "topic:for", "topic:if", "topic:while", "topic:with", "topic:yield"}
    params = dict(val_fraction=0.2, docs_per_shard=32, seed=7)
    code = _on_modules(EmbeddedCode, modules)(str(tmp_path / "c"), **params)
    prose = _on_modules(EmbeddedProse, modules, topics)(str(tmp_path / "p"), **params)
    code.prepare(progress=False)
    prose.prepare(progress=False)

    def units(source, split):
        """The modules (or topics) whose documents are in this split: each document's text names its origin."""
        origin = {}
        for key in source.keys():
            text = source.document(key)
            if text:
                origin.setdefault(text, set()).add(key.removeprefix("module:"))
        found = [origin[text] for text in texts(source, split)]
        return set().union(*(u for u in found if len(u) == 1))  # identical files: origin unknown, left out

    code_train, code_val, prose_train, prose_val = (units(s, split) for s in (code, prose) for split in SPLITS)
    assert not code_val & prose_train, "modules whose source is code validation but whose docstrings prose trains on"
    assert not prose_val & code_train, "modules whose docstrings are prose validation but whose source code trains on"
    assert code_val & prose_val and code_train & prose_train  # the two sources do share modules, in both splits
    assert 0.1 < len(code_val) / len(code_train | code_val) < 0.3  # about val_fraction of the modules
    assert sorted(code.manifest()["val_keys"]) == sorted(code_val)  # the manifest names what it held out
    assert {k.removeprefix("module:") for k in prose.manifest()["val_keys"]} == prose_val


def test_the_split_of_a_module_is_a_stable_hash_of_its_path():
    """The same modules are held out in every process and on every machine (no salted hash()); a larger fraction
    holds out a superset. Changing this function changes every build: bump FORMAT_VERSION with it."""
    from nanocode.data.embedded import held_out

    units = ["argparse.py", "json/decoder.py", "json/__init__.py", "email/message.py", "random.py", "topic:with"]
    units += ["re/__init__.py", "csv.py"]
    assert [u for u in units if held_out(u, 0.3)] == ["json/decoder.py", "topic:with", "re/__init__.py"]
    assert [u for u in units if held_out(u, 0.2)] == ["topic:with", "re/__init__.py"]
    assert [u for u in units if held_out(u, 0.6)] == [u for u in units if u not in ("argparse.py", "csv.py")]


def test_a_build_of_an_older_format_is_rebuilt(tmp_path):
    source = EmbeddedCode(str(tmp_path / "c"), **SMALL)
    source.prepare(progress=False)
    manifest = json.loads((tmp_path / "c" / MANIFEST).read_text())
    manifest["params"]["format"] -= 1  # a build from before the split by module
    (tmp_path / "c" / MANIFEST).write_text(json.dumps(manifest))
    assert not source.is_complete()
    source.prepare(progress=False)
    assert source.is_complete() and "val_keys" in source.manifest()


def test_a_build_made_with_other_parameters_is_refused_not_read(tmp_path):
    """A gin file that changes a source's recipe after its build: training must not read the stale shards."""
    EmbeddedCode(str(tmp_path / "c"), **SMALL).prepare(progress=False)
    changed = EmbeddedCode(str(tmp_path / "c"), **{**SMALL, "seed": 7})
    with pytest.raises(DataError, match=r"c/manifest\.json: the embedded_code shards were built with other parameters"):
        changed.shard_paths("train")
    changed.prepare(progress=False)
    assert changed.shard_paths("train")
