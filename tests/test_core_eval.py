import json
import math
import zipfile
from collections import Counter

import numpy as np
import pytest

from nanocode.core.errors import DataError
from nanocode.evals.core import (
    Task,
    centered,
    continuation_spans,
    core_metric,
    download_bundle,
    evaluate,
    parse_core_yaml,
    render_prompts,
)

CORE_YAML = """icl_tasks:
- label: mc_task
  dataset_uri: mc.jsonl
  num_fewshot: [1]
  icl_task_type: multiple_choice
- label: schema_task
  dataset_uri: schema.jsonl
  num_fewshot: [0]
  icl_task_type: schema
  continuation_delimiter: ' '
- label: lm_task
  dataset_uri: lm.jsonl
  num_fewshot: [0]
  icl_task_type: language_modeling
"""
META = "Eval Task,Random baseline\nmc_task,25.0\nschema_task,50.0\nlm_task,0.0\n"


def test_centering_and_averaging_match_hand_computation():
    assert centered(0.25, 25.0) == pytest.approx(0.0)
    assert centered(1.0, 25.0) == pytest.approx(1.0)
    assert centered(0.625, 50.0) == pytest.approx(0.25)  # (0.625 - 0.5) / 0.5
    core, per_task = core_metric({"a": 0.625, "b": 0.4, "c": 0.1}, {"a": 50.0, "b": 25.0, "c": 0.0})
    assert per_task == pytest.approx({"a": 0.25, "b": 0.2, "c": 0.1})  # b: (0.4 - 0.25) / 0.75
    assert core == pytest.approx((0.25 + 0.2 + 0.1) / 3)


def test_core_yaml_reader():
    tasks = parse_core_yaml(CORE_YAML)
    assert tasks[0] == Task("mc_task", "multiple_choice", "mc.jsonl", 1, " ")
    assert tasks[2].task_type == "language_modeling"
    with pytest.raises(DataError, match="core.yaml:2"):
        parse_core_yaml("icl_tasks:\n- label x\n")


def test_prompt_rendering_and_spans():
    data = [{"query": "q0", "choices": ["a", "b"], "gold": 1}, {"query": "q1", "choices": ["c", "d"], "gold": 0}]
    prompts = render_prompts(Task("t", "multiple_choice", "", 1), data, 0)
    assert prompts == ["q1 c\n\nq0 a", "q1 c\n\nq0 b"]
    assert continuation_spans("multiple_choice", [[1, 2, 3, 4], [1, 2, 5]]) == [(2, 4), (2, 3)]
    assert continuation_spans("schema", [[1, 2, 9, 9], [3, 9, 9]]) == [(2, 4), (1, 3)]
    lm = render_prompts(Task("t", "language_modeling", "", 0), [{"context": " the cat ", "continuation": "sat"}], 0)
    assert lm == ["the cat", "the cat sat"]


class CharBigram:
    """A real (if tiny) language model for the tests: character bigrams with add-one smoothing."""

    def __init__(self, text):
        self.pairs = Counter(zip(text, text[1:]))
        self.firsts = Counter(text[:-1])
        self.vocab = 256

    def encode(self, s):
        return [ord(c) % 256 for c in s]

    def __call__(self, sequences):
        out = []
        for seq in sequences:
            ce, argmax = [], []
            for a, b in zip(seq, seq[1:]):
                ca = chr(a)
                p = (self.pairs[(ca, chr(b))] + 1) / (self.firsts[ca] + self.vocab)
                ce.append(-math.log(p))
                best = max(range(256), key=lambda t, ca=ca: self.pairs[(ca, chr(t))])
                argmax.append(best)
            out.append((np.asarray(ce), np.asarray(argmax)))
        return out


@pytest.fixture
def bundle(tmp_path):
    root = tmp_path / "eval_bundle"
    (root / "eval_data").mkdir(parents=True)
    (root / "core.yaml").write_text(CORE_YAML)
    (root / "eval_meta_data.csv").write_text(META)
    mc = [{"query": f"colour {i}:", "choices": ["zqzq", "blue"], "gold": 1} for i in range(4)]
    schema = [{"context_options": ["xjxj", "the sky"], "continuation": "is blue", "gold": 1} for _ in range(4)]
    lm = [{"context": "ab ab", "continuation": "ab"}, {"context": "ab ab", "continuation": "zz"}]
    for name, rows in (("mc", mc), ("schema", schema), ("lm", lm)):
        (root / "eval_data" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_evaluate_on_a_miniature_bundle(bundle):
    model = CharBigram("the sky is blue. " * 20 + "ab " * 60)
    result = evaluate(bundle, model.encode, 0, model)
    assert result["accuracy"] == {"mc_task": 1.0, "schema_task": 1.0, "lm_task": 0.5}
    # centered by hand: mc (1 - .25)/.75 = 1, schema (1 - .5)/.5 = 1, lm 0.5
    assert result["core"] == pytest.approx((1.0 + 1.0 + 0.5) / 3)


def test_bundle_download_from_local_server(bundle, tmp_path):
    from tests.httpserver import FileServer

    archive = tmp_path / "srv" / "eval_bundle.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        for p in bundle.rglob("*"):
            if p.is_file():
                z.write(p, "eval_bundle/" + str(p.relative_to(bundle)))
    with FileServer(archive.parent) as server:
        server.script("eval_bundle.zip", "drop")  # a dropped connection is resumed
        dest = download_bundle(server.url("eval_bundle.zip"), tmp_path / "dl" / "eval_bundle")
    assert (dest / "core.yaml").read_text() == CORE_YAML
    assert (dest / "eval_data" / "lm.jsonl").exists()
