import json

import numpy as np
import pytest

from nanocode.core.errors import DataError
from nanocode.data.conversation import ConversationCodec
from nanocode.data.preference import JSONLPreferences, PreferenceBatcher, ReadStats, read_preferences
from tests.helpers import small_tokenizer


def side(answer, i):
    return {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": answer}]}


@pytest.fixture
def prefs(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [json.dumps({"chosen": side("good answer", i), "rejected": side("Bad Answer!", i)}) for i in range(10)]
    lines.append(json.dumps({"chosen": side("", 99), "rejected": side("x", 99)}))  # no assistant content
    path.write_text("\n".join(lines) + "\n")
    return path


def test_pairs_without_assistant_content_are_dropped_and_counted(prefs):
    stats = ReadStats()
    items = read_preferences(prefs, stats)
    assert len(items) == 10 and stats.records == 11 and stats.dropped_no_assistant_content == 1


def test_paired_batches_are_chosen_then_rejected(prefs):
    codec = ConversationCodec(small_tokenizer())
    items = JSONLPreferences(str(prefs), test_fraction=0.2).items("train")
    batcher = PreferenceBatcher(items, codec, batch_size=2, seq_len=32)
    batch = next(iter(batcher))
    assert batch["tokens"].shape == batch["mask"].shape == (4, 33)
    decoded = [
        codec.tok.decode([t for t, m in zip(row, mask) if m]) for row, mask in zip(batch["tokens"], batch["mask"])
    ]
    assert decoded[0].startswith("good answer") and decoded[1].startswith("good answer")
    assert decoded[2].startswith("Bad Answer!") and decoded[3].startswith("Bad Answer!")


def test_unpaired_batches_with_mismatched_completions_and_resume(prefs):
    codec = ConversationCodec(small_tokenizer())
    items = read_preferences(prefs)
    batcher = PreferenceBatcher(items, codec, batch_size=4, seq_len=32, paired=False, seed=1)
    it = iter(batcher)
    next(it)
    state = batcher.state()
    want = [next(it) for _ in range(5)]
    again = PreferenceBatcher(items, codec, batch_size=4, seq_len=32, paired=False, seed=1)
    again.restore(state)
    got = [b for _, b in zip(range(5), again)]
    for a, b in zip(want, got):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    b = want[0]
    assert b["desirable"].dtype == bool and b["mismatched_tokens"].shape == (4, 33)
    # row i of the mismatched batch holds example i's question with example i-1's answer

    def messages(row):
        ids = list(row)
        end = len(ids) - ids[::-1].index(codec.ids["assistant_end"])
        return codec.parse(ids[:end])

    mixed, row1, row0 = messages(b["mismatched_tokens"][1]), messages(b["tokens"][1]), messages(b["tokens"][0])
    assert mixed[0] == row1[0] and mixed[1:] == row0[1:]


def test_too_few_examples_is_a_clear_error(prefs):
    codec = ConversationCodec(small_tokenizer())
    with pytest.raises(DataError, match="fewer than one batch"):
        PreferenceBatcher(read_preferences(prefs)[:1], codec, batch_size=2, seq_len=16)


def test_desirable_must_be_a_boolean_not_a_string(tmp_path):
    """`"desirable": "false"` is a non-empty string, which bool() would read as true: refused at file:line."""
    path = tmp_path / "kto.jsonl"
    record = side("an answer", 0)
    path.write_text(json.dumps({**record, "desirable": False}) + "\n" + json.dumps({**record, "desirable": "false"}))
    with pytest.raises(DataError, match=r"kto\.jsonl:2: not a preference record \(\"desirable\" must be true or false"):
        read_preferences(path)
    path.write_text(json.dumps({**record, "desirable": False}) + "\n")
    assert [u.desirable for u in read_preferences(path)] == [False]
