"""Data sources: remote shards over a local HTTP server, user shard directories, the `nanocode data` command."""

import gin
import pytest

from nanocode import registry
from nanocode.cli.main import main
from nanocode.core import config
from nanocode.core.errors import ConfigError, DataError
from nanocode.core.workspace import Workspace
from nanocode.data import parquet
from nanocode.data.remote import FineWebEdu, StackV2Python
from nanocode.data.sources import ParquetDir
from tests.httpserver import FileServer
from tests.test_download import make_shards


@pytest.fixture
def server(tmp_path):
    make_shards(tmp_path / "remote", n=4)
    with FileServer(tmp_path / "remote") as s:
        yield s


def test_builtin_sources_are_registered():
    names = registry.names("data_source")
    for name in ("fineweb_edu", "stack_v2_python", "parquet_dir", "embedded_code", "embedded_prose"):
        assert name in names
    assert FineWebEdu.MAX_SHARDS == 1823 and StackV2Python.MAX_SHARDS == 80
    assert FineWebEdu().url(7) == (
        "https://huggingface.co/datasets/karpathy/fineweb-edu-100b-shuffle/resolve/main/shard_00007.parquet"
    )
    assert StackV2Python().url(79).endswith("smohammadi/the-stack-v2-python-shuffle/resolve/main/shard_00079.parquet")


def test_hf_endpoint_moves_every_hub_address(monkeypatch):
    """$HF_ENDPOINT (a mirror) replaces https://huggingface.co in the shard and conversation-set addresses."""
    from nanocode.data.sft import hub_file_url

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/hf/")
    assert FineWebEdu().url(1) == (
        "http://127.0.0.1:9/hf/datasets/karpathy/fineweb-edu-100b-shuffle/resolve/main/shard_00001.parquet"
    )
    assert hub_file_url(None, "me/set", "a.jsonl") == "http://127.0.0.1:9/hf/datasets/me/set/resolve/main/a.jsonl"
    assert hub_file_url("http://m/{repo}--{file}", "me/set", "a.jsonl") == "http://m/me/set--a.jsonl"


def test_remote_source_downloads_into_the_workspace(server):
    source = FineWebEdu(num_shards=3, base_url=server.base_url, workers=2)
    assert source.directory == Workspace().data_dir("fineweb_edu")
    source.prepare(progress=False)
    train, val = source.shard_paths("train"), source.shard_paths("val")
    assert [p.name for p in train] == ["shard_00000.parquet", "shard_00001.parquet"]
    assert [p.name for p in val] == ["shard_00002.parquet"]
    assert next(parquet.iter_texts(val)).startswith("shard 2 document 0:")
    requests = len(server.log)
    source.prepare(progress=False)  # complete: nothing is fetched again
    assert len(server.log) == requests


def test_remote_source_refetches_a_broken_shard(server, tmp_path):
    source = StackV2Python(num_shards=2, base_url=server.base_url, directory=str(tmp_path / "local"))
    source.prepare(progress=False)
    broken = source.shard_paths("val")[0]
    broken.write_bytes(broken.read_bytes()[:200])
    source.prepare(progress=False)
    assert broken.read_bytes() == (tmp_path / "remote" / broken.name).read_bytes()


def test_url_template_and_shard_count_checks(server, tmp_path):
    source = FineWebEdu(num_shards=2, base_url=server.base_url + "/{name}", directory=str(tmp_path / "t"))
    source.prepare(progress=False)
    assert len(source.shard_paths("train")) == 1
    with pytest.raises(ConfigError, match="num_shards = 81"):
        StackV2Python(num_shards=81)
    with pytest.raises(ConfigError, match="num_shards = 1"):
        FineWebEdu(num_shards=1)
    assert StackV2Python(num_shards=-1).num_shards == 80


def test_remote_source_names_a_missing_shard(server, tmp_path):
    source = FineWebEdu(num_shards=3, base_url=server.base_url, directory=str(tmp_path / "local"))
    source.prepare(progress=False)
    (tmp_path / "local" / "shard_00001.parquet").unlink()
    with pytest.raises(DataError, match=r"shard_00001\.parquet: shard missing \(2 of 3 present; run `nanocode data"):
        source.shard_paths("train")


def test_remote_source_fails_in_one_line_when_a_shard_is_not_there(server, tmp_path):
    source = FineWebEdu(num_shards=6, base_url=server.base_url, directory=str(tmp_path / "local"), retries=0)
    with pytest.raises(DataError) as info:
        source.prepare(progress=False)
    assert "\n" not in str(info.value) and str(info.value).startswith("2 of 6 downloads failed: shard_00004.parquet")
    assert parquet.list_shards(tmp_path / "local") == [tmp_path / "local" / parquet.shard_name(i) for i in range(4)]


def test_parquet_dir_source(tmp_path):
    make_shards(tmp_path / "mine", n=3)
    source = ParquetDir(str(tmp_path / "mine"))
    assert source.name == "mine"
    source.prepare()
    assert len(source.shard_paths("train")) == 2 and len(source.shard_paths("val")) == 1


def test_empty_source_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no shards for source 'empty'"):
        ParquetDir(str(tmp_path / "empty")).shard_paths("train")


def test_a_gap_in_the_shards_is_named(tmp_path):
    make_shards(tmp_path / "gap", n=3)
    (tmp_path / "gap" / "shard_00001.parquet").unlink()
    with pytest.raises(DataError, match=r"gap/shard_00001\.parquet: shard missing"):
        ParquetDir(str(tmp_path / "gap")).shard_paths("val")


def test_corrupt_shard_is_named_on_read(tmp_path):
    make_shards(tmp_path / "bad", n=2)
    path = tmp_path / "bad" / "shard_00001.parquet"
    path.write_bytes(path.read_bytes()[:-100])
    (val,) = ParquetDir(str(tmp_path / "bad")).shard_paths("val")
    with pytest.raises(DataError, match=r"bad/shard_00001\.parquet: not a readable parquet file"):
        list(parquet.iter_texts([val]))


# ------------------------------------------------------------------------------------------------ the CLI
def test_cli_downloads_with_nanocode_dataset_names(server, capsys):
    assert (
        main(
            [
                "data",
                "--dataset",
                "the-stack-v2-dedup",
                "--shards",
                "3",
                "--workers",
                "2",
                "--base_url",
                server.base_url,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "stack_v2_python: 2 train + 1 val shards" in out
    assert len(parquet.list_shards(Workspace().data_dir("stack_v2_python"))) == 3


def test_cli_unknown_dataset_is_one_line_listing_the_known(capsys):
    assert main(["data", "--dataset", "wikipedia"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith("nanocode data: error: unknown dataset 'wikipedia' (known: ")
    for name in ("embedded_code", "fineweb_edu", "stack_v2_python", "fineweb-edu", "the-stack-v2-dedup"):
        assert name in err


def test_cli_rejects_flags_a_source_does_not_take(capsys):
    assert main(["data", "--dataset", "embedded_code", "--shards", "4"]) == 2
    assert "--shards does not apply to dataset 'embedded_code'" in capsys.readouterr().err
    assert main(["data", "--dataset", "parquet_dir"]) == 2
    assert "dataset 'parquet_dir' needs --dir" in capsys.readouterr().err


def test_cli_builds_the_embedded_corpus(capsys):
    assert main(["data", "--dataset", "embedded_prose", "--max_docs", "30"]) == 0
    assert "embedded_prose: 1 train + 1 val shards" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ gin wiring
def _probe(mixture):
    return mixture


gin.external_configurable(_probe, "data_gin_probe", module="tests")


def test_sources_are_gin_configurable(gin_clean, tmp_path):
    registry.load_builtins()
    config.parse(
        [], ["fineweb_edu.num_shards = 12", f"fineweb_edu.directory = '{tmp_path}'", "fineweb_edu.workers = 3"]
    )
    source = config.build(FineWebEdu)
    assert (source.num_shards, source.directory, source.workers) == (12, tmp_path, 3)


@pytest.mark.skipif("web_code" not in registry.names("data_mixture"), reason="the web_code mixture is not in yet")
@pytest.mark.parametrize(
    "gin_file, web, code, shards",
    [
        ("experiments/base/data/embedded.gin", "embedded_prose", "embedded_code", None),
        ("experiments/base/data/fineweb_stack.gin", "fineweb_edu", "stack_v2_python", (300, 60)),
    ],
)
def test_data_gin_files_wire_web_and_code(gin_clean, gin_file, web, code, shards):
    config.parse([gin_file], ["tests.data_gin_probe.mixture = @web_code()"])
    mixture = gin.get_configurable("tests.data_gin_probe")()
    sources = sorted(mixture.sources.values(), key=lambda s: s.name != web)
    assert [s.name for s in sources] == [web, code]
    if shards:
        assert tuple(s.num_shards for s in sources) == shards
