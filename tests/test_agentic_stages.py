"""Evals that can tell: success with a 95% Wilson interval per kind and per held-out family, the agentic suite run on
each stage's checkpoint side by side, and the report's agentic and RL sections."""

from __future__ import annotations

import json

import pytest

from nanocode.agents.eval_suite import (
    AgenticResult,
    TaskOutcome,
    sampled_summary,
    success_summary,
    summarise_sampled,
)
from nanocode.agents.rl_episodes import Rollout
from nanocode.agents.tasks import EVAL_TEMPLATES, RepoTasks
from nanocode.cli.main import main
from nanocode.core.intervals import clustered_interval, paired_difference, wilson_interval
from nanocode.core.io import append_jsonl
from nanocode.core.workspace import Workspace
from nanocode.evals.report import build_report
from tests.test_eval_cmd import eval_gin, read_results, save_untrained


def test_wilson_interval_by_hand():
    # (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z = 1.96
    lo, hi = wilson_interval(0, 33)
    assert lo == 0.0 and hi == pytest.approx(3.8416 / (33 + 3.8416), rel=1e-9)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.236590, abs=1e-6), pytest.approx(0.763410, abs=1e-6))
    assert wilson_interval(33, 33)[1] == 1.0 and wilson_interval(0, 0) == (0.0, 1.0)
    assert success_summary([True, False, False, True]) == {
        "tasks": 4,
        "successes": 2,
        "success_rate": 0.5,
        "interval": list(wilson_interval(2, 4)),
    }


def test_the_held_out_suite_has_36_tasks_over_12_templates_never_trained_on():
    tasks = RepoTasks(seed=0, templates="heldout").tasks(36)
    assert len(EVAL_TEMPLATES) == 12 and len({t.id for t in tasks}) == 36
    assert {t.template for t in tasks} == set(EVAL_TEMPLATES)
    assert all(sum(t.template == name for t in tasks) == 3 for name in EVAL_TEMPLATES)


def outcome(i: int, kind: str, template: str, success: bool) -> TaskOutcome:
    return TaskOutcome(f"t{i}", kind, template, success, "", 1, 0, 0, "end_turn")


def test_metrics_per_kind_and_family_with_intervals():
    outcomes = [
        outcome(0, "fix_bug", "fix_bug:a", True),
        outcome(1, "fix_bug", "fix_bug:a", False),
        outcome(2, "fix_bug", "fix_bug:b", True),
        outcome(3, "implement", "implement:c", False),
    ]
    m = AgenticResult("p", outcomes).metrics()
    assert m["success_rate"] == 0.5 and m["success_interval"] == list(wilson_interval(2, 4))
    assert m["kinds"]["fix_bug"] == success_summary([True, False, True])
    assert m["families"]["fix_bug:a"]["interval"] == list(wilson_interval(1, 2))
    assert m["families"]["implement:c"]["successes"] == 0 and m["success_by_kind"] == {"fix_bug": 2 / 3, "implement": 0}


def test_eval_runs_the_agentic_suite_on_every_stage_and_the_report_sets_them_side_by_side(tmp_path, gin_clean):
    save_untrained("stages", "sft")
    save_untrained("stages", "align")
    gin = eval_gin(tmp_path, "stages", "Evaluation.suites = ['agentic']", "Evaluation.agentic_tasks = 3")
    assert main(["eval", "--gin_file", gin, "--quiet"]) == 0
    agentic = read_results("stages")["suites"]["agentic"]
    assert agentic["source"]["stage"] == "align"  # the latest stage with a checkpoint
    assert set(agentic["by_stage"]) == {"sft", "align"}  # rl has no checkpoint: left out
    for stage, entry in agentic["by_stage"].items():
        assert entry["status"] == "ok" and entry["overall"]["tasks"] == 3, stage
        assert set(entry["families"]) == {t.template for t in RepoTasks(seed=0, templates="heldout").tasks(3)}
        assert (Workspace("stages").run_dir("eval") / entry["log"]).is_file()
    assert agentic["by_stage"]["align"]["log"] == "agentic.jsonl"  # the evaluated stage's own run, not redone
    lo, hi = agentic["metrics"]["success_rate"]["interval"]
    assert 0.0 <= lo <= agentic["metrics"]["success_rate"]["value"] <= hi <= 1.0

    text = build_report(Workspace("stages")).read_text()
    section = text.split("## Agentic success on held-out tasks")[1].split("\n## ")[0]
    assert "| | sft | align |" in section
    assert "weighs the kinds as the suite drew them: fix_bug 3." in section  # the first three templates fix bugs
    overall = [line for line in section.splitlines() if line.startswith("| **all** |")][0]
    k = agentic["by_stage"]["sft"]["overall"]["successes"]
    assert overall.count("/3 (") == 2 and overall.startswith(f"| **all** | {k}/3 (")


def test_eval_samples_episodes_of_each_stage_beside_the_greedy_one(tmp_path, gin_clean):
    save_untrained("sampled", "sft")
    save_untrained("sampled", "rl")
    gin = eval_gin(
        tmp_path, "sampled", "Evaluation.suites = ['agentic']", "Evaluation.agentic_tasks = 3",
        "Evaluation.agentic_stages = ['sft', 'rl']", "Evaluation.agentic_samples = 2",
        "Evaluation.agentic_sample_kinds = ['fix_bug']",
    )  # fmt: skip
    assert main(["eval", "--gin_file", gin, "--quiet"]) == 0
    agentic = read_results("sampled")["suites"]["agentic"]
    assert agentic["metrics"]["sampled_success_rate"]["n"] == 6
    run = Workspace("sampled").run_dir("eval")
    for stage, entry in agentic["by_stage"].items():
        sampled = entry["sampled"]
        assert sampled["overall"]["episodes"] == 6 and sampled["temperature"] == 1.0, stage
        assert set(sampled["task_rates"]) == set(entry["task_rates"])  # the greedy episodes' tasks (all fix_bug)
        assert sum(sampled["stops"].values()) == 6
    # the evaluated stage's (rl) logs are agentic.jsonl and agentic_sampled.jsonl; the other stages' are named
    for stage, log in (("sft", "agentic_sampled_sft.jsonl"), ("rl", "agentic_sampled.jsonl")):
        records = [json.loads(line) for line in (run / log).open()]
        tasks = agentic["by_stage"][stage]["task_rates"]
        assert sorted((r["task_id"], r["sample"]) for r in records) == sorted((t, g) for t in tasks for g in range(2))
    text = build_report(Workspace("sampled")).read_text()
    assert "### Sampled episodes" in text and "rl - sft:" in text.split("### Sampled episodes")[1]


def test_report_rl_section_shows_the_reward_by_quarter_and_its_curve(workspace_base):
    ws = Workspace("rlr")
    for step in range(1, 9):
        record = {"step": step, "reward": step / 10, "success": float(step > 6), "entropy": 3.0, "stop/budget": 1.0}
        append_jsonl(ws.run_dir("rl") / "metrics.jsonl", record)
    append_jsonl(ws.run_dir("rl") / "samples.jsonl", {"step": 8, "task_id": "train-s1-00001", "reward": 1.0})
    path = build_report(ws)
    text = path.read_text()
    assert "## rl" in text and "| 1-2 | 0.150 | 0.000 |" in text and "| 7-8 | 0.750 | 1.000 |" in text
    assert "episodes ended by budget 1.00" in text and "train-s1-00001" in text
    assert (path.parent / "rl_reward.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((ws.run_dir("rl") / "samples.jsonl").read_text())["reward"] == 1.0


# ------------------------------------------------------------------------------------------------ sampled episodes
def test_clustered_interval_lies_between_the_task_and_episode_wilson_intervals():
    # one sample per task: the plain Wilson interval
    assert clustered_interval([1, 0, 0, 1, 1], 1) == wilson_interval(3, 5)
    # samples that always agree carry no more than one per task: Wilson at the number of tasks
    agree = [4] * 10 + [0] * 30
    assert clustered_interval(agree, 4) == pytest.approx(wilson_interval(10, 40))
    # samples that disagree evenly inside every task are as good as fresh tasks: Wilson over episodes (160)
    even = [1] * 40
    assert clustered_interval(even, 4) == pytest.approx(wilson_interval(40, 160))
    # in between: the effective count p(1-p) / (var / n) of per-task rates
    mixed = [0, 1, 2, 4] * 10
    p = sum(mixed) / 160
    rates = [c / 4 for c in mixed]
    var = sum((r - p) ** 2 for r in rates) / 39
    n_eff = p * (1 - p) / (var / 40)
    assert 40 < n_eff < 160
    assert clustered_interval(mixed, 4) == pytest.approx(wilson_interval(p * n_eff, n_eff))
    assert sampled_summary(mixed, 4)["solved"] == 30 and sampled_summary(mixed, 4)["episodes"] == 160


def test_paired_difference_by_hand():
    before = {"a": 0.0, "b": 0.5, "c": 1.0, "d": 0.25, "only_before": 1.0}
    after = {"a": 0.5, "b": 0.5, "c": 0.75, "d": 0.75, "only_after": 0.0}
    d = paired_difference(before, after)
    diffs = [0.5, 0.0, -0.25, 0.5]  # a, b, c, d
    mean = sum(diffs) / 4
    half = 1.96 * (sum((x - mean) ** 2 for x in diffs) / 3 / 4) ** 0.5
    assert d["tasks"] == 4 and d["difference"] == pytest.approx(0.1875)
    assert d["interval"] == [pytest.approx(mean - half), pytest.approx(mean + half)]
    assert (d["better"], d["worse"]) == (2, 1)
    assert paired_difference({"a": 1.0}, {"a": 1.0})["interval"] == [0.0, 0.0]


def test_sampled_episodes_are_counted_per_task_kind_and_family():
    tasks = RepoTasks(seed=0, templates="heldout").tasks(3)
    rewards = {(0, 0): 1.0, (0, 1): 1.0, (1, 1): 1.0}  # task 0 twice, task 1 once, task 2 never
    rollouts = [
        Rollout(
            t, g, [], [], stop_reason="end_turn" if (i, g) in rewards else "budget", reward=rewards.get((i, g), 0.0)
        )
        for i, t in enumerate(tasks)
        for g in range(2)
    ]
    s = summarise_sampled(tasks, rollouts, 2)
    assert s["overall"] == sampled_summary([2, 1, 0], 2) and s["overall"]["successes"] == 3
    assert s["task_rates"] == {tasks[0].id: 1.0, tasks[1].id: 0.5, tasks[2].id: 0.0}
    assert s["stops"] == {"budget": 3, "end_turn": 3}
    assert s["families"][tasks[1].template] == sampled_summary([1], 2)
    assert sum(k["episodes"] for k in s["kinds"].values()) == 6


def test_the_report_shows_each_stages_paired_change_and_the_sampled_table(workspace_base):
    ws = Workspace("paired")
    tasks = {f"t{i}": i for i in range(4)}

    def stage(greedy: list[int], sampled: list[int]) -> dict:
        return {
            "status": "ok",
            "overall": success_summary([bool(x) for x in greedy]),
            "kinds": {"locate": success_summary([bool(x) for x in greedy])},
            "families": {},
            "task_rates": dict(zip(tasks, greedy)),
            "sampled": {
                "overall": sampled_summary(sampled, 4),
                "kinds": {"locate": sampled_summary(sampled, 4)},
                "families": {},
                "temperature": 1.0,
                "task_rates": {t: c / 4 for t, c in zip(tasks, sampled)},
            },
        }

    by_stage = {
        "rl": stage([1, 1, 0, 0], [4, 3, 1, 0]),
        "align": stage([0, 0, 0, 0], [0, 0, 0, 0]),
        "sft": stage([1, 0, 0, 0], [2, 1, 1, 0]),
    }
    results = {"suites": {"agentic": {"status": "ok", "source": {"stage": "rl"}, "by_stage": by_stage}}}
    path = ws.run_dir("eval") / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(results))
    # RL started from SFT (its run's resolved config says so): its change is against SFT, not against align
    ws.run_dir("rl").mkdir(parents=True)
    (ws.run_dir("rl") / "config.gin").write_text("RLTraining.batch_size = 32\nRLTraining.init_from = 'sft'\n")
    text = build_report(ws).read_text()
    greedy, sampled = text.split("## Agentic success on held-out tasks")[1].split("\n## ")[0].split("### Sampled")
    assert "| | sft | align | rl |" in greedy and "| **all** | 1/4 (25%" in greedy and "| 2/4 (50%" in greedy
    assert "align - sft: -25.0 points" in greedy  # align has no config: against the stage before it
    assert "rl - sft: +25.0 points" in greedy and "1 tasks better, 0 worse of 4" in greedy
    assert "rl - align" not in greedy
    assert "run 4 times at temperature 1.0" in sampled
    assert "| **all** | 4/16 (25%" in sampled and "| 8/16 (50%" in sampled
    assert "rl - sft: +25.0 points" in sampled and "2 tasks better, 0 worse of 4" in sampled
