"""The BPE tokenizer, its training stage and tok-eval, on real text: this interpreter's stdlib (code) and its
docstrings and pydoc topics (prose), written to parquet shards and read through ParquetSource."""

import ast
import sysconfig
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanocode.cli.main import main as cli_main
from nanocode.core.errors import ConfigError, DataError
from nanocode.core.interfaces import SPECIAL_TOKENS, DataMixture
from nanocode.core.kinds import DATA_MIXTURES, TOKENIZERS
from nanocode.core.workspace import Workspace
from nanocode.data.parquet import shard_name, write_shard
from nanocode.data.sources import ParquetSource
from nanocode.data.tok_eval import SAMPLE_TEXTS, tok_eval
from nanocode.data.tokenizer import META_FILE, RANKS_FILE, TOKEN_BYTES_FILE, BPETokenizer
from nanocode.data.tokenizer_training import TokenizerTraining, sample_documents
from tests.helpers import experiment_gin

STDLIB = Path(sysconfig.get_paths()["stdlib"])
VOCAB = 1024


# ---------------------------------------------------------------------------------------------------- corpora
def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def stdlib_code() -> list[str]:
    """The stdlib's modules (no tests, codec tables or third-party packages), one document per file."""
    skip = {"site-packages", "test", "tests", "encodings", "idlelib", "lib2to3"}
    paths = [p for p in sorted(STDLIB.rglob("*.py")) if not skip & set(p.relative_to(STDLIB).parts)]
    return [text for text in map(read, paths) if len(text) > 500]


def stdlib_prose() -> list[str]:
    """English prose: the pydoc help topics and the longer docstrings of the top-level stdlib modules."""
    from pydoc_data.topics import topics

    docs = [topics[k] for k in sorted(topics)]
    for text in map(read, sorted(STDLIB.glob("*.py"))):
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)]
        docs += [d for d in map(ast.get_docstring, nodes) if d and len(d) > 200]
    return docs


def write_source(directory: Path, docs: list[str], n_shards: int = 4) -> ParquetSource:
    """Docs dealt into n_shards shards with small row groups (the last shard is the val split)."""
    for i in range(n_shards):
        write_shard(directory / shard_name(i), docs[i::n_shards], row_group_size=8)
    return ParquetSource(str(directory))


class FixedMixture(DataMixture):
    """Sources with constant weights."""

    def __init__(self, sources, weights):
        self._sources, self._weights = dict(sources), dict(weights)

    @property
    def sources(self):
        return self._sources

    def weights_at(self, step):
        return self._weights


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return {"prose": write_source(root / "prose", stdlib_prose()), "code": write_source(root / "code", stdlib_code())}


@pytest.fixture(scope="module")
def tok(corpus):
    texts = [d for name in ("prose", "code") for d in sample_texts(corpus[name], 600_000)]
    return BPETokenizer.train(texts, VOCAB)


def sample_texts(source, max_chars, doc_cap=10_000):
    return list(sample_documents(FixedMixture({"s": source}, {"s": 1.0}), max_chars, doc_cap))


# ---------------------------------------------------------------------------------------------------- encoding
text_with_specials = st.lists(st.one_of(st.text(), st.sampled_from(SPECIAL_TOKENS))).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), text_with_specials))
def test_decode_encode_roundtrip_and_no_special_ids_from_plain_text(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert max(ids, default=0) < tok.vocab_size - len(SPECIAL_TOKENS)  # no special id unless allowed
    assert tok.encode_batch([text]) == [ids]


def test_special_tokens_only_when_allowed(tok):
    text = "<|user_start|>hi<|user_end|><|bos|>"
    specials = set(tok.special_tokens.values())
    assert not specials & set(tok.encode(text))
    assert not specials & {i for ids in tok.encode_batch([text, "<|assistant_end|>"]) for i in ids}
    ids = tok.encode(text, allowed_special={"<|user_start|>", "<|user_end|>"})
    assert ids[0] == tok.special_id("<|user_start|>") and tok.special_id("<|user_end|>") in ids
    assert tok.special_id("<|bos|>") not in ids
    assert tok.encode(text, allowed_special="all")[-1] == tok.bos_id
    assert tok.decode(tok.encode(text, allowed_special="all")) == text
    with pytest.raises(ValueError, match="not special tokens"):
        tok.encode(text, allowed_special={"<|python_start|>"})
    assert tok.encode("x", bos=True) == [tok.bos_id, *tok.encode("x")]
    assert tok.encode_batch(["x", ""], bos=True) == [[tok.bos_id, *tok.encode("x")], [tok.bos_id]]


def test_id_layout_and_token_bytes(tok):
    n_ranks = VOCAB - len(SPECIAL_TOKENS)
    assert tok.vocab_size == VOCAB
    assert [tok.special_id(t) for t in SPECIAL_TOKENS] == list(range(n_ranks, VOCAB))
    with pytest.raises(KeyError, match="not a special token"):
        tok.special_id("<|python_start|>")
    tb = tok.token_bytes()
    assert tb.shape == (VOCAB,) and tb.dtype == np.int32
    assert (tb[n_ranks:] == 0).all() and (tb[:256] == 1).all() and (tb[256:n_ranks] >= 2).all()
    text = "def tokenize(self, text):\n    return self.encode(text)  # naïve"
    assert tb[tok.encode(text)].sum() == len(text.encode("utf-8"))  # bytes per token add up (bits per byte)
    assert len(tok.encode(text)) < len(text.encode("utf-8")) / 2  # it learned merges from code


def test_train_needs_enough_text():
    with pytest.raises(DataError, match="merges could be learned from 11 chars"):
        BPETokenizer.train(["hello world"], 600)
    with pytest.raises(ValueError, match="too small"):
        BPETokenizer.train(["hello world"], 260)


# ---------------------------------------------------------------------------------------------------- save / load
def test_save_load_roundtrip(tok, tmp_path):
    tok.save(tmp_path / "t")
    assert {p.name for p in (tmp_path / "t").iterdir()} == {META_FILE, RANKS_FILE, TOKEN_BYTES_FILE}
    loaded = BPETokenizer.load(tmp_path / "t", expected_vocab_size=VOCAB)
    text = SAMPLE_TEXTS["code"] + SAMPLE_TEXTS["korean"] + "<|bos|>"
    assert loaded.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
    assert loaded.special_tokens == tok.special_tokens and loaded.pattern == tok.pattern
    np.testing.assert_array_equal(np.load(tmp_path / "t" / TOKEN_BYTES_FILE), tok.token_bytes())
    assert TOKENIZERS.get("bpe") is BPETokenizer


def test_load_errors_are_one_line_naming_the_file(tok, tmp_path):
    d = tmp_path / "t"
    with pytest.raises(DataError, match="no tokenizer directory"):
        BPETokenizer.load(d)
    tok.save(d)
    with pytest.raises(DataError, match=f"{d / META_FILE}: vocab_size {VOCAB} .*another vocab") as info:
        BPETokenizer.load(d, expected_vocab_size=32768)
    assert "\n" not in str(info.value)

    ranks = d / RANKS_FILE
    data = bytearray(ranks.read_bytes())
    data[100] = ord("A") if data[100] != ord("A") else ord("B")
    ranks.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{ranks}: corrupt") as info:
        BPETokenizer.load(d)
    assert "\n" not in str(info.value)

    ranks.unlink()
    with pytest.raises(DataError, match=f"{ranks}: missing"):
        BPETokenizer.load(d)


# ---------------------------------------------------------------------------------------------------- training stage
def test_sampling_draws_row_groups_by_weight_caps_docs_and_stops(corpus):
    mixture = FixedMixture(corpus, {"prose": 0.8, "code": 0.2})
    chars = Counter()
    docs = list(sample_documents(mixture, 100_000, doc_cap=100, seed=1, chars_by_source=chars))
    assert set(map(len, docs)) == {100}  # every doc is longer than the cap...
    assert sum(map(len, docs)) == 100_000 == sum(chars.values())
    code_share = chars["code"] / 100_000  # ...so this is the share of the 125 row groups drawn from code
    assert 0.1 < code_share < 0.3, code_share

    # a source that runs out drops out of the draw; asked for more than there is, we get every train doc once
    docs = sample_documents(mixture, 10**9, doc_cap=10**9)
    assert Counter(docs) == Counter(
        sample_texts(corpus["prose"], 10**9, 10**9) + sample_texts(corpus["code"], 10**9, 10**9)
    )


def test_training_config_errors(corpus):
    mixture = FixedMixture(corpus, {"prose": 1.0})
    with pytest.raises(ConfigError, match="vocab_size = 100"):
        TokenizerTraining(vocab_size=100, max_chars=10, mixture=mixture)
    with pytest.raises(ConfigError, match="max_chars = 0"):
        TokenizerTraining(vocab_size=VOCAB, max_chars=0, mixture=mixture)
    with pytest.raises(KeyError, match="unknown tokenizer 'bpf'; did you mean 'bpe'"):
        TokenizerTraining(tokenizer="bpf", vocab_size=VOCAB, max_chars=10, mixture=mixture)
    with pytest.raises(ConfigError, match="positive weight"):
        next(sample_documents(FixedMixture(corpus, {"web": 1.0}), 10, 10))


def test_code_in_the_mixture_compresses_code_better(corpus):
    """Same vocab, same amount of text: the prose+code tokenizer packs more code bytes per token than prose-only."""
    mixed, prose_only = Workspace("mixed"), Workspace("prose_only")
    for workspace, weights in ((mixed, {"prose": 0.8, "code": 0.2}), (prose_only, {"prose": 1.0})):
        stage = TokenizerTraining(vocab_size=VOCAB, max_chars=600_000, mixture=FixedMixture(corpus, weights))
        assert sum(map(len, stage.texts(progress=False))) == 600_000  # neither runs out of text
        stage.run(workspace, progress=False)
    ours = BPETokenizer.load(mixed.tokenizer_dir, expected_vocab_size=VOCAB)
    other = BPETokenizer.load(prose_only.tokenizer_dir, expected_vocab_size=VOCAB)
    rows, report = tok_eval(ours, FixedMixture(corpus, {}), other=other, sample_chars=200_000, other_name="prose")
    by_name = {r.name: r for r in rows}
    assert set(by_name) == set(SAMPLE_TEXTS) | {"prose-train", "prose-val", "code-train", "code-val"}
    for name in ("code", "code-train", "code-val"):
        assert by_name[name].ratio > 1.05 * by_name[name].other_ratio, (name, by_name[name])
    assert by_name["prose-val"].other_ratio > by_name["prose-val"].ratio  # and the prose tokenizer wins on prose
    assert "| code-val |" in report and "prose bytes/token" in report


# ---------------------------------------------------------------------------------------------------- CLI
class DirMixture(FixedMixture):
    """Prose and code ParquetSources under one directory (for gin)."""

    def __init__(self, root: str, code_weight: float = 0.2):
        root = Path(root)
        super().__init__(
            {"prose": ParquetSource(str(root / "prose")), "code": ParquetSource(str(root / "code"))},
            {"prose": 1 - code_weight, "code": code_weight},
        )


def test_cli_tok_train_then_tok_eval(corpus, workspace_base, gin_clean, capsys, tmp_path):
    """An experiment with only its tokenizer stage: the vocabulary is the model's, the text the experiment's data."""
    root = corpus["prose"].directory.parent
    lines = experiment_gin(
        "base/model/d3.gin", "base/mesh/cpu.gin", "base/tokenizer/debug.gin", keep=("tokenizer_training",)
    )
    lines += [
        "Experiment.tag = 'cli'",
        "Experiment.data = @test_dirs_mixture()",
        f"test_dirs_mixture.root = '{root}'",
        "GPTConfig.vocab_size = 700",
        "TokenizerTraining.max_chars = 300_000",
    ]
    (tmp_path / "tok.gin").write_text("\n".join(lines) + "\n")
    flags = ["--gin_file", str(tmp_path / "tok.gin")]
    with DATA_MIXTURES.temporary("test_dirs_mixture", DirMixture):
        assert cli_main(["tok-train", "--quiet", "--prepare", *flags]) == 0
        tok_dir = workspace_base / "cli" / "tokenizer"
        assert "GPTConfig.vocab_size = 700" in (tok_dir / "config.gin").read_text()
        assert BPETokenizer.load(tok_dir, expected_vocab_size=700).vocab_size == 700

        assert cli_main(["tok-eval", *flags, "--compare", str(tok_dir), "--sample_chars", "20000"]) == 0
        table = (tok_dir / "tok_eval.md").read_text()
        assert "| code-val |" in table and "+0.0%" in table  # compared with itself
        assert (tok_dir / "tok_eval_config.gin").is_file()

        # the experiment's vocab differs from the saved tokenizer's: one line, exit 2
        capsys.readouterr()
        assert cli_main(["tok-eval", *flags, "--gin_param", "GPTConfig.vocab_size = 800"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "another vocab" in err and str(tok_dir / META_FILE) in err
