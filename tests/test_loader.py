"""The packed loader on real shards with the real BPE tokenizer: exact resume, process slices, row contents,
validation loaders, and one-line errors for bad data (raised from the producer thread too)."""

import itertools
import json
import random
import sysconfig
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nanocode.core.errors import DataError
from nanocode.data import parquet
from nanocode.data.loader import PackedLoader, validation_loaders
from nanocode.data.mixture import WebCodeMixture, WeightedMixture
from nanocode.data.packed_stream import PackedStream
from nanocode.data.sources import ParquetSource
from tests.helpers import small_tokenizer

SEQ_LEN, BATCH = 64, 4


def corpus_text(kind: str) -> str:
    if kind == "web":
        from pydoc_data.topics import topics

        return "\n\n".join(topics[k] for k in sorted(topics))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return "".join(p.read_text(encoding="utf-8") for p in sorted(stdlib.glob("*.py"))[:40])


def make_docs(kind: str, n: int, seed: int = 0) -> list[str]:
    """n unique documents of 20..600 chars cut from real prose (pydoc topics) or code (stdlib sources)."""
    text, rng = corpus_text(kind), random.Random(seed)
    docs = []
    for i in range(n):
        size = rng.randint(20, 600)
        start = rng.randrange(len(text) - size)
        docs.append(f"{kind} {i}: {text[start : start + size]}")
    return docs


def write_source(directory: Path, train: list[str], val: list[str], train_shards: int = 2, rg: int = 4):
    for i in range(train_shards):
        parquet.write_shard(directory / parquet.shard_name(i), train[i::train_shards], row_group_size=rg)
    parquet.write_shard(directory / parquet.shard_name(train_shards), val, row_group_size=rg)
    return ParquetSource(str(directory))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader_data")
    docs = {kind: make_docs(kind, 72, seed=i) for i, kind in enumerate(("web", "code"))}
    sources = {kind: write_source(root / kind, d[:60], d[60:]) for kind, d in docs.items()}
    return {"docs": docs, "mixture": WebCodeMixture(sources["web"], sources["code"], code_weight=0.3)}


@pytest.fixture(scope="module")
def tok():
    return small_tokenizer(512)


def text_of(mixture, locator) -> str:
    name, shard, group, row = locator
    return parquet.read_row_group(mixture.sources[name].shard_paths("train")[shard], group)[row]


# ---------------------------------------------------------------------------------------------------- resume
def test_restored_loader_yields_exactly_the_next_100_batches(data, tok):
    kw = dict(batch_size=BATCH, seq_len=SEQ_LEN, seed=3, buffer_docs=10, prefetch=3)
    with PackedLoader(data["mixture"], tok, **kw) as original:
        first = [next(original) for _ in range(9)]
        state = json.loads(json.dumps(original.state()))  # what a checkpoint stores
        expected = [next(original) for _ in range(100)]
        end_state = original.state()
    # taken mid-epoch, mid-row-group, each buffer full but for its last document placed (the thread was ahead)
    assert state["step"] == 9 and len(state["buffer"]) == 2 * (10 - 1)
    assert any(cursor is not None for cursor in state["feeding"].values())
    assert all(s["epoch"] == 0 for s in state["sources"].values())
    assert all(s["epoch"] >= 1 for s in end_state["sources"].values())  # the 100 batches cross epochs
    assert len(json.dumps(state)) < 2000  # locators, not tokens

    with PackedLoader(data["mixture"], tok, **kw, state=state) as restored:
        got = [next(restored) for _ in range(100)]
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)

    # restore() on a running loader rewinds it; the threadless core gives the same batches
    original = PackedLoader(data["mixture"], tok, **kw)
    next(original)
    original.restore(state)
    np.testing.assert_array_equal(next(original), expected[0])
    original.close()
    stream = PackedStream(data["mixture"], tok, **{k: v for k, v in kw.items() if k != "prefetch"})
    for a, b in zip(first + expected, stream):
        np.testing.assert_array_equal(a, b)


def test_another_seed_gives_other_batches_and_a_foreign_state_is_refused(data, tok):
    kw = dict(batch_size=BATCH, seq_len=SEQ_LEN, buffer_docs=10)
    a, b = PackedStream(data["mixture"], tok, seed=0, **kw), PackedStream(data["mixture"], tok, seed=1, **kw)
    assert not np.array_equal(next(a), next(b))
    with pytest.raises(DataError, match=r"saved with process=\[0, 1\], this loader has process=\[1, 2\]"):
        PackedLoader(data["mixture"], tok, process_index=1, process_count=2, **kw, state=a.state())
    with pytest.raises(DataError, match="seed=0"):
        b.restore(a.state())


# ---------------------------------------------------------------------------------------------------- contents
def test_rows_are_bos_aligned_prefixes_of_the_mixture_documents(data, tok):
    mixture, row_len = data["mixture"], SEQ_LEN + 1
    with PackedLoader(mixture, tok, batch_size=BATCH, seq_len=SEQ_LEN, buffer_docs=10) as loader:
        for batch in itertools.islice(loader, 30):
            info = loader.last_info
            assert batch.dtype == np.int32 and batch.shape == (BATCH, row_len)
            assert (batch[:, 0] == tok.bos_id).all()
            flat, pos = batch.reshape(-1), 0
            for locator, used in info.placed:
                if pos % row_len == 0:
                    assert flat[pos] == tok.bos_id
                assert (pos % row_len) + used <= row_len  # a document never spills into the next row
                expected = tok.encode(text_of(mixture, locator), bos=True)[:used]
                np.testing.assert_array_equal(flat[pos : pos + used], expected)
                pos += used
            assert pos == batch.size
            assert sum(info.source_tokens.values()) == batch.size


def test_two_processes_read_disjoint_slices_that_cover_the_train_split(data, tok):
    mixture = data["mixture"]
    texts = []
    for p in range(2):
        stream = PackedStream(
            mixture, tok, batch_size=BATCH, seq_len=SEQ_LEN, buffer_docs=10, process_index=p, process_count=2
        )
        entered = set()
        # Until each source has drawn its second epoch's first row group, so all of epoch 0 entered the buffer.
        while not all(s["epoch"] >= 1 and s["position"] >= 1 for s in stream.state()["sources"].values()):
            next(stream)
            entered |= {loc for loc, _ in stream.last_info.placed}
        entered |= {tuple(loc) for loc in stream.state()["buffer"]}
        texts.append({text_of(mixture, loc) for loc in entered})
    train = {d for docs in data["docs"].values() for d in docs[:60]}
    assert not texts[0] & texts[1]
    assert texts[0] | texts[1] == train
    assert 0.3 < len(texts[0]) / len(train) < 0.7


# ---------------------------------------------------------------------------------------------------- validation
def test_validation_loaders_are_finite_per_source_and_deterministic(data, tok):
    loaders = validation_loaders(data["mixture"], tok, batch_size=2, seq_len=SEQ_LEN, buffer_docs=4)
    assert list(loaders) == ["web", "code"]
    counts = {}
    for name, loader in loaders.items():
        batches, infos = [], []
        for batch in loader:
            batches.append(batch)
            infos.append(loader.last_info)
        assert batches and next(loader, None) is None
        assert all(i.source_tokens[name] == batch.size for i, batch in zip(infos, batches))
        val_texts = set(data["docs"][name][60:])
        val_paths = data["mixture"].sources[name].shard_paths("val")
        for info in infos:
            for (_, shard, group, row), _ in info.placed:
                assert parquet.read_row_group(val_paths[shard], group)[row] in val_texts
        val_tokens = sum(len(tok.encode(t, bos=True)) for t in val_texts)
        assert sum(b.size for b in batches) <= val_tokens
        counts[name] = len(batches)
        again = validation_loaders(data["mixture"], tok, batch_size=2, seq_len=SEQ_LEN, buffer_docs=4)[name]
        for a, b in zip(batches, again, strict=True):
            np.testing.assert_array_equal(a, b)
    capped = validation_loaders(data["mixture"], tok, batch_size=2, seq_len=SEQ_LEN, max_batches=2)
    assert [len(list(loader)) for loader in capped.values()] == [2, 2]


# ---------------------------------------------------------------------------------------------------- errors
def one_line_error(excinfo, path) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message
    return message


def test_empty_source_is_a_one_line_error_naming_the_directory_or_file(tmp_path, tok):
    good = write_source(tmp_path / "good", make_docs("web", 20), make_docs("web", 4, seed=9))
    (tmp_path / "empty").mkdir()
    kw = dict(batch_size=BATCH, seq_len=SEQ_LEN)
    with pytest.raises(DataError) as e:
        PackedLoader(WeightedMixture({"w": good, "e": ParquetSource(str(tmp_path / "empty"))}, {"w": 1}), tok, **kw)
    one_line_error(e, tmp_path / "empty")

    no_rows = tmp_path / "no_rows"
    no_rows.mkdir()
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), no_rows / parquet.shard_name(0))
    parquet.write_shard(no_rows / parquet.shard_name(1), ["val"])
    with pytest.raises(DataError) as e:
        PackedLoader(WeightedMixture({"n": ParquetSource(str(no_rows))}, {"n": 1}), tok, **kw)
    assert "no documents" in one_line_error(e, no_rows / parquet.shard_name(0))

    with pytest.raises(DataError) as e:  # one val row group cannot be split between two processes
        validation_loaders(WeightedMixture({"w": good}, {"w": 1}), tok, 2, SEQ_LEN, process_index=1, process_count=2)
    assert "too few" in one_line_error(e, good.shard_paths("val")[0])


def test_corrupt_shards_are_one_line_errors_naming_the_file_even_from_the_thread(tmp_path, tok):
    kw = dict(batch_size=BATCH, seq_len=SEQ_LEN)
    source = write_source(tmp_path / "src", make_docs("code", 24), make_docs("code", 4, seed=5), train_shards=1)
    shard = source.shard_paths("train")[0]
    mixture = WeightedMixture({"c": source}, {"c": 1})
    intact = shard.read_bytes()

    # The data pages of every row group overwritten, footer intact: found only when the thread reads them.
    meta, data = pq.ParquetFile(shard).metadata, bytearray(intact)
    for g in range(meta.num_row_groups):
        column = meta.row_group(g).column(0)
        start = column.dictionary_page_offset or column.data_page_offset
        data[start : start + column.total_compressed_size] = b"\xab" * column.total_compressed_size
    shard.write_bytes(bytes(data))
    loader = PackedLoader(mixture, tok, **kw)
    with pytest.raises(DataError) as e:
        next(loader)
    assert "unreadable" in one_line_error(e, shard)
    assert not [t for t in threading.enumerate() if t.name == "nanocode-loader"]  # the failed thread is gone
    with pytest.raises(DataError):  # iterating again meets the same error, not a hang
        next(loader)

    shard.write_bytes(intact[: len(intact) // 2])  # truncated: the footer is gone, found when the loader is made
    with pytest.raises(DataError) as e:
        PackedLoader(mixture, tok, **kw)
    assert "not a readable parquet file" in one_line_error(e, shard)


def test_close_stops_the_thread_and_iteration_resumes_from_the_consumer_state(data, tok):
    kw = dict(batch_size=BATCH, seq_len=SEQ_LEN, buffer_docs=10)
    reference = list(itertools.islice(PackedStream(data["mixture"], tok, **kw), 6))
    loader = PackedLoader(data["mixture"], tok, **kw, prefetch=6)
    got = [next(loader) for _ in range(3)]
    loader.close()
    assert not [t for t in threading.enumerate() if t.name == "nanocode-loader"]
    assert loader.state()["step"] == 3
    got += [next(loader) for _ in range(3)]  # restarts from batch 3 although the old thread had built more
    loader.close()
    for a, b in zip(reference, got, strict=True):
        np.testing.assert_array_equal(a, b)
