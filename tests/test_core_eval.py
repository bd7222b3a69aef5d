import json
import math
import re
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

# DCLM's layout: each item a bare `-` with its keys below; `has_categories` is one of the keys we ignore.
CORE_YAML = """icl_tasks:
-
  label: mc_task
  dataset_uri: mc.jsonl
  num_fewshot: [1]
  icl_task_type: multiple_choice
  has_categories: true
-
  label: schema_task
  dataset_uri: schema.jsonl
  num_fewshot: [0]
  icl_task_type: schema
  continuation_delimiter: " "
-
  label: lm_task
  dataset_uri: lm.jsonl
  num_fewshot: 0
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


DCLM_YAML = r"""# a trimmed copy of DCLM's core.yaml
icl_tasks:
-
  label: hellaswag_zeroshot
  dataset_uri: language_understanding/hellaswag.jsonl
  num_fewshot: [0]
  icl_task_type: multiple_choice
-
  label: jeopardy
  dataset_uri: world_knowledge/jeopardy_all.jsonl
  num_fewshot: [10]
  icl_task_type: language_modeling
  continuation_delimiter: "\nAnswer: "
  has_categories: true
-
  label: bigbench_cs_algorithms
  dataset_uri: symbolic_problem_solving/bigbench_cs_algorithms.jsonl
  num_fewshot: 10  # an int as well as a list
  icl_task_type: language_modeling
-
  label: lang_c#
  dataset_uri: code/c#.jsonl
  num_fewshot: [3, 5]
  icl_task_type: schema
-
  label: "lang #2"
  dataset_uri: 'code/#2.jsonl'
  icl_task_type: schema
  continuation_delimiter: ' '
"""


def test_core_yaml_reads_dclm_layout():
    assert parse_core_yaml(DCLM_YAML) == [
        Task("hellaswag_zeroshot", "multiple_choice", "language_understanding/hellaswag.jsonl", 0, " "),
        Task("jeopardy", "language_modeling", "world_knowledge/jeopardy_all.jsonl", 10, "\nAnswer: "),
        Task(
            "bigbench_cs_algorithms", "language_modeling", "symbolic_problem_solving/bigbench_cs_algorithms.jsonl", 10
        ),
        Task("lang_c#", "schema", "code/c#.jsonl", 3),  # `#` after a non-space is text; of [3, 5] the first
        Task("lang #2", "schema", "code/#2.jsonl", 0),  # quoted, `#` may follow a space; num_fewshot defaults to 0
    ]
    assert [t.label for t in parse_core_yaml(CORE_YAML)] == ["mc_task", "schema_task", "lm_task"]


TASK = "icl_tasks:\n-\n  label: t\n  dataset_uri: t.jsonl\n  icl_task_type: schema\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("icl_tasks:\n-\n  label: t\n    dataset_uri: t.jsonl\n", r"core.yaml:4:16: not valid YAML: mapping values"),
        ("icl_tasks:\n- label: t\n  num_fewshot: [1\n", r"core.yaml:4:1: not valid YAML"),
        ("", "core.yaml: no icl_tasks list"),
        ("tasks:\n- label: t\n", "core.yaml: no icl_tasks list"),
        ("icl_tasks: []\n", "core.yaml: no icl_tasks list"),
        ("icl_tasks:\n- just a string\n", r"core.yaml: icl_tasks\[0\] is not a mapping"),
        ("icl_tasks:\n-\n  label: t\n  icl_task_type: schema\n", r"core.yaml: icl_tasks\[0\] 't': no dataset_uri"),
        ("icl_tasks:\n-\n  dataset_uri: t.jsonl\n  icl_task_type: schema\n", r"icl_tasks\[0\]: no label"),
        (
            "icl_tasks:\n-\n  label: yes\n  dataset_uri: t\n  icl_task_type: schema\n",
            r"icl_tasks\[0\]: label True is not a string",
        ),
        (TASK.replace("schema", "generation"), "unknown icl_task_type 'generation'"),
        (TASK + "  num_fewshot: []\n", r"num_fewshot \[\] is not a count"),
        (TASK + "  num_fewshot: [ten]\n", r"num_fewshot \['ten'\] is not a count"),
        (TASK + "  num_fewshot: -1\n", "num_fewshot -1 is not a count"),
        (TASK + "  num_fewshot: true\n", "num_fewshot True is not a count"),
        (TASK + "  continuation_delimiter: 1\n", "continuation_delimiter 1 is not a string"),
    ],
)
def test_core_yaml_errors_name_the_file_in_one_line(tmp_path, text, message):
    where = str(tmp_path / "core.yaml")
    with pytest.raises(DataError, match=message) as e:
        parse_core_yaml(text, where)
    assert str(e.value).startswith(where) and "\n" not in str(e.value)


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


def test_evaluate_names_the_bundle_core_yaml(bundle):
    (bundle / "core.yaml").write_text(CORE_YAML.replace("  icl_task_type: schema", "    icl_task_type: schema"))
    with pytest.raises(DataError, match=re.escape(f"{bundle / 'core.yaml'}:12:5: not valid YAML")) as e:
        evaluate(bundle, list, 0, lambda seqs: [])
    assert "\n" not in str(e.value)


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
