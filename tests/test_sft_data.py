import json

import numpy as np
import pytest

import nanocode.registry as registry
from nanocode.core.errors import DataError
from nanocode.data.conversation import ConversationCodec
from nanocode.data.sft import ConversationMixture, JSONLConversations, SFTPacker, read_jsonl
from tests.helpers import small_tokenizer


def conv(i, words=3):
    return {
        "messages": [
            {"role": "user", "content": f"task {i}"},
            {"role": "assistant", "content": " ".join(["word"] * (words + i % 7))},
        ]
    }


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "convs.jsonl"
    path.write_text("".join(json.dumps(conv(i)) + "\n" for i in range(40)))
    return path


def test_jsonl_split_is_deterministic_and_disjoint(jsonl):
    ds = JSONLConversations(str(jsonl), test_fraction=0.1, seed=3)
    train, test = ds.conversations("train"), ds.conversations("test")
    assert len(test) == 4 and len(train) == 36
    assert not {json.dumps(c) for c in train} & {json.dumps(c) for c in test}
    assert ds.conversations("test") == JSONLConversations(str(jsonl), test_fraction=0.1, seed=3).conversations("test")


def test_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(conv(0)) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: not a conversation"):
        read_jsonl(path)


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"messages": "hi"}', "messages must be a list"),
        ('{"messages": [{"role": "user", "content": 5}]}', "message 0: 'content' must be a string"),
        ('{"messages": [7]}', "message 0: must be an object"),
        ("[1, 2]", 'expected an object with "messages"'),
    ],
)
def test_wrong_types_are_one_line_naming_file_and_line(tmp_path, line, reason):
    """Types are checked when the file is read: not a traceback from deep inside rendering later."""
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(conv(0)) + "\n" + line + "\n")
    with pytest.raises(DataError) as e:
        read_jsonl(path)
    assert "\n" not in str(e.value) and f"bad.jsonl:2: not a conversation ({reason}" in str(e.value)


def test_invalid_utf8_is_one_line_naming_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(conv(0)).encode() + b"\n" + b'{"messages": "\xff"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not a conversation \(UnicodeDecodeError"):
        read_jsonl(path)


def test_mixture_epochs(jsonl):
    ds = JSONLConversations(str(jsonl), test_fraction=0.1)
    mix = ConversationMixture([ds, ds], epochs=[1, 2], seed=0)
    assert len(mix.conversations("train")) == 36 * 3
    assert len(mix.conversations("test")) == 8


def test_mixture_in_order_is_a_curriculum(tmp_path):
    def dataset(name, n):
        path = tmp_path / f"{name}.jsonl"
        path.write_text(
            "".join(json.dumps({"messages": [{"role": "user", "content": f"{name}{i}"}]}) + "\n" for i in range(n))
        )
        return JSONLConversations(str(path), test_fraction=0.0)

    first, then = dataset("mix", 30), dataset("locate", 20)
    a, b = ([c[0]["content"] for c in d.conversations("train")] for d in (first, then))
    mix = ConversationMixture([first, then], [2, 1], in_order=True)
    curriculum = [c[0]["content"] for c in mix.conversations("train")]
    # the first dataset's two epochs, shuffled, then the second's
    assert sorted(curriculum[: 2 * len(a)]) == sorted(a * 2) and sorted(curriculum[2 * len(a) :]) == sorted(b)
    assert curriculum[: len(a)] != a and curriculum[2 * len(a) :] != b
    shuffled = [c[0]["content"] for c in ConversationMixture([first, then], [2, 1]).conversations("train")]
    assert sorted(shuffled) == sorted(curriculum) and [c[:3] for c in shuffled] != [c[:3] for c in curriculum]


def test_packing_rows_masks_and_exact_resume(jsonl):
    codec = ConversationCodec(small_tokenizer())
    convs = JSONLConversations(str(jsonl)).conversations("train")
    packer = SFTPacker(convs, codec, batch_size=2, seq_len=48, buffer_size=8)
    it = iter(packer)
    tokens, mask = next(it)
    assert tokens.shape == mask.shape == (2, 49)
    # rows start with BOS and padding is never trained
    assert (tokens[:, 0] == codec.ids["bos"]).all()
    pad = (tokens == codec.ids["bos"]) & (np.arange(49) > 0)
    assert not mask[pad].any()
    for _ in range(3):
        next(it)
    state = json.loads(json.dumps(packer.state()))
    want = [next(it) for _ in range(20)]
    fresh = SFTPacker(convs, codec, batch_size=2, seq_len=48, buffer_size=8)
    fresh.restore(state)
    got = [b for _, b in zip(range(20), fresh)]
    for (t1, m1), (t2, m2) in zip(want, got):
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(m1, m2)


def test_too_long_conversations_are_dropped_and_counted(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps(conv(0, words=400)) + "\n" + json.dumps(conv(1)) + "\n")
    codec = ConversationCodec(small_tokenizer())
    packer = SFTPacker(read_jsonl(path), codec, batch_size=1, seq_len=32, cycle=False)
    batches = list(packer)
    assert len(batches) == 1 and packer.stats.dropped_too_long == 1


def test_training_data_that_never_fits_is_one_line_not_a_hang(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(conv(i, words=400)) + "\n" for i in range(3)))
    packer = SFTPacker(read_jsonl(path), ConversationCodec(small_tokenizer()), batch_size=2, seq_len=32)
    with pytest.raises(DataError, match=r"none of the 3 conversations fits a row of 33 tokens"):
        next(iter(packer))


def test_registered_hub_datasets_use_the_real_layout():
    ds = registry.get("sft_dataset", "nanocode_tulu_selfoss_evol")(base_url="http://127.0.0.1:1/{repo}/{file}")
    assert ds.repo == "smohammadi/nanocode-tulu-selfoss-evol"
    assert ds.train.endswith("all_train.jsonl") and ds.test.endswith("all_test.jsonl")


def test_held_out_data_keeps_its_partial_last_batch_as_padding(jsonl):
    codec = ConversationCodec(small_tokenizer())
    convs = JSONLConversations(str(jsonl)).conversations("train")[:5]
    packer = SFTPacker(convs, codec, batch_size=8, seq_len=48, cycle=False)  # 5 conversations < 8 rows
    batches = list(packer)
    tokens, mask = batches[-1]
    assert len(batches) == 1 and tokens.shape == (8, 49)
    ends = sum(int(((b[0] == codec.ids["assistant_end"]) & (b[1] == 1)).sum()) for b in batches)
    assert ends == 5 and packer.stats.dropped_too_long == 0  # every held-out conversation is evaluated
    assert not mask[-1].any()  # the padding row trains nothing
