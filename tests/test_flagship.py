"""The experiments users run: every file in experiments/ builds every stage with the settings it promises; removing
a binding is one line naming the file and the field; and (slow) each flagship experiment's whole speedrun runs on 8
simulated CPU devices with only tests/flagship_overlay.gin shrinking sizes, its data downloaded by the real
downloaders from a miniature Hub served on 127.0.0.1 at the real URL paths."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from nanocode.agents.policy import system_prompt
from nanocode.cli.experiment import STAGES
from nanocode.cli.main import main
from nanocode.core.errors import ConfigError
from nanocode.core.workspace import Workspace
from tests.helpers import load_experiment
from tests.httpserver import FileServer
from tests.hub_fixture import build_hub

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.name for p in (REPO / "experiments").glob("*.gin"))
# Built by `nanocode synth tasks`, without a teacher.
OFFLINE = ("debug_cpu.gin", "debug_copy_cpu.gin", "debug_copy_d6.gin", "debug_copy_d6_replay.gin")
FLAGSHIPS = ["d12_gpu.gin", "d20_tpu_v6e8.gin", "d24_tpu_v6e8.gin"]
# nanocode's per-chip batch sizes x chips (README / speedrun scripts): (pretrain rows, SFT rows, DPO pairs)
NANOCODE_BATCHES = {
    "d12_gpu.gin": (1024, 1024, 256),
    "d20_tpu_v6e8.gin": (512, 512, 256),
    "d24_tpu_v6e8.gin": (256, 256, 256),
}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_builds_every_stage(name, gin_clean):
    experiment = load_experiment([f"experiments/{name}"])
    for field, cls in STAGES.items():
        stage = getattr(experiment, field)
        if stage is None:
            assert name in OFFLINE and field == "synth", (name, field)  # offline: no teacher
            continue
        assert isinstance(stage, cls), (field, type(stage))
        for shared in getattr(cls, "FROM_EXPERIMENT", ()):  # every stage holds the experiment's pieces
            want = experiment.shared(shared)
            have = getattr(stage, shared)
            if shared == "model_config" and getattr(stage, "sequence_len", None):  # a stage with its own context
                want = dataclasses.replace(want, sequence_len=stage.sequence_len)
            assert have == want, (field, shared)
    assert experiment.system_prompt == system_prompt()  # nanocode's, listing the registered tools
    assert (
        experiment.sft.system_prompt
        == experiment.align.system_prompt
        == experiment.eval.system
        == experiment.system_prompt
    )


@pytest.mark.parametrize("name", FLAGSHIPS)
def test_flagships_have_nanocodes_settings(name, gin_clean):
    experiment = load_experiment([f"experiments/{name}"])
    pretrain_rows, sft_rows, dpo_pairs = NANOCODE_BATCHES[name]
    assert experiment.pretraining.batch_size == pretrain_rows
    assert experiment.sft.batch_size == sft_rows and experiment.align.batch_size == dpo_pairs
    assert [d.name for d in experiment.sft.datasets] == ["nanocode-tulu-selfoss-evol", "nanocode-long-context"]
    assert type(experiment.align.objective).__name__ == "IPO" and experiment.align.objective.beta == 0.5
    assert [d.repo for d in experiment.align.datasets] == [
        "smohammadi/nanocode-tulu-selfoss-evol-preference",
        "smohammadi/nanocode-long-context-preference",
    ]
    assert list(experiment.eval.suites) == ["core", "humaneval", "agentic", "tool_calls"]
    assert experiment.synth.teacher is not None and experiment.report is not None
    assert experiment.tokenizer_training.vocab_size == experiment.model_config.vocab_size == 32768


def removed(tmp_path: Path, pattern: str) -> Path:
    """A copy of experiments/ in tmp_path with every line matching `pattern` deleted, from whichever files bind it."""
    tree = tmp_path / "experiments"
    shutil.copytree(REPO / "experiments", tree)
    deleted = 0
    for path in tree.rglob("*.gin"):
        lines = path.read_text().splitlines()
        kept = [line for line in lines if not re.match(pattern, line)]
        deleted += len(lines) - len(kept)
        path.write_text("\n".join(kept) + "\n")
    assert deleted, pattern
    return tmp_path


@pytest.mark.parametrize("field", list(STAGES))
def test_removing_a_stage_binding_is_one_line_naming_file_and_field(field, tmp_path, gin_clean, monkeypatch, capsys):
    monkeypatch.chdir(removed(tmp_path, rf"Experiment\.{field} ="))
    with pytest.raises(ConfigError) as e:
        load_experiment(["experiments/d24_tpu_v6e8.gin"])
    message = str(e.value)
    assert "\n" not in message and message.startswith("experiments/d24_tpu_v6e8.gin: ")
    assert f"Experiment.{field} is not bound" in message
    # the same through the CLI, for any command, before any compute
    assert main(["plan", "--gin_file", "experiments/d24_tpu_v6e8.gin"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"Experiment.{field} is not bound" in err


@pytest.mark.parametrize(
    "name, binding, stage",
    [
        ("d24_tpu_v6e8.gin", "SFTTraining.batch_size", "sft"),
        ("d20_tpu_v6e8.gin", "Alignment.batch_size", "align"),
        ("d12_gpu.gin", "Pretraining.batch_size", "pretraining"),
        ("debug_cpu.gin", "Experiment.tag", None),
    ],
)
def test_removing_a_stage_setting_is_one_line_naming_file_and_field(
    name, binding, stage, tmp_path, gin_clean, monkeypatch
):
    monkeypatch.chdir(removed(tmp_path, rf"{re.escape(binding)} ="))
    with pytest.raises(ConfigError) as e:
        load_experiment([f"experiments/{name}"])
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"experiments/{name}: {binding} is not bound")
    if stage:
        assert message.endswith(f"(the {stage} stage)")


def test_a_stage_binding_what_the_experiment_supplies_is_refused(gin_clean):
    with pytest.raises(
        ConfigError, match=r"SFTTraining\.model_config is bound on the stage.*bind Experiment\.model_config"
    ):
        load_experiment(
            ["experiments/debug_cpu.gin"], ["SFTTraining.model_config = @sft/GPTConfig()", "sft/GPTConfig.n_layer = 5"]
        )


def test_a_left_out_stage_is_one_line_from_its_command(gin_clean, capsys):
    assert main(["synth", "scenarios", "--gin_file", "experiments/debug_cpu.gin"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "nanocode synth: error: experiments/debug_cpu.gin: Experiment.synth = None: this experiment has no synth stage"
    )


def test_config_prints_the_experiment_as_a_tree(gin_clean, capsys):
    assert main(["config", "--gin_file", "experiments/d24_tpu_v6e8.gin"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Experiment (experiments/d24_tpu_v6e8.gin)\n  tag: 'd24'\n")
    for field in STAGES:
        assert re.search(rf"^  {field}: \w+$", out, re.M), field
    assert re.search(r"^    batch_size: 256$", out, re.M) and "objective: IPO" in out
    assert "  tokenizer: 'bpe'" in out and "num_shards: 300" in out
    assert main(["config", "--gin_file", "experiments/d24_tpu_v6e8.gin", "--gin"]) == 0
    assert "Experiment.tag = 'd24'" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------- rehearsal
@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with FileServer(build_hub(tmp_path_factory.mktemp("hub"))) as server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize("name", FLAGSHIPS)
def test_flagship_speedrun_runs_every_stage(name, hub, workspace_base, monkeypatch, gin_clean, capsys):
    monkeypatch.setenv("HF_ENDPOINT", hub.base_url)
    before = len(hub.log)
    argv = ["speedrun", f"--gin_file=experiments/{name}", "--gin_file=tests/flagship_overlay.gin"]
    argv.append(f"--gin_param=Evaluation.core_url = '{hub.url('eval_bundle.zip')}'")
    assert main(argv) == 0, capsys.readouterr().err[-3000:]
    tag = name.split("_")[0]
    workspace = Workspace(tag)
    markers = sorted(p.stem for p in (workspace.model_dir / "speedrun").glob("*.json"))
    assert markers == sorted(
        ["tokenizer", "tokenizer-eval", "pretrain", "synth", "sft", "align", "rl", "eval", "report"]
    )
    # the data came through the real downloaders, from the real URL paths
    fetched = {entry[0] for entry in hub.log[before:] if entry[2] == 200}
    assert "datasets/karpathy/fineweb-edu-100b-shuffle/resolve/main/shard_00002.parquet" in fetched
    assert (
        "datasets/smohammadi/nanocode-long-context-preference/resolve/main/preference_rollouts_train.jsonl" in fetched
    )
    assert "eval_bundle.zip" in fetched
    for stage in ("pretrain", "sft", "align"):
        records = [json.loads(line) for line in (workspace.run_dir(stage) / "metrics.jsonl").open()]
        assert any("loss" in r for r in records) and any(k.endswith("bpb") for r in records for k in r), stage
        assert f"Experiment.tag = '{tag}'" in (workspace.run_dir(stage) / "config.gin").read_text()
    results = json.loads((workspace.run_dir("eval") / "results.json").read_text())["suites"]
    assert {s: results[s]["status"] for s in results} == dict.fromkeys(
        ["core", "humaneval", "agentic", "tool_calls"], "ok"
    )
    assert results["core"]["source"]["stage"] == "rl"
    assert any("reward" in json.loads(line) for line in (workspace.run_dir("rl") / "metrics.jsonl").open())
    assert (workspace.report_dir / "report.md").is_file()
