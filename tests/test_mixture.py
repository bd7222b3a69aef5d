"""Mixtures: weights and their checks, registry/gin wiring, the loader's draw proportions, and a curriculum plugin
(outside the package) selected by name from a gin file, whose weight change shows in the loader's batches."""

import random
import sysconfig
from pathlib import Path

import gin
import pytest

import nanocode.registry as registry
from nanocode.core import config
from nanocode.core.errors import ConfigError
from nanocode.data import parquet
from nanocode.data.loader import PackedLoader
from nanocode.data.mixture import WebCodeMixture, WeightedMixture
from nanocode.data.packed_stream import PackedStream
from nanocode.data.sources import ParquetSource
from tests.helpers import small_tokenizer


def short_docs(kind: str, n: int, seed: int = 0) -> list[str]:
    """n real snippets of 10..150 chars: prose from pydoc's topics (web) or stdlib source (code)."""
    if kind == "web":
        from pydoc_data.topics import topics

        text = " ".join(topics[k] for k in sorted(topics))
    else:
        text = "".join(
            p.read_text(encoding="utf-8") for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:20]
        )
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        size = rng.randint(10, 150)
        start = rng.randrange(len(text) - size)
        out.append(text[start : start + size])
    return out


def write_source(directory: Path, docs: list[str], rg: int = 2) -> ParquetSource:
    parquet.write_shard(directory / parquet.shard_name(0), docs[:-4], row_group_size=rg)
    parquet.write_shard(directory / parquet.shard_name(1), docs[-4:], row_group_size=rg)
    return ParquetSource(str(directory))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixture_data")
    return {kind: write_source(root / kind, short_docs(kind, 64, seed=i)) for i, kind in enumerate(("web", "code"))}


@pytest.fixture(scope="module")
def tok():
    return small_tokenizer(512)


# ---------------------------------------------------------------------------------------------------- weights
def test_web_code_is_four_to_one_by_default_and_weights_are_checked(sources):
    mix = WebCodeMixture(sources["web"], sources["code"])
    assert dict(mix.weights_at(0)) == dict(mix.weights_at(10**6)) == {"web": 0.8, "code": 0.2}
    assert list(mix.sources) == ["web", "code"] and mix.sources["code"] is sources["code"]
    assert registry.get("data_mixture", "web_code") is WebCodeMixture
    assert registry.get("data_mixture", "weighted") is WeightedMixture

    bad = [
        (dict(weights={"web": 1, "nope": 1}), "unknown sources \\['nope'\\]"),
        (dict(weights={"web": -1}), "finite and >= 0"),
        (dict(weights={"web": float("nan")}), "finite and >= 0"),
        (dict(weights={"web": 0, "code": 0}), "every weight is zero"),
        (dict(weights={"web": "a lot"}), "not a number"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ConfigError, match=message):
            WeightedMixture(sources, **kwargs)
    with pytest.raises(ConfigError, match="not a DataSource"):
        WeightedMixture({"web": "/some/dir"}, {"web": 1})
    with pytest.raises(ConfigError, match="code_weight must be in"):
        WebCodeMixture(sources["web"], sources["code"], code_weight=1.5)


def _probe(mixture):
    return mixture


gin.external_configurable(_probe, "mixture_gin_probe", module="tests")


def test_weighted_mixture_from_gin(gin_clean, sources):
    config.parse(
        [],
        [
            "tests.mixture_gin_probe.mixture = @weighted()",
            "weighted.sources = {'w': @w/parquet_dir(), 'c': @c/parquet_dir()}",
            f"w/parquet_dir.directory = '{sources['web'].directory}'",
            f"c/parquet_dir.directory = '{sources['code'].directory}'",
            "weighted.weights = {'w': 3, 'c': 1}",
        ],
    )
    mix = gin.get_configurable("tests.mixture_gin_probe")()
    assert isinstance(mix, WeightedMixture) and mix.weights_at(5) == {"w": 3.0, "c": 1.0}
    assert mix.sources["c"].directory == sources["code"].directory


# ---------------------------------------------------------------------------------------------------- proportions
def row_groups_drawn(state) -> dict[str, int]:
    return {n: s["epoch"] * s["row_groups"] + s["position"] for n, s in state["sources"].items()}


def test_draw_proportions_follow_the_weights(sources, tok):
    third = write_source(sources["web"].directory.parent / "third", short_docs("web", 40, seed=7))
    weights = {"a": 1.0, "b": 2.0, "c": 5.0}
    mix = WeightedMixture({"a": sources["web"], "b": sources["code"], "c": third}, weights)
    stream = PackedStream(mix, tok, batch_size=4, seq_len=16, buffer_docs=2, seed=11)
    while stream.draws < 3000:
        next(stream)
    drawn = row_groups_drawn(stream.state())
    assert sum(drawn.values()) == stream.draws
    for name, w in weights.items():  # binomial sd ~0.006-0.009 at 3000 draws; 0.03 is > 3 sd
        assert abs(drawn[name] / stream.draws - w / sum(weights.values())) < 0.03, (name, drawn)


# ---------------------------------------------------------------------------------------------------- plugin
def test_curriculum_plugin_selected_by_name_in_gin_changes_the_mix_with_the_step(gin_clean, sources, tok, tmp_path):
    gin_file = tmp_path / "curriculum.gin"
    gin_file.write_text(
        "import tests.plugins.curriculum\n"
        "tests.mixture_gin_probe.mixture = @linear_curriculum()\n"
        "linear_curriculum.web = @web/parquet_dir()\n"
        "linear_curriculum.code = @code/parquet_dir()\n"
        f"web/parquet_dir.directory = '{sources['web'].directory}'\n"
        f"code/parquet_dir.directory = '{sources['code'].directory}'\n"
        "linear_curriculum.start_code_weight = 0.0\n"
        "linear_curriculum.end_code_weight = 1.0\n"
        "linear_curriculum.steps = 50\n"
    )
    config.parse([str(gin_file)])
    mixture = gin.get_configurable("tests.mixture_gin_probe")()
    assert type(mixture).__module__ == "tests.plugins.curriculum"
    assert "linear_curriculum" in registry.names("data_mixture")
    assert [mixture.weights_at(s)["code"] for s in (0, 25, 50, 80)] == [0.0, 0.5, 1.0, 1.0]

    fractions = []
    with PackedLoader(mixture, tok, batch_size=2, seq_len=32, buffer_docs=4) as loader:
        for _ in range(100):
            batch = next(loader)
            fractions.append(loader.last_info.source_tokens["code"] / batch.size)
    assert fractions[0] == 0.0  # step 0 draws web only
    early, late = sum(fractions[:10]) / 10, sum(fractions[-20:]) / 20  # code weight <= 0.2, then 1
    assert early < 0.3 and late > 0.9, fractions
