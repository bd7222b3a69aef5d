"""The HTTP downloader against a real local server: resume, restart, retry, validation, one-line failures."""

import hashlib
import json

import pytest

from nanocode.core.errors import DataError
from nanocode.data import parquet
from nanocode.data.download import DownloadJob, download_file, download_many, origin_path, partial_path
from nanocode.data.remote import verify_shard
from tests.httpserver import FileServer

FAST = dict(backoff=0.0, timeout=10.0)  # no sleeping between retries in tests


def make_shards(directory, n=3, docs=300):
    """Miniature shards in nanocode's layout, each a few tens of KB with distinct content."""
    paths = []
    for i in range(n):
        texts = [
            f"shard {i} document {j}: " + " ".join(f"w{(i * 7919 + j * k) % 1000}" for k in range(40))
            for j in range(docs)
        ]
        path = directory / parquet.shard_name(i)
        parquet.write_shard(path, texts, row_group_size=100)
        paths.append(path)
    return paths


def resumable_partial(local, name, remote_data, prefix):
    """A partial file as our own earlier attempt leaves it: its bytes and the remote version they came from."""
    local.mkdir(exist_ok=True)
    partial = partial_path(local / name)
    partial.write_bytes(prefix)
    etag = f'"{hashlib.sha256(remote_data).hexdigest()[:16]}"'
    origin_path(partial).write_text(json.dumps({"etag": etag, "size": len(remote_data)}))


@pytest.fixture
def served(tmp_path):
    remote = tmp_path / "remote"
    shards = make_shards(remote)
    with FileServer(remote) as server:
        yield server, shards, tmp_path / "local"


def test_download_many_fetches_every_shard(served):
    server, shards, local = served
    jobs = [DownloadJob(server.url(p.name), local / p.name) for p in shards]
    paths = download_many(jobs, workers=2, progress=False, validate=verify_shard, **FAST)
    assert paths == [local / p.name for p in shards]
    for src, dst in zip(shards, paths):
        assert dst.read_bytes() == src.read_bytes()
        assert not partial_path(dst).exists()
    assert sorted(name for name, _, _ in server.log) == sorted(p.name for p in shards)


def test_dropped_connection_resumes_with_range(served):
    server, shards, local = served
    name = shards[0].name
    server.script(name, "drop")
    dest = download_file(server.url(name), local / name, validate=verify_shard, **FAST)
    assert dest.read_bytes() == shards[0].read_bytes()
    (_, first_range, first_status), (_, second_range, second_status) = server.requests_for(name)
    assert first_range is None and first_status == 200
    half = (shards[0].stat().st_size) // 2
    assert second_range == f"bytes={half}-" and second_status == 206


def test_stalled_connection_times_out_and_resumes(served):
    server, shards, local = served
    name = shards[0].name
    server.script(name, "stall")
    dest = download_file(server.url(name), local / name, validate=verify_shard, backoff=0.0, timeout=0.5)
    assert dest.read_bytes() == shards[0].read_bytes()
    half = shards[0].stat().st_size // 2
    assert [(r, s) for _, r, s in server.requests_for(name)] == [(None, 200), (f"bytes={half}-", 206)]


def test_resumes_an_existing_partial_file(served):
    server, shards, local = served
    name, data = shards[1].name, shards[1].read_bytes()
    resumable_partial(local, name, data, data[:1000])
    dest = download_file(server.url(name), local / name, validate=verify_shard, **FAST)
    assert dest.read_bytes() == data
    assert server.requests_for(name) == [(name, "bytes=1000-", 206)]


def test_server_ignoring_range_restarts_from_scratch(served):
    server, shards, local = served
    name, data = shards[1].name, shards[1].read_bytes()
    resumable_partial(local, name, data, b"garbage prefix that must not survive")
    server.always(name, "ignore_range")
    dest = download_file(server.url(name), local / name, validate=verify_shard, **FAST)
    assert dest.read_bytes() == data
    assert [status for _, _, status in server.requests_for(name)] == [200]


def test_bad_partial_prefix_fails_validation_then_downloads_clean(served):
    """A partial file from somewhere else resumes into a corrupt file: validation catches it, the retry is clean."""
    server, shards, local = served
    name, data = shards[2].name, shards[2].read_bytes()
    resumable_partial(local, name, data, b"\0" * 500)
    dest = download_file(server.url(name), local / name, validate=verify_shard, **FAST)
    assert dest.read_bytes() == data
    assert [(r, s) for _, r, s in server.requests_for(name)] == [("bytes=500-", 206), (None, 200)]


def test_truncated_file_fails_validation_and_is_retried(served):
    server, shards, local = served
    name = shards[0].name
    server.script(name, "truncate")
    dest = download_file(server.url(name), local / name, validate=verify_shard, **FAST)
    assert dest.read_bytes() == shards[0].read_bytes()
    assert [(r, s) for _, r, s in server.requests_for(name)] == [(None, 200), (None, 200)]


def test_file_that_never_validates_raises_one_line_and_leaves_nothing(served):
    server, shards, local = served
    name = shards[0].name
    server.always(name, "corrupt")
    with pytest.raises(DataError) as info:
        download_file(server.url(name), local / name, retries=2, validate=verify_shard, **FAST)
    message = str(info.value)
    assert "\n" not in message
    assert name in message and "after 3 attempts" in message and "validation failed" in message
    assert not (local / name).exists() and not partial_path(local / name).exists()
    assert len(server.requests_for(name)) == 3


def test_server_errors_are_retried(served):
    server, shards, local = served
    name = shards[0].name
    server.script(name, "error503", "error503")
    dest = download_file(server.url(name), local / name, **FAST)
    assert dest.read_bytes() == shards[0].read_bytes()
    assert [s for _, _, s in server.requests_for(name)] == [503, 503, 200]


def test_missing_file_fails_at_once(served):
    server, _, local = served
    with pytest.raises(DataError, match=r"shard_00099\.parquet: HTTP 404"):
        download_file(server.url("shard_00099.parquet"), local / "shard_00099.parquet", **FAST)
    assert len(server.log) == 1  # a 404 is final: no retries
    assert not (local / "shard_00099.parquet").exists()


def test_complete_partial_file_is_checked_and_kept(served):
    """A partial file already as long as the remote one gets a 416; it is validated and moved into place."""
    server, shards, local = served
    name, data = shards[0].name, shards[0].read_bytes()
    resumable_partial(local, name, data, data)
    dest = download_file(server.url(name), local / name, validate=verify_shard, **FAST)
    assert dest.read_bytes() == data
    assert [s for _, _, s in server.requests_for(name)] == [416]


def test_sha256_is_checked(served):
    server, shards, local = served
    name, data = shards[0].name, shards[0].read_bytes()
    with pytest.raises(DataError, match="sha256 mismatch"):
        download_file(server.url(name), local / name, retries=1, sha256="0" * 64, **FAST)
    assert not (local / name).exists()
    good = hashlib.sha256(data).hexdigest()
    assert download_file(server.url(name), local / name, sha256=good, **FAST).read_bytes() == data


def test_existing_file_is_not_fetched_again(served):
    server, shards, local = served
    name, data = shards[0].name, shards[0].read_bytes()
    local.mkdir()
    (local / name).write_bytes(data)
    download_file(server.url(name), local / name, validate=verify_shard, **FAST)
    assert server.log == []


def test_verify_shard_catches_what_the_footer_check_misses(tmp_path):
    (good,) = make_shards(tmp_path, n=1)
    data = good.read_bytes()
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"\0" * 500 + data[500:])  # a resume onto a wrong prefix: the footer is intact
    parquet.check_shard(bad)  # the cheap check passes...
    with pytest.raises(DataError, match=r"bad\.parquet: not a parquet file"):
        verify_shard(bad)  # ...the full one does not
    bad.write_bytes(data[:4] + b"\xff" * 2000 + data[2004:])  # page data destroyed, magic and footer intact
    with pytest.raises(DataError, match=r"bad\.parquet: corrupt row group"):
        verify_shard(bad)
    verify_shard(good)


def test_download_many_reports_failures_in_one_line_and_keeps_the_rest(served):
    server, shards, local = served
    names = [shards[0].name, "shard_00042.parquet", shards[2].name]
    jobs = [DownloadJob(server.url(n), local / n) for n in names]
    with pytest.raises(DataError) as info:
        download_many(jobs, workers=3, progress=False, validate=verify_shard, **FAST)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("1 of 3 downloads failed: shard_00042.parquet:") and "404" in message
    assert (local / shards[0].name).read_bytes() == shards[0].read_bytes()
    assert (local / shards[2].name).read_bytes() == shards[2].read_bytes()
    assert not (local / "shard_00042.parquet").exists()


# -- size cap and changed remotes -----------------------------------------------------------------------------------
def test_a_file_over_the_size_cap_is_refused_at_once_in_one_line(served):
    server, shards, local = served
    name, size = shards[0].name, shards[0].stat().st_size
    with pytest.raises(DataError) as info:
        download_file(server.url(name), local / name, max_bytes=size - 1, **FAST)
    message = str(info.value)
    assert "\n" not in message and name in message and f"{size:,} bytes, over the {size - 1:,}-byte" in message
    assert len(server.requests_for(name)) == 1  # final: not retried
    assert not (local / name).exists() and not partial_path(local / name).exists()
    assert download_file(server.url(name), local / name, max_bytes=size, **FAST).read_bytes() == shards[0].read_bytes()


def test_a_partial_file_of_unknown_origin_is_not_resumed(served):
    server, shards, local = served
    name, data = shards[1].name, shards[1].read_bytes()
    local.mkdir()
    partial_path(local / name).write_bytes(data[:1000])  # no record of which version these bytes are
    assert download_file(server.url(name), local / name, **FAST).read_bytes() == data
    assert server.requests_for(name) == [(name, None, 200)]
    assert not origin_path(partial_path(local / name)).exists()


def interrupted_then_changed(server, shards, local, new_version):
    """Half of shard 0 downloaded (the connection dropped, no retry left), then the remote file replaced."""
    name = shards[0].name
    server.script(name, "drop")
    with pytest.raises(DataError):
        download_file(server.url(name), local / name, retries=0, **FAST)
    assert partial_path(local / name).stat().st_size == shards[0].stat().st_size // 2
    shards[0].write_bytes(new_version)
    return name


@pytest.mark.parametrize("if_range", [True, False])
def test_a_resume_whose_remote_changed_starts_over(tmp_path, if_range):
    """Honoured If-Range: the server sends the new version whole. Ignored: its 206 carries another ETag, which we
    see, and we start over. Either way the result is the new version, with nothing of the old one."""
    shards = make_shards(tmp_path / "remote")
    new_version = make_shards(tmp_path / "v2", n=1, docs=350)[0].read_bytes()
    with FileServer(tmp_path / "remote", if_range=if_range) as server:
        name = interrupted_then_changed(server, shards, tmp_path / "local", new_version)
        dest = download_file(server.url(name), tmp_path / "local" / name, validate=verify_shard, **FAST)
        statuses = [s for _, _, s in server.requests_for(name)]
    assert dest.read_bytes() == new_version
    assert statuses == ([200, 200] if if_range else [200, 206, 200])


def test_a_resume_whose_remote_changed_size_starts_over_without_etags(tmp_path):
    shards = make_shards(tmp_path / "remote")
    new_version = make_shards(tmp_path / "v2", n=1, docs=350)[0].read_bytes()
    assert len(new_version) != shards[0].stat().st_size
    with FileServer(tmp_path / "remote", etags=False, if_range=False) as server:
        name = interrupted_then_changed(server, shards, tmp_path / "local", new_version)
        dest = download_file(server.url(name), tmp_path / "local" / name, **FAST)  # no validation: only the size
        statuses = [s for _, _, s in server.requests_for(name)]
    assert dest.read_bytes() == new_version and statuses == [200, 206, 200]
