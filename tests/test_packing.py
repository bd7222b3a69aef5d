"""Best-fit packing: the placement rule on a worked example, row invariants on random documents, exact reloading."""

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nanocode.data.packing import BestFitPacker

BOS = 0


def doc(doc_id: int, length: int) -> np.ndarray:
    """BOS then `length - 1` tokens that name the document (so rows can be traced back to it)."""
    return np.array([BOS] + [1000 * (doc_id + 1) + i for i in range(length - 1)], dtype=np.int32)


def no_more(_wanted):
    return False


def test_largest_fitting_document_first_then_the_shortest_cropped():
    packer = BestFitPacker(row_len=10, buffer_docs=100)
    lengths = {"a": 6, "b": 3, "c": 4, "d": 12}
    docs = {name: doc(i, n) for i, (name, n) in enumerate(lengths.items())}
    for name, tokens in docs.items():
        packer.add(tokens, name)

    row = np.empty(10, np.int32)
    assert packer.pack_row(row, no_more) == [("a", 6), ("c", 4)]  # 6 is the largest <= 10, then 4 fills the rest
    np.testing.assert_array_equal(row, np.concatenate([docs["a"], docs["c"]]))
    assert packer.pack_row(row, no_more) == [("b", 3), ("d", 7)]  # nothing fits the last 7: crop the shortest
    np.testing.assert_array_equal(row, np.concatenate([docs["b"], docs["d"][:7]]))
    assert packer.pack_row(row, no_more) is None  # the buffer is dry
    s = packer.stats
    assert (s.rows, s.documents, s.crops, s.tokens, s.discarded) == (2, 4, 1, 20, 5)


def test_buffer_is_topped_up_before_every_placement():
    packer = BestFitPacker(row_len=8, buffer_docs=3)
    asked, next_id = [], iter(range(1000))

    def refill(wanted):
        asked.append((len(packer), wanted))
        packer.add(doc(next(next_id), 3), "x")  # one at a time: refill may add fewer than asked
        return True

    row = np.empty(8, np.int32)
    packer.pack_row(row, refill)
    assert asked[:3] == [(0, 3), (1, 2), (2, 1)]
    assert all(len_before + wanted == 3 for len_before, wanted in asked)
    assert len(packer) == 3 - 1  # 3 + 3 + crop(2 of 3): three placements, each preceded by a top-up to 3


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=80),
    row_len=st.integers(2, 33),
    buffer_docs=st.integers(1, 20),
)
def test_rows_are_full_start_at_bos_and_are_made_of_document_prefixes(lengths, row_len, buffer_docs):
    docs = [doc(i, n) for i, n in enumerate(lengths)]
    pending = iter(range(len(docs)))
    packer = BestFitPacker(row_len, buffer_docs)

    def refill(wanted):
        added = 0
        for i in itertools.islice(pending, wanted):
            packer.add(docs[i], i)
            added += 1
        return added > 0

    seen = set()
    row = np.empty(row_len, np.int32)
    while (placed := packer.pack_row(row, refill)) is not None:
        assert row[0] == BOS and sum(used for _, used in placed) == row_len
        pos = 0
        for k, (i, used) in enumerate(placed):
            assert i not in seen  # every document is used at most once
            seen.add(i)
            np.testing.assert_array_equal(row[pos : pos + used], docs[i][:used])
            assert used == len(docs[i]) or k == len(placed) - 1  # only a row's last document is cropped
            pos += used
    total = sum(len(docs[i]) for i in seen)
    assert packer.stats.tokens + packer.stats.discarded == total
    assert len(packer) == 0  # None only once the buffer is dry (the partial last row's documents are dropped)


def test_reloading_the_locators_in_order_gives_the_same_rows():
    rng = np.random.default_rng(0)
    docs = [doc(i, int(n)) for i, n in enumerate(rng.integers(1, 30, size=200))]
    packers = [BestFitPacker(16, buffer_docs=12), None]
    feed = iter(range(len(docs)))

    def refill_into(packer, source):
        def refill(wanted):
            ids = [i for _, i in zip(range(wanted), source)]
            for i in ids:
                packer.add(docs[i], i)
            return bool(ids)

        return refill

    row = np.empty(16, np.int32)
    for _ in range(5):
        packers[0].pack_row(row, refill_into(packers[0], feed))
    # Save: locators only. Restore: look the documents up again, in the saved order.
    saved_locators, rest = packers[0].locators(), list(feed)
    packers[1] = BestFitPacker(16, buffer_docs=12)
    packers[1].load([(i, docs[i]) for i in saved_locators])
    rows = [[], []]
    for k, packer in enumerate(packers):
        source = iter(rest)
        for _ in range(10):
            out = np.empty(16, np.int32)
            rows[k].append((packer.pack_row(out, refill_into(packer, source)), out))
    for (placed_a, a), (placed_b, b) in zip(*rows):
        assert placed_a == placed_b
        np.testing.assert_array_equal(a, b)
