"""Hostile files against the readers: checkpoints, conversation and preference sets, shards, tokenizer directories,
downloads and the CLI. Each parametrized case is one attack; contained means: the right data, or one line naming the
file (and the line, or the step), never a traceback and never saved data lost or silently wrong."""

from __future__ import annotations

import hashlib
import json
import shutil

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nanocode.cli.main import main
from nanocode.core.checkpoint import Checkpointer
from nanocode.core.errors import CheckpointError, CorruptCheckpoint, DataError
from nanocode.core.workspace import Workspace
from nanocode.data import parquet
from nanocode.data.download import download_file, origin_path, partial_path
from nanocode.data.embedded import EmbeddedProse
from nanocode.data.preference import read_preferences
from nanocode.data.sft import read_jsonl
from nanocode.data.tokenizer import BPETokenizer
from tests.helpers import small_tokenizer
from tests.httpserver import FileServer
from tests.test_checkpoint import flip_byte, largest_file, leaves_equal, saved_steps
from tests.test_download import make_shards
from tests.test_train_pretrain import base, final_params, train, workspace_env  # noqa: F401 (fixtures)

FAST = dict(backoff=0.0, timeout=10.0)


def one_line(error: BaseException, *needles: str) -> None:
    message = str(error)
    assert "\n" not in message and "Traceback" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Steps 3 and 6, saved once; each attack works on a copy."""
    root = tmp_path_factory.mktemp("ckpt") / "ckpt"
    return root, saved_steps(root, [3, 6])


@pytest.fixture
def ckpt_copy(saved, tmp_path):
    root, states = saved
    shutil.copytree(root, tmp_path / "ckpt")
    return tmp_path / "ckpt", states


def equal(a, b) -> bool:
    try:
        leaves_equal(a, b)
    except AssertionError:
        return False
    return True


def test_a_byte_flipped_anywhere_in_a_step_never_restores_silently_wrong(ckpt_copy):
    """Every file of step 6, a byte flipped at three places each: the restore gives back exactly what was saved
    (the byte was in a file orbax does not read) or fails in one line naming step 6."""
    root, states = ckpt_copy
    files = sorted(p for p in (root / "6").rglob("*") if p.is_file())
    outcomes = {"identical": 0, "refused": 0}
    for path in files:
        for at in (0.1, 0.5, 0.95):
            flip_byte(path, at)
            with Checkpointer(root) as ckpt:
                try:
                    restored = ckpt.restore(6, abstract_state=states[6])
                except CheckpointError as e:
                    one_line(e, "6")
                    outcomes["refused"] += 1
                else:
                    assert equal(restored.state, states[6]), f"{path} at {at}: restored silently wrong"
                    assert restored.data == {"row": 6}, f"{path} at {at}: data position silently wrong"
                    outcomes["identical"] += 1
            flip_byte(path, at)  # undo
    assert outcomes["refused"] >= len(files)  # most flips land in data that is read


def test_flipped_array_byte_resume_falls_back_with_a_warning(ckpt_copy, capsys):
    root, states = ckpt_copy
    flip_byte(largest_file(root / "6" / "state"))
    with Checkpointer(root) as ckpt:
        restored = ckpt.restore(abstract_state=states[6])
    assert restored.step == 3 and equal(restored.state, states[3])
    warning = capsys.readouterr().err.strip()
    one_line(Exception(warning), "checkpoint step 6", str(root / "6" / "state"), "resuming from step 3")
    assert (root / "6.corrupt").is_dir()  # set aside, not deleted


@pytest.mark.parametrize("damage", ["truncated", "deleted", "garbage"])
def test_damaged_array_data_is_one_line(ckpt_copy, damage):
    root, states = ckpt_copy
    target = largest_file(root / "6" / "state")
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "deleted":
        target.unlink()
    else:
        target.write_bytes(np.random.default_rng(0).bytes(target.stat().st_size))
    with Checkpointer(root) as ckpt:
        with pytest.raises(CorruptCheckpoint) as e:
            ckpt.restore(6, abstract_state=states[6])
    one_line(e.value, "step 6", str(root / "6"))


@pytest.mark.parametrize("item", ["meta", "data"])
def test_an_item_that_is_not_json_is_one_line(ckpt_copy, item):
    root, states = ckpt_copy
    (root / "6" / item / "metadata").write_text("{not json")
    with Checkpointer(root) as ckpt:
        with pytest.raises(CorruptCheckpoint) as e:
            ckpt.restore(6, abstract_state=states[6])
        one_line(e.value, "step 6")
        assert ckpt.restore(abstract_state=states[6]).step == 3  # a resume falls back past it


def test_a_corrupt_commit_record_is_a_warned_fallback_not_a_later_crash(ckpt_copy, capsys):
    root, states = ckpt_copy
    (root / "6" / "_CHECKPOINT_METADATA").write_text("\x00garbage")
    with Checkpointer(root) as ckpt:
        assert ckpt.restore(abstract_state=states[3]).step == 3
        assert "checkpoint step 6: its commit record" in capsys.readouterr().err
        assert ckpt.save(6, states[6])  # training gets back to step 6 and saves it: no "exists but incomplete"
        ckpt.wait()
        assert ckpt.steps() == [3, 6]


# ------------------------------------------------------------------------------------------------ JSONL sets
CONV = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
USER = {"role": "user", "content": "hi"}
BAD_CONVERSATIONS = {
    "not JSON": b"{not json",
    "not UTF-8": b'{"messages": "\xff\xfe"}',
    "a list, not an object": b"[1, 2]",
    "no messages key": b'{"msgs": []}',
    "messages a string": json.dumps({"messages": "hi"}).encode(),
    "a message that is a number": json.dumps({"messages": [USER, 5]}).encode(),
    "content a number": json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(),
    "role a list": json.dumps({"messages": [{"role": ["user"], "content": "x"}]}).encode(),
    "tool_call args a list": json.dumps(
        {"messages": [USER, {"role": "assistant", "tool_call": {"name": "Read", "args": ["a"]}}]}
    ).encode(),
    "tool_call arg value an object": json.dumps(
        {"messages": [USER, {"role": "assistant", "tool_call": {"name": "Read", "args": {"file_path": {}}}}]}
    ).encode(),
    "nested 100000 deep": b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


@pytest.mark.parametrize("attack", list(BAD_CONVERSATIONS))
def test_a_bad_conversation_line_is_one_line_naming_file_and_line(tmp_path, attack):
    path = tmp_path / "set.jsonl"
    path.write_bytes(json.dumps(CONV).encode() + b"\n\n" + BAD_CONVERSATIONS[attack] + b"\n")
    with pytest.raises(DataError) as e:
        read_jsonl(path)
    one_line(e.value, f"{path}:3: not a conversation")


PAIR = {"chosen": CONV, "rejected": CONV}
BAD_PREFERENCES = {
    "desirable the string false": {**CONV, "desirable": "false"},
    "desirable a number": {**CONV, "desirable": 0},
    "desirable missing": dict(CONV),
    "rejected missing": {"chosen": CONV},
    "chosen a string": {"chosen": "good", "rejected": CONV},
    "chosen without messages": {"chosen": {}, "rejected": CONV},
    "rejected content a list": {"chosen": CONV, "rejected": {"messages": [{"role": "user", "content": ["x"]}]}},
    "a record that is a string": "chosen",
}


@pytest.mark.parametrize("attack", list(BAD_PREFERENCES))
def test_a_bad_preference_line_is_one_line_naming_file_and_line(tmp_path, attack):
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(PAIR) + "\n" + json.dumps(BAD_PREFERENCES[attack]) + "\n")
    with pytest.raises(DataError) as e:
        read_preferences(path)
    one_line(e.value, f"{path}:2: not a preference record")


def test_desirable_booleans_are_read_as_booleans(tmp_path):
    path = tmp_path / "kto.jsonl"
    path.write_text(json.dumps({**CONV, "desirable": False}) + "\n" + json.dumps({**CONV, "desirable": True}) + "\n")
    assert [u.desirable for u in read_preferences(path)] == [False, True]


# ------------------------------------------------------------------------------------------------ shards
def write_table(path, table):
    pq.write_table(table, path)


@pytest.mark.parametrize("attack", ["text holds ints", "null documents", "no text column", "truncated", "not parquet"])
def test_a_bad_shard_is_one_line_naming_the_file(tmp_path, attack):
    path = tmp_path / parquet.shard_name(0)
    if attack == "text holds ints":
        write_table(path, pa.table({"text": pa.array([1, 2, 3])}))
    elif attack == "null documents":
        write_table(path, pa.table({"text": pa.array(["a", None], type=pa.string())}))
    elif attack == "no text column":
        write_table(path, pa.table({"body": pa.array(["a"])}))
    elif attack == "truncated":
        parquet.write_shard(path, [f"doc {i}" for i in range(100)])
        path.write_bytes(path.read_bytes()[:-100])
    else:
        path.write_bytes(b"PAR1 this is not a parquet file PAR1")
    with pytest.raises(DataError) as e:
        list(parquet.iter_texts([path]))
    one_line(e.value, str(path))


def test_nanocode_data_refetches_a_shard_corrupted_after_download(tmp_path, capsys):
    """A byte flipped inside the data: the footer check that `nanocode data` trusted before still passes."""
    make_shards(tmp_path / "remote", n=3)
    with FileServer(tmp_path / "remote") as server:
        argv = ["data", "--dataset", "stack_v2_python", "--shards", "3", "--base_url", server.base_url]
        argv += ["--dir", str(tmp_path / "local")]
        assert main(argv) == 0
        shard = tmp_path / "local" / parquet.shard_name(1)
        data = bytearray(shard.read_bytes())
        data[len(data) // 3] ^= 0x01
        shard.write_bytes(bytes(data))
        parquet.check_shard(shard)  # the footer check of old would have trusted it
        capsys.readouterr()
        assert main(argv) == 0
        assert "corrupt (its sha256 differs" in capsys.readouterr().err
        assert shard.read_bytes() == (tmp_path / "remote" / shard.name).read_bytes()


def test_an_embedded_build_with_a_corrupt_shard_is_rebuilt_despite_its_manifest(tmp_path, capsys):
    source = EmbeddedProse(max_docs=30, directory=str(tmp_path / "prose"))
    source.prepare(progress=False)
    shard = source.shard_paths("train")[0]
    good = shard.read_bytes()
    shard.write_bytes(good[:-10] + bytes(b ^ 1 for b in good[-10:-9]) + good[-9:])
    assert not source.is_complete()
    source.prepare(progress=False)
    assert "rebuilding" in capsys.readouterr().err and shard.read_bytes() == good


@pytest.mark.parametrize("manifest", ["{not json", "[]", '{"params": 5}'])
def test_a_bad_manifest_is_one_line_then_rebuilt(tmp_path, capsys, manifest):
    source = EmbeddedProse(max_docs=30, directory=str(tmp_path / "prose"))
    source.prepare(progress=False)
    (tmp_path / "prose" / "manifest.json").write_text(manifest)
    if manifest != '{"params": 5}':  # a JSON object with other params is a stale build: usable until rebuilt
        with pytest.raises(DataError) as e:
            source.shard_paths("train")
        one_line(e.value, str(tmp_path / "prose" / "manifest.json"), "unreadable")
    assert not source.is_complete()
    source.prepare(progress=False)
    assert source.is_complete() and len(source.shard_paths("train")) == 1


# ------------------------------------------------------------------------------------------------ tokenizer dirs
@pytest.fixture
def tok_dir(tmp_path):
    directory = tmp_path / "tok"
    small_tokenizer().save(directory)
    return directory


@pytest.mark.parametrize(
    "attack", ["meta not JSON", "meta a list", "pattern a number", "ranks tampered", "bad regex", "ranks incomplete"]
)
def test_a_bad_tokenizer_directory_is_one_line(tok_dir, attack):
    meta_path, ranks_path = tok_dir / "tokenizer.json", tok_dir / "tokenizer.tiktoken"
    meta = json.loads(meta_path.read_text())
    if attack == "meta not JSON":
        meta_path.write_text('{\n  "pattern": oops\n}')
    elif attack == "meta a list":
        meta_path.write_text("[]")
    elif attack == "pattern a number":
        meta_path.write_text(json.dumps({**meta, "pattern": 5}))
    elif attack == "ranks tampered":
        ranks_path.write_bytes(ranks_path.read_bytes().replace(b" 300\n", b" 301\n", 1))
    else:  # meta and ranks changed together, so the checksum holds: the content itself must be refused
        ranks = ranks_path.read_bytes()
        if attack == "ranks incomplete":
            ranks = b"".join(ranks.splitlines(keepends=True)[1:])  # byte 0 missing
        pattern = "(unclosed" if attack == "bad regex" else meta["pattern"]
        ranks_path.write_bytes(ranks)
        meta_path.write_text(
            json.dumps({**meta, "pattern": pattern, "ranks_sha256": hashlib.sha256(ranks).hexdigest()})
        )
    with pytest.raises(DataError) as e:
        BPETokenizer.load(tok_dir)
    one_line(e.value, str(tok_dir))
    if attack == "meta not JSON":
        one_line(e.value, f"{meta_path}:2:")


# ------------------------------------------------------------------------------------------------ downloads
def test_a_remote_file_over_the_cap_is_refused_without_filling_the_disk(tmp_path):
    (tmp_path / "remote").mkdir()
    (tmp_path / "remote" / "huge.jsonl").write_bytes(b"x" * 100_000)
    with FileServer(tmp_path / "remote") as server:
        with pytest.raises(DataError) as e:
            download_file(server.url("huge.jsonl"), tmp_path / "huge.jsonl", max_bytes=10_000, **FAST)
    one_line(e.value, "huge.jsonl", "download cap")
    assert not list(tmp_path.glob("huge.jsonl*"))


def test_a_resume_after_the_remote_changed_keeps_nothing_of_the_old_version(tmp_path):
    remote = tmp_path / "remote"
    (remote).mkdir()
    old, new = b"old version " * 5000, b"NEW VERSION " * 5000  # same size: only the ETag tells
    (remote / "set.jsonl").write_bytes(old)
    with FileServer(remote, if_range=False) as server:
        server.script("set.jsonl", "drop")
        with pytest.raises(DataError):
            download_file(server.url("set.jsonl"), tmp_path / "set.jsonl", retries=0, **FAST)
        assert 0 < partial_path(tmp_path / "set.jsonl").stat().st_size < len(old)
        (remote / "set.jsonl").write_bytes(new)
        assert download_file(server.url("set.jsonl"), tmp_path / "set.jsonl", **FAST).read_bytes() == new
    assert not origin_path(partial_path(tmp_path / "set.jsonl")).exists()


def test_a_hostile_partial_file_is_not_resumed(tmp_path):
    (tmp_path / "remote").mkdir()
    (tmp_path / "remote" / "a.jsonl").write_bytes(b"real content\n" * 100)
    partial_path(tmp_path / "a.jsonl").write_bytes(b"planted prefix")
    with FileServer(tmp_path / "remote") as server:
        got = download_file(server.url("a.jsonl"), tmp_path / "a.jsonl", **FAST).read_bytes()
    assert got == b"real content\n" * 100


# ------------------------------------------------------------------------------------------------ the CLI
def test_list_of_an_unknown_kind_is_one_line(capsys):
    assert main(["list", "badkind"]) == 2
    err = capsys.readouterr().err.strip()
    one_line(Exception(err), "unknown component kind 'badkind'", "kinds: ")


def test_the_copied_steps_restore_intact(ckpt_copy):
    """Sanity for the fixtures above: the copies restore as saved (so each attack starts from a good step)."""
    root, states = ckpt_copy
    with Checkpointer(root) as ckpt:
        assert equal(ckpt.restore(6, abstract_state=states[6]).state, states[6])
    assert jax.process_count() == 1


def test_a_flipped_byte_under_a_params_only_restore_is_caught(tmp_path):
    """The fine-tuning stages, `nanocode agent`, `serve` and `eval` read only the params (orbax partial restore)."""
    from nanocode.train.finetune import restore_params

    big = jax.random.normal(jax.random.key(0), (256, 256))
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(2, {"params": {"w": big}, "opt": {"mu": big * 0}})
        ckpt.wait()
    abstract = {"w": jax.ShapeDtypeStruct(big.shape, big.dtype, sharding=big.sharding)}
    assert equal(restore_params(tmp_path / "ckpt" / "2", abstract), {"w": big})
    flip_byte(largest_file(tmp_path / "ckpt" / "2" / "state"), 0.3)
    with pytest.raises(CorruptCheckpoint) as e:
        restore_params(tmp_path / "ckpt" / "2", abstract)
    one_line(e.value, str(tmp_path / "ckpt" / "2"), "params/w")


# ------------------------------------------------------------------------------------------------ a training resume
@pytest.mark.slow
def test_pretrain_resume_past_a_corrupt_step_warns_and_ends_bit_identical(workspace_env, capsys):  # noqa: F811
    """6 steps with checkpoints at 3 and 6; a byte of step 6 flipped; `--resume` of 6 steps: a warning, step 6 set
    aside, steps 4..6 trained again from step 3, and the new step 6 equals the one that was corrupted, bit for bit."""
    train(workspace_env, "flipped")
    directory = Workspace("flipped").checkpoint_dir("pretrain")
    before = final_params("flipped", 6)
    flip_byte(largest_file(directory / "6" / "state"))
    capsys.readouterr()
    train(workspace_env, "flipped", resume=True)
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if line.startswith("warning: "))
    assert "checkpoint step 6" in warning and "resuming from step 3" in warning
    assert "pretrain: resuming from step 3" in err
    assert (directory / "6.corrupt").is_dir() and Checkpointer(directory).steps() == [3, 6]
    for a, b in zip(final_params("flipped", 6), before, strict=True):
        np.testing.assert_array_equal(a, b)
