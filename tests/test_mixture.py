"""Mixtures: weights and their checks, registry/gin wiring, the loader sharing out each batch's rows, and the curriculum example
(examples/curriculum.py, outside the package) selected by name from a gin file: its weights move batch by batch,
and a 40-step pretraining run logs the realised code share rising."""

import json
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
from nanocode.data.mixture import WebCodeMixture, WeightedMixture, realised_mix
from nanocode.data.packed_stream import PackedStream
from nanocode.data.sources import ParquetSource
from tests.helpers import load_experiment, small_tokenizer
from tests.test_train_pretrain import EXPERIMENT, base, params_for, with_tokenizer, workspace_env  # noqa: F401


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


def test_a_curriculum_without_the_horizon_argument_is_refused_in_one_line(sources, tok):
    class OldCurriculum(WebCodeMixture):
        def weights_at(self, step):
            return {"web": 1.0, "code": 0.0}

    with pytest.raises(ConfigError, match=r"^OldCurriculum.weights_at\(step\): it must take \(step, horizon=None\)"):
        PackedStream(OldCurriculum(sources["web"], sources["code"]), tok, batch_size=2, seq_len=16)


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
def rows_by_source(info, row_len: int) -> list[str]:
    """The source of each row of a batch, checking that every document of a row comes from that one source."""
    rows, pos = [], 0
    for (name, *_), used in info.placed:
        if pos % row_len == 0:
            rows.append(name)
        assert rows[-1] == name, "a row mixes sources"
        pos += used
    return rows


def test_each_batch_shares_its_rows_out_by_the_weights(sources, tok):
    third = write_source(sources["web"].directory.parent / "third", short_docs("web", 40, seed=7))
    weights = {"a": 1.0, "b": 2.0, "c": 5.0}  # of 4 rows: 0.5, 1 and 2.5 rows
    mix = WeightedMixture({"a": sources["web"], "b": sources["code"], "c": third}, weights)
    stream = PackedStream(mix, tok, batch_size=4, seq_len=16, buffer_docs=2, seed=11)
    rows = []
    for _ in range(750):
        next(stream)
        batch_rows = rows_by_source(stream.last_info, 17)
        assert batch_rows.count("a") in (0, 1) and batch_rows.count("b") == 1 and batch_rows.count("c") in (2, 3)
        assert {n: k * 17 for n, k in zip("abc", map(batch_rows.count, "abc"))} == stream.last_info.source_tokens
        rows += batch_rows
    for name, w in weights.items():  # "a" (and so "c") rounds up in half the batches: sd ~0.009 of the rows
        assert abs(rows.count(name) / len(rows) - w / sum(weights.values())) < 0.03, name
    assert realised_mix({"a": 17, "b": 51, "c": 0}) == {"mix_a": 0.25, "mix_b": 0.75, "mix_c": 0.0}


# ---------------------------------------------------------------------------------------------------- curriculum
def test_curriculum_example_selected_by_name_in_gin_moves_the_mix_batch_by_batch(gin_clean, sources, tok, tmp_path):
    gin_file = tmp_path / "curriculum.gin"
    gin_file.write_text(
        "import examples.curriculum\n"
        "tests.mixture_gin_probe.mixture = @linear_curriculum()\n"
        "linear_curriculum.web = @web/parquet_dir()\n"
        "linear_curriculum.code = @code/parquet_dir()\n"
        f"web/parquet_dir.directory = '{sources['web'].directory}'\n"
        f"code/parquet_dir.directory = '{sources['code'].directory}'\n"
        "linear_curriculum.start_code_weight = 0.0\n"
        "linear_curriculum.end_code_weight = 1.0\n"
    )
    config.parse([str(gin_file)])
    mixture = gin.get_configurable("tests.mixture_gin_probe")()
    assert type(mixture).__module__ == "examples.curriculum"
    assert "linear_curriculum" in registry.names("data_mixture")
    assert [mixture.weights_at(s, 51)["code"] for s in (0, 25, 50, 80)] == [0.0, 0.5, 1.0, 1.0]
    assert mixture.weights_at(30)["code"] == 0.0  # no horizon (the tokenizer's sample): the starting weights

    fractions = []
    with PackedLoader(mixture, tok, batch_size=8, seq_len=32, buffer_docs=4, horizon=51) as loader:
        for _ in range(51):
            batch = next(loader)
            fractions.append(loader.last_info.source_tokens["code"] / batch.size)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0  # the weights of the batch's own step, not a lagged one
    for step, fraction in enumerate(fractions):  # each batch: its own step's weight, to within one row of 8
        assert abs(fraction - mixture.weights_at(step, 51)["code"]) < 1 / 8, (step, fractions)


CURRICULUM_RUN = [
    "Pretraining.num_steps = 40",
    "Pretraining.eval_every = 0",
    "Pretraining.checkpoint_every = 0",
    "Pretraining.eval_batches = 1",
]


@pytest.mark.slow
def test_forty_step_run_of_the_curriculum_example_logs_the_code_share_rising(workspace_env):  # noqa: F811
    """examples/curriculum.gin on the tiny debug model, 40 steps: `mix_code` in metrics.jsonl follows 0.1 -> 0.5."""
    ws = with_tokenizer(workspace_env, "curriculum")
    files = [EXPERIMENT, "examples/curriculum.gin"]
    pretraining = load_experiment(files, params_for("curriculum", *CURRICULUM_RUN)).pretraining
    assert pretraining.num_steps == 40 and type(pretraining.mixture).__name__ == "LinearCurriculum"
    pretraining.run(ws, progress=False)
    records = [json.loads(line) for line in (ws.run_dir("pretrain") / "metrics.jsonl").read_text().splitlines()]
    share = {r["step"]: r["mix_code"] for r in records if "mix_code" in r}
    assert sorted(share) == list(range(1, 41))
    assert all(abs(r["mix_code"] + r["mix_web"] - 1.0) < 1e-9 for r in records if "mix_code" in r)
    windows = [sum(share[s] for s in range(start, start + 10)) / 10 for start in (1, 11, 21, 31)]
    expected = [0.1 + 0.4 * (start + 4.5 - 1) / 39 for start in (1, 11, 21, 31)]  # step s trains batch s - 1
    for got, want in zip(windows, expected):  # each batch of 8 rows is within one row of its weight
        assert abs(got - want) < 0.05, (windows, expected)
    assert abs(share[1] - 0.1) < 1 / 8 and abs(share[40] - 0.5) < 1 / 8, share
