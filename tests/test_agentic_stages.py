"""Evals that can tell: success with a 95% Wilson interval per kind and per held-out family, the agentic suite run on
each stage's checkpoint side by side, and the report's agentic and RL sections."""

from __future__ import annotations

import json

import pytest

from nanocode.agents.eval_suite import AgenticResult, TaskOutcome, success_summary, wilson_interval
from nanocode.agents.tasks import EVAL_TEMPLATES, RepoTasks
from nanocode.cli.main import main
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
