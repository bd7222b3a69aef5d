"""Downloads from the Hugging Face Hub against a miniature Hub on 127.0.0.1 at the real URL paths: $HF_ENDPOINT,
$HF_TOKEN (to the Hub only, never along a redirect), the revision in the URL and in the record, the Hub's sha256,
and a file changed under the same name."""

import hashlib
import json

import pytest

from nanocode.cli.main import main
from nanocode.core.errors import DataError
from nanocode.data import hub
from nanocode.data.download import download_file, origin_path, partial_path
from nanocode.data.preference import nanocode_long_context_preference
from nanocode.data.remote import CHECKSUMS, StackV2Python
from nanocode.data.sft import nanocode_long_context
from tests.httpserver import FileServer
from tests.hub_fixture import conversation, hub_dir, pair, write_jsonl, write_shards

FAST = dict(backoff=0.0, timeout=10.0)
CODE = "smohammadi/the-stack-v2-python-shuffle"
PINNED = "0123456789abcdef0123456789abcdef01234567"  # a revision as a flagship gin file pins it: a commit id
CHAT = "smohammadi/nanocode-long-context"


@pytest.fixture
def hub_root(tmp_path, monkeypatch):
    """Two code shards at `main` and at PINNED, one conversation set and its preference pairs at PINNED."""
    root = tmp_path / "hub"
    docs = [f"def f{i}():\n    return {i}\n" * 20 for i in range(200)]
    write_shards(hub_dir(root, CODE), docs, 2)
    write_shards(hub_dir(root, CODE, PINNED), docs[::-1], 2)
    chat = hub_dir(root, CHAT, PINNED)
    write_jsonl(chat / "rollouts_train.jsonl", [{"messages": conversation(i, True)} for i in range(8)])
    write_jsonl(chat / "rollouts_test.jsonl", [{"messages": conversation(9, True)}])
    prefs = hub_dir(root, CHAT + "-preference", PINNED)
    write_jsonl(prefs / "preference_rollouts_train.jsonl", [pair(i, True) for i in range(8)])
    write_jsonl(prefs / "preference_rollouts_test.jsonl", [pair(9, True)])
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    return root


def authorization(server, name):
    return [headers.get("Authorization") for n, headers in server.requests if n == name]


@pytest.mark.parametrize("variable", ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"])
def test_token_goes_to_the_endpoint_and_nowhere_else(hub_root, tmp_path, monkeypatch, variable):
    name = f"datasets/{CODE}/resolve/main/shard_00000.parquet"
    monkeypatch.setenv(variable, "hf_secret")
    with FileServer(hub_root, hub=True) as hf, FileServer(hub_root) as mirror:
        monkeypatch.setenv("HF_ENDPOINT", hf.base_url)
        assert hub.dataset_url(CODE, "shard_00000.parquet").startswith(hf.base_url + "/")
        download_file(hub.dataset_url(CODE, "shard_00000.parquet"), tmp_path / "a" / "shard", **FAST)
        download_file(mirror.url(name), tmp_path / "b" / "shard", **FAST)  # another host: no token
        assert authorization(hf, name) == ["Bearer hf_secret"]
        assert authorization(mirror, name) == [None]
        monkeypatch.delenv(variable)
        download_file(hub.dataset_url(CODE, "shard_00000.parquet"), tmp_path / "c" / "shard", **FAST)
        assert authorization(hf, name) == ["Bearer hf_secret", None]  # no token set: none sent


def test_token_is_not_forwarded_to_the_cdn_and_the_redirects_sha256_is_checked(hub_root, tmp_path, monkeypatch):
    name = f"datasets/{CODE}/resolve/main/shard_00001.parquet"
    data = (hub_root / name).read_bytes()
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    with FileServer(hub_root, cdn=True) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.base_url)
        meta = {}
        dest = download_file(hub.dataset_url(CODE, "shard_00001.parquet"), tmp_path / "s", meta=meta, **FAST)
        assert dest.read_bytes() == data
        assert [s for _, _, s in server.log] == [302, 200]
        assert authorization(server, name) == ["Bearer hf_secret"]
        assert authorization(server, "cdn/" + name) == [None]  # the signed CDN address needs no token
        assert meta == {
            "sha256": hashlib.sha256(data).hexdigest(),
            "published_sha256": hashlib.sha256(data).hexdigest(),
            "commit": server.commit,
        }
        server.published[name] = "ab" * 32  # the redirect now publishes another sha256 than the bytes have
        with pytest.raises(DataError) as info:
            download_file(hub.dataset_url(CODE, "shard_00001.parquet"), tmp_path / "t", retries=3, **FAST)
    message = str(info.value)
    assert "\n" not in message and "sha256 mismatch" in message and "published by the Hub abababab" in message
    assert len(server.log) == 4  # refused at once: a whole file that contradicts its sha256 is not retried
    assert not (tmp_path / "t").exists() and not partial_path(tmp_path / "t").exists()


def test_a_wrong_published_sha256_is_refused_and_the_right_one_accepted(hub_root, tmp_path, monkeypatch):
    name = f"datasets/{CHAT}/resolve/{PINNED}/rollouts_train.jsonl"
    with FileServer(hub_root, hub=True) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.base_url)
        server.published[name] = "0" * 64
        dataset = nanocode_long_context(directory=str(tmp_path / "chat"), revision=PINNED)
        with pytest.raises(DataError, match=r"rollouts_train\.jsonl: sha256 mismatch .* published by the Hub 0000"):
            dataset.prepare()
        assert list((tmp_path / "chat").iterdir()) == []  # nothing kept, not even a partial file
        del server.published[name]
        dataset.prepare()
    assert len(dataset.conversations("train")) == 8


def test_revision_is_in_the_url_and_recorded_beside_the_shards(hub_root, tmp_path, monkeypatch):
    with FileServer(hub_root, hub=True) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.base_url)
        source = StackV2Python(num_shards=2, directory=str(tmp_path / "code"), revision=PINNED)
        source.prepare(progress=False)
        assert sorted(name for name, _, _ in server.log) == [
            f"datasets/{CODE}/resolve/{PINNED}/shard_0000{i}.parquet" for i in range(2)
        ]
        pinned = hub_dir(hub_root, CODE, PINNED)
        for i in range(2):
            name = f"shard_0000{i}.parquet"
            assert (tmp_path / "code" / name).read_bytes() == (pinned / name).read_bytes()
        record = json.loads((tmp_path / "code" / hub.REVISION_RECORD).read_text())
        assert record == {"repo": CODE, "revision": PINNED, "commits": [server.commit]}
        checksums = json.loads((tmp_path / "code" / CHECKSUMS).read_text())
        assert (
            checksums["shard_00000.parquet"]
            == hashlib.sha256((pinned / "shard_00000.parquet").read_bytes()).hexdigest()
        )
        # the same directory at another revision: refused in one line, nothing mixed in
        (tmp_path / "code" / "shard_00001.parquet").unlink()
        other = StackV2Python(num_shards=2, directory=str(tmp_path / "code"), revision="main")
        with pytest.raises(DataError) as info:
            other.prepare(progress=False)
        assert "\n" not in str(info.value) and f"revision {PINNED!r}, this run asks for 'main'" in str(info.value)
        assert len(server.log) == 2


def test_preference_set_at_a_pinned_revision(hub_root, tmp_path, monkeypatch):
    with FileServer(hub_root, hub=True) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.base_url)
        dataset = nanocode_long_context_preference(directory=str(tmp_path / "prefs"), revision=PINNED)
        dataset.prepare()
        assert {name for name, _, _ in server.log} == {
            f"datasets/{CHAT}-preference/resolve/{PINNED}/preference_rollouts_{split}.jsonl"
            for split in ("train", "test")
        }
    assert len(dataset.items("train")) == 8
    assert hub.read_revision(tmp_path / "prefs")["revision"] == PINNED


@pytest.mark.parametrize("etags", [True, False])
def test_a_file_changed_under_the_same_name_starts_over(hub_root, tmp_path, monkeypatch, etags):
    """Half a file downloaded, then the revision's file replaced by another of the same length: the Hub's sha256
    tells the versions apart even with no ETag and no If-Range, and the result is the new version whole."""
    path = hub_dir(hub_root, CHAT, PINNED) / "rollouts_train.jsonl"
    name = str(path.relative_to(hub_root))
    new_version = path.read_bytes().replace(b"look at", b"LOOK AT")
    assert len(new_version) == path.stat().st_size
    with FileServer(hub_root, hub=True, etags=etags, if_range=etags) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.base_url)
        url, dest = hub.dataset_url(CHAT, "rollouts_train.jsonl", PINNED), tmp_path / "rollouts_train.jsonl"
        server.script(name, "drop")
        with pytest.raises(DataError):
            download_file(url, dest, retries=0, **FAST)
        assert partial_path(dest).stat().st_size == len(new_version) // 2
        path.write_bytes(new_version)
        download_file(url, dest, **FAST)
        statuses = [s for _, _, s in server.requests_for(name)]
    assert dest.read_bytes() == new_version
    assert statuses == ([200, 200] if etags else [200, 206, 200])


def test_data_command_takes_a_revision(hub_root, tmp_path, monkeypatch, capsys):
    with FileServer(hub_root, hub=True) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.base_url)
        argv = ["data", "--dataset", "stack_v2_python", "--shards", "2", "--revision", PINNED, "--dir", str(tmp_path)]
        assert main(argv) == 0, capsys.readouterr().err
        assert {name for name, _, _ in server.log} == {
            f"datasets/{CODE}/resolve/{PINNED}/shard_0000{i}.parquet" for i in range(2)
        }
    assert hub.read_revision(tmp_path)["revision"] == PINNED


def test_a_resume_onto_wrong_bytes_is_caught_by_the_hubs_sha256_and_done_again(hub_root, tmp_path, monkeypatch):
    """A partial file whose bytes are not the prefix they claim to be (no parquet validation here): the Hub's sha256
    catches the mix, and since earlier bytes took part, the file is fetched once more from byte 0."""
    path = hub_dir(hub_root, CHAT, PINNED) / "rollouts_test.jsonl"
    name, data = str(path.relative_to(hub_root)), path.read_bytes()
    dest = tmp_path / "rollouts_test.jsonl"
    partial_path(dest).write_bytes(b"x" * 100)
    etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
    record = {"etag": etag, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    origin_path(partial_path(dest)).write_text(json.dumps(record))
    with FileServer(hub_root, hub=True) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.base_url)
        download_file(hub.dataset_url(CHAT, "rollouts_test.jsonl", PINNED), dest, **FAST)
        assert [(r, s) for _, r, s in server.requests_for(name)] == [("bytes=100-", 206), (None, 200)]
    assert dest.read_bytes() == data
