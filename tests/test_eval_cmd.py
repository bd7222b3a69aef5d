"""`nanocode eval`: every suite on a tiny checkpoint into results.json (numbers in range, each with its definition
and source), CORE from a miniature bundle served on 127.0.0.1 and a recorded reason when it is missing, the scorer
against the plain forward, and the tool-call suite on models whose first reply is known."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import optax
import pytest

from nanocode.agents.loading import Loaded
from nanocode.cli.main import main
from nanocode.core import mesh as mesh_lib
from nanocode.core.checkpoint import Checkpointer, make_meta
from nanocode.core.errors import ConfigError
from nanocode.core.workspace import Workspace
from nanocode.data.conversation import ConversationCodec
from nanocode.evals.model_io import make_scorer
from nanocode.evals.run import Evaluation
from nanocode.evals.suites import SuiteContext, humaneval_prompt, run_tool_calls
from nanocode.models.gpt import GPT
from nanocode.train.state import init_train_state
from tests.helpers import load_experiment, small_tokenizer
from tests.httpserver import FileServer
from tests.test_agent_cli import EDIT_CONFIG, EDIT_GIN
from tests.test_chat import scripted_model
from tests.test_core_eval import CORE_YAML, META
from tests.test_engine import full_logits, tiny_model
from tests.test_model_policy import TINY, WIDE, render_call

STEP = 5


def save_untrained(tag: str, stage: str = "sft") -> None:
    """The tokenizer and a freshly initialised EDIT_CONFIG model as `stage`'s checkpoint, as the trainer saves it."""
    workspace = Workspace(tag)
    small_tokenizer().save(workspace.tokenizer_dir)
    factory = mesh_lib.AxesMesh(shape=(1, 1, 1))
    mesh = factory.make()
    with mesh_lib.activate(mesh, factory.rules):
        init = init_train_state(GPT, EDIT_CONFIG, optax.adamw(1e-3), seed=1, mesh=mesh, rules=factory.rules)
    with Checkpointer(workspace.checkpoint_dir(stage)) as ckpt:
        ckpt.save(STEP, init.state, meta=make_meta(config="", tokenizer="t", data_spec="d"))
        ckpt.wait()


def make_bundle(root: Path) -> Path:
    """A miniature CORE bundle (one task of each type), zipped as the real one is."""
    bundle = root / "eval_bundle"
    (bundle / "eval_data").mkdir(parents=True)
    (bundle / "core.yaml").write_text(CORE_YAML)
    (bundle / "eval_meta_data.csv").write_text(META)
    mc = [{"query": f"colour {i}:", "choices": ["red", "blue", "green"], "gold": i % 3} for i in range(4)]
    schema = [{"context_options": ["the sea", "the sky"], "continuation": "is blue", "gold": i % 2} for i in range(4)]
    lm = [{"context": f"count {i}", "continuation": "one two"} for i in range(3)]
    for name, rows in (("mc", mc), ("schema", schema), ("lm", lm)):
        (bundle / "eval_data" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with zipfile.ZipFile(root / "eval_bundle.zip", "w") as z:
        for p in bundle.rglob("*"):
            if p.is_file():
                z.write(p, "eval_bundle/" + str(p.relative_to(bundle)))
    return bundle


def eval_gin(tmp_path: Path, tag: str, *lines: str) -> str:
    path = tmp_path / "eval.gin"
    path.write_text(
        EDIT_GIN.format(tag=tag)
        + "\n".join(
            [
                "Evaluation.humaneval_max_problems = 2",
                "Evaluation.humaneval_max_tokens = 24",
                "Evaluation.agentic_tasks = 2",
                "Evaluation.agentic_max_steps = 2",
                "Evaluation.agentic_max_tokens = 32",
                "Evaluation.tool_call_prompts = 3",
                "Evaluation.tool_call_max_tokens = 32",
                *lines,
            ]
        )
    )
    return str(path)


def read_results(tag: str) -> dict:
    return json.loads((Workspace(tag).run_dir("eval") / "results.json").read_text())


# ------------------------------------------------------------------------------------------------ the scorer
def test_scorer_equals_the_plain_forward_whatever_the_batching():
    model = tiny_model(TINY)
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 512, n).tolist() for n in (5, 17, 40, 128, 3, 9)]
    scorer = make_scorer(model, batch_size=4)  # two batches, padded to buckets 128 and 16
    for seq, (ce, best) in zip(sequences, scorer(sequences), strict=True):
        logits = full_logits(model, seq).astype(np.float64)[:-1]
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        want = -logp[np.arange(len(seq) - 1), seq[1:]]
        assert ce.shape == best.shape == (len(seq) - 1,)
        np.testing.assert_allclose(ce, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(best, logits.argmax(-1))
    # longer than the context: the last 128 tokens are scored, the positions cut off are marked
    long = rng.integers(0, 512, 150).tolist()
    (ce, best), (ce_tail, best_tail) = scorer([long, long[-128:]])
    assert np.isinf(ce[:22]).all() and (best[:22] == -1).all()
    np.testing.assert_array_equal(ce[22:], ce_tail)
    np.testing.assert_array_equal(best[22:], best_tail)


# ------------------------------------------------------------------------------------------------ suites
def context(model, out_dir: Path, stage: str = "sft", **kw) -> SuiteContext:
    """What a suite runs with, around an in-memory model."""
    loaded = Loaded(model, small_tokenizer(), STEP, Path("ckpt"), {})
    return SuiteContext(Evaluation(max_len=1024, **kw), loaded, stage, out_dir, False)


def test_tool_call_suite_counts_only_known_tools_with_their_required_arguments(tmp_path):
    codec = ConversationCodec(small_tokenizer())
    cases = (
        (render_call(codec, "Read", file_path="q.md"), 1.0),
        (render_call(codec, "Read", file="q.md"), 0.0),  # the required file_path is missing
        (render_call(codec, "Dig", file_path="q.md"), 0.0),  # no such tool
    )
    for chain, rate in cases:
        result = run_tool_calls(context(scripted_model(chain, WIDE), tmp_path, tool_call_prompts=3))
        assert result["metrics"]["valid_rate"]["value"] == rate
        assert result["metrics"]["valid_rate"]["n"] == 3 and result["source"]["prompts"] == 3
        records = [json.loads(line) for line in (tmp_path / "tool_calls.jsonl").read_text().splitlines()]
        assert len(records) == 3 and all(r["valid"] == bool(rate) for r in records)
        assert records[0]["reply"]["tool_call"]["args"] in ({"file_path": "q.md"}, {"file": "q.md"})
        naming = result["metrics"]["names_file_rate"]
        assert naming["value"] == 0.0 and naming["n"] == sum(r["names_file"] is not None for r in records) >= 1


def test_humaneval_prompts_for_base_and_chat_models():
    codec = ConversationCodec(small_tokenizer())
    code = 'def add(a, b):\n    """sum"""\n'
    assert humaneval_prompt(codec, code, chat=False) == [codec.ids["bos"], *codec.tok.encode(code)]
    chat = humaneval_prompt(codec, code, chat=True)
    primed = [codec.ids["assistant_start"], *codec.tok.encode(code)]
    assert (
        chat[: -len(primed)]
        == codec.render([{"role": "user", "content": f"complete this python function:\n\n{code}"}])[0]
    )
    assert chat[-len(primed) :] == primed


def test_bad_settings_are_one_line_config_errors():
    for kw, match in (
        ({"suites": ["core", "bogus"]}, "suites"),
        ({"stage": "final"}, "stage"),
        ({"humaneval_samples": 4, "humaneval_ks": [1, 8], "humaneval_temperature": 0.8}, "humaneval_ks"),
        ({"humaneval_samples": 4, "humaneval_ks": [1]}, "greedy samples"),
        ({"agentic_temperature": -1.0}, "agentic_temperature"),
        ({"agentic_tasks_per_kind": {"locate": 8, "debug": 2}}, "agentic_tasks_per_kind"),
        ({"agentic_tasks_per_kind": {"locate": 0}}, "agentic_tasks_per_kind"),
        ({"agentic_samples": -1}, "agentic_samples"),
        ({"agentic_samples": 4, "agentic_sample_temperature": 0.0}, "greedy samples"),
        ({"agentic_sample_kinds": ["locate", "debug"]}, "agentic_sample_kinds"),
    ):
        with pytest.raises(ConfigError, match=match) as e:
            Evaluation(**kw)
        assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------ the command
def test_eval_command_writes_every_suite_and_records_a_missing_bundle(tmp_path, gin_clean, capsys):
    save_untrained("ev")
    make_bundle(tmp_path / "srv")
    with FileServer(tmp_path / "srv") as server:
        gin_file = eval_gin(tmp_path, "ev", f"Evaluation.core_url = '{server.url('eval_bundle.zip')}'")
        assert main(["eval", "--gin_file", gin_file, "--suite", "all", "--quiet"]) == 0
    results = read_results("ev")
    suites = results["suites"]
    assert set(suites) == {"core", "humaneval", "agentic", "tool_calls"}
    for name, entry in suites.items():
        assert entry["status"] == "ok", (name, entry)
        assert entry["source"]["suite"] == name and entry["source"]["step"] == STEP
        assert entry["source"]["stage"] == "sft"  # 'latest': the only stage with a checkpoint
        for key, m in entry["metrics"].items():
            assert m["definition"], key
    m = {name: {k: v["value"] for k, v in entry["metrics"].items()} for name, entry in suites.items()}
    # CORE: 3 tasks, accuracies of 4, 4 and 3 examples; centered accuracy in [-rb / (1 - rb), 1]
    assert suites["core"]["source"]["tasks"] == 3 and suites["core"]["source"]["examples"] == 11
    assert {m["core"][f"accuracy/{t}"] * n for t, n in (("mc_task", 4), ("schema_task", 4), ("lm_task", 3))} <= set(
        range(5)
    )
    assert -1 / 3 - 1e-9 <= m["core"]["core"] <= 1
    assert suites["humaneval"]["source"]["problems"] == 2 and 0 <= m["humaneval"]["pass@1"] <= 1
    assert 0 <= m["agentic"]["success_rate"] <= 1 and 1 <= m["agentic"]["mean_steps"] <= 2
    rate = m["agentic"]["valid_tool_call_rate"]
    assert rate is None or 0 <= rate <= 1
    assert 0 <= m["tool_calls"]["valid_rate"] <= 1 and suites["tool_calls"]["metrics"]["valid_rate"]["n"] == 3
    eval_dir = Workspace("ev").run_dir("eval")
    lines = {name: (eval_dir / f"{name}.jsonl").read_text().splitlines() for name in suites}
    assert [len(lines[n]) for n in ("core", "humaneval", "agentic", "tool_calls")] == [3, 2, 2, 3]
    assert (eval_dir / "config.gin").is_file()

    # CORE again, its bundle gone from the server and from disk: a one-line reason; the others' results are kept
    shutil.rmtree(Workspace("ev").base / "eval_bundle")
    (Workspace("ev").base / "eval_bundle.zip").unlink()
    (tmp_path / "empty").mkdir()
    with FileServer(tmp_path / "empty") as server:
        gin_file = eval_gin(tmp_path, "ev", f"Evaluation.core_url = '{server.url('eval_bundle.zip')}'")
        assert main(["eval", "--gin_file", gin_file, "--suite", "core", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "not evaluated: core" in out
    after = read_results("ev")["suites"]
    assert after["core"]["status"] == "error" and "404" in after["core"]["reason"]
    assert "\n" not in after["core"]["reason"] and after["core"]["source"]["step"] == STEP
    assert after["tool_calls"] == suites["tool_calls"]


def test_eval_without_a_checkpoint_is_one_line(tmp_path, gin_clean, capsys):
    small_tokenizer().save(Workspace("none").tokenizer_dir)
    gin_file = eval_gin(tmp_path, "none")
    assert main(["eval", "--gin_file", gin_file, "--suite", "tool_calls"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nanocode eval: error:") and "checkpoint" in err and "\n" not in err


def test_shipped_eval_gin_files_build(gin_clean):
    """The flagship evaluates every suite at full size; the debug run a few of each, on the model it trained, with
    the system prompt it trained on."""
    flagship = load_experiment(["experiments/d24_tpu_v6e8.gin"])
    assert list(flagship.eval.suites) == ["core", "humaneval", "agentic", "tool_calls"]
    assert flagship.eval.stage == "latest" and flagship.eval.core_max_per_task == -1
    debug = load_experiment(["experiments/debug_cpu.gin"])
    assert debug.eval.agentic_tasks == 36 and debug.eval.max_len is None
    assert list(debug.eval.agentic_stages) == ["sft", "align", "rl"]
    assert debug.eval.model_config.sequence_len == 2048 == debug.inference_model().model_config.sequence_len
    assert debug.eval.system == debug.system_prompt == debug.sft.system_prompt
