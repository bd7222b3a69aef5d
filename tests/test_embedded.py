"""The embedded corpus: built from this interpreter's stdlib, deterministic, idempotent, and rebuilt when incomplete."""

import ast
import json

import pytest

from nanocode.core.errors import DataError
from nanocode.data import parquet
from nanocode.data.embedded import MANIFEST, EmbeddedCode, EmbeddedProse, module_docstrings, stdlib_files

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
    docs = texts(source, "train") + texts(source, "val")
    assert sum(map(len, docs)) >= 100_000 > sum(map(len, docs[:-1]))  # stops at the document that crosses the cap


def test_chunking_reassembles_and_respects_the_bound():
    from nanocode.data.embedded import chunk

    text = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(200)) + "x" * 3000 + "\n"
    pieces = chunk(text, 500)
    assert max(map(len, pieces)) <= 500
    assert "".join(pieces) == text[:-1]  # only whitespace-only pieces (here the final newline) are dropped
