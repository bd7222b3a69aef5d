"""Copy drills: documents whose repeated lines only copying predicts; deterministic, registered, wired by gin."""

import gin
import pytest

from nanocode.core.errors import ConfigError, DataError
from nanocode.data import parquet
from nanocode.data.copy_drills import FORMS, CopyDrills, WithDrills


def texts(source, split):
    return list(parquet.iter_texts(source.shard_paths(split)))


def test_every_line_is_written_two_or_three_times_in_a_row(tmp_path):
    source = CopyDrills(directory=str(tmp_path), count=40, doc_chars=600, docs_per_shard=16)
    source.prepare(progress=False)
    docs = texts(source, "train") + texts(source, "val")
    assert len(docs) == 40 and len(set(docs)) == 40
    for doc in docs:
        lines = doc.split("\n")
        runs = [1]
        for previous, line in zip(lines, lines[1:]):
            runs[-1:] = [runs[-1] + 1] if line == previous else [runs[-1], 1]
        assert all(r in (2, 3) for r in runs), runs  # (two different lines in a row are never equal by chance here)
        assert sum(len(line) + 1 for line in lines) >= 600
        assert all(8 <= len(line.split()) <= 30 for line in lines)


def test_same_seed_same_drills_other_seed_others(tmp_path):
    built = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        source = CopyDrills(directory=str(tmp_path / name), count=20, seed=seed)
        source.prepare(progress=False)
        built[name] = texts(source, "train")
    assert built["a"] == built["b"] and built["a"] != built["c"]


def test_bad_ranges_are_refused_with_the_source_name():
    with pytest.raises(DataError, match="copy_drills: repeats"):
        CopyDrills(repeats=(1, 3))
    with pytest.raises(DataError, match="copy_drills: need count"):
        CopyDrills(words_per_line=(5, 4))


def test_the_copy_experiment_drills_for_two_thirds_of_the_run_then_mixes_in_natural_text(gin_clean):
    from nanocode.cli.experiment import load

    experiment = load(["experiments/debug_copy_cpu.gin"])
    sources = experiment.data.sources
    assert isinstance(sources["copy"], CopyDrills)
    assert experiment.data.weights_at(1004, horizon=1500) == {"web": 0.08, "code": 0.02, "copy": 0.9}
    assert experiment.data.weights_at(1005, horizon=1500) == {"web": 0.72, "code": 0.18, "copy": 0.1}
    assert experiment.data.weights_at(0) == {"web": 0.08, "code": 0.02, "copy": 0.0}  # the tokenizer's sample
    assert gin.query_parameter("Pretraining.num_steps") == 1500


def test_a_mix_of_drills_alone_or_without_them_is_refused(tmp_path):
    drills = CopyDrills(directory=str(tmp_path))
    with pytest.raises(ConfigError, match="no source named 'copy'"):
        WithDrills({"drills": drills}, {"drills": 1.0})
    with pytest.raises(ConfigError, match="nothing to tokenize"):
        WithDrills({"copy": drills, "web": drills}, {"copy": 1.0, "web": 0.0})


def test_a_two_phase_mix_switches_from_drills_to_natural_text_at_its_fraction_of_the_run(tmp_path):
    drills, web = CopyDrills(directory=str(tmp_path / "d")), CopyDrills(directory=str(tmp_path / "w"))
    mix = WithDrills(
        {"copy": drills, "web": web}, {"copy": 0.9, "web": 0.1}, then={"copy": 0.2, "web": 0.8}, switch_at=0.25
    )
    assert mix.weights_at(99, horizon=400) == {"copy": 0.9, "web": 0.1}
    assert mix.weights_at(100, horizon=400) == mix.weights_at(399, horizon=400) == {"copy": 0.2, "web": 0.8}
    assert mix.weights_at(300) == {"copy": 0.0, "web": 0.1}  # the tokenizer's sample has no drills in either phase
    with pytest.raises(ConfigError, match="switch_at is a fraction"):
        WithDrills({"copy": drills, "web": web}, {"copy": 0.9, "web": 0.1}, then={"web": 1.0}, switch_at=2)
    with pytest.raises(ConfigError, match="nothing to tokenize"):
        WithDrills({"copy": drills, "web": web}, {"copy": 0.9, "web": 0.1}, then={"copy": 1.0})
    with pytest.raises(ConfigError, match="unknown"):
        WithDrills({"copy": drills, "web": web}, {"copy": 0.9, "web": 0.1}, then={"code": 1.0})


def test_vocab_size_draws_every_word_from_the_most_frequent_identifiers(tmp_path):
    source = CopyDrills(directory=str(tmp_path), count=20, vocab_size=50)
    source.prepare(progress=False)
    words = {w for doc in texts(source, "train") + texts(source, "val") for w in doc.split()}
    assert 20 < len(words) <= 50 and {"self", "return"} <= words  # the most common words of Python sources
    with pytest.raises(DataError, match="copy_drills: vocab_size"):
        CopyDrills(vocab_size=1)


def unform(line: str) -> list[str]:
    """The words of a drill line in any of FORMS."""
    for mark in ("def ", "(", ";", "`", '"', ",", ".py"):
        line = line.replace(mark, " ")
    return line.split()


def test_forms_write_the_copies_of_a_line_around_other_characters(tmp_path):
    source = CopyDrills(directory=str(tmp_path), count=30, doc_chars=800, forms=tuple(FORMS))
    source.prepare(progress=False)
    assert source.params()["forms"] == list(FORMS)
    seen, differing = set(), 0
    for doc in texts(source, "train") + texts(source, "val"):
        lines = doc.split("\n")
        for form, render in FORMS.items():
            seen |= {form for line in lines if line == render(unform(line))}
        words = [unform(line) for line in lines]
        groups = [1]
        for previous, current, line, before in zip(words, words[1:], lines[1:], lines):
            if current == previous:  # another copy of the same words
                groups[-1] += 1
                differing += line != before
            else:
                groups.append(1)
        assert all(g in (2, 3) for g in groups), groups
    assert seen == set(FORMS) and differing > 50  # copies mostly change form
    assert "forms" not in CopyDrills().params()  # plain drills keep the manifests built before forms existed
    with pytest.raises(DataError, match="copy_drills: forms must name some of plain"):
        CopyDrills(forms=("plain", "yaml"))
