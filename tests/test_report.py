import json

from nanocode.core.io import append_jsonl, write_json
from nanocode.core.workspace import Workspace
from nanocode.evals.report import build_report, curve


def test_report_from_stage_outputs(workspace_base):
    ws = Workspace("t")
    for step, (loss, bpb) in enumerate([(9.0, 3.0), (6.0, 2.2), (4.0, 1.6)]):
        append_jsonl(ws.run_dir("pretrain") / "metrics.jsonl", {"step": step * 10, "loss": loss, "val/web_bpb": bpb})
    with open(ws.run_dir("pretrain") / "metrics.jsonl", "a") as f:
        f.write('{"step": 30, "lo')  # a torn line from a killed run is ignored
    write_json(ws.model_dir / "speedrun" / "pretrain.json", {"stage": "pretrain", "seconds": 12.5})
    write_json(ws.run_dir("eval") / "results.json", {"core": 0.01})
    path = build_report(ws)
    text = path.read_text()
    assert "| val/web_bpb | 1.6 |" in text and "| pretrain | 12.5 |" in text
    assert "metrics.jsonl" in text and "nanocode README" in text and '"core": 0.01' in text
    for png in ("pretrain_loss.png", "pretrain_bpb.png"):
        data = (path.parent / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert json.loads((ws.model_dir / "speedrun" / "pretrain.json").read_text())["seconds"] == 12.5


def test_curves_after_a_resume_draw_each_step_once_with_its_last_record():
    first = [{"step": s, "loss": 10.0 - s} for s in range(1, 6)]  # the interrupted attempt logged 1..5
    resumed = [{"step": s, "loss": 100.0 - s} for s in range(4, 7)]  # resumed from the checkpoint of step 3
    evals = [{"step": 3, "val_bpb": 2.0}, {"step": 6, "val_bpb": 1.5}]
    records = first[:3] + evals[:1] + first[3:] + resumed + evals[1:]
    assert curve(records, "loss") == [(1, 9.0), (2, 8.0), (3, 7.0), (4, 96.0), (5, 95.0), (6, 94.0)]
    assert curve(records, "val_bpb") == [(3, 2.0), (6, 1.5)]
    assert curve(records, "missing") == []


def test_evaluation_section_tables_each_suites_metrics_and_gives_a_failed_suite_its_reason(workspace_base):
    ws = Workspace("ev")
    results = {
        "suites": {
            "tool_calls": {
                "status": "ok",
                "source": {"stage": "sft", "step": 80, "seconds": 3.5},
                "metrics": {
                    "valid_rate": {"value": 0.75, "definition": "share of valid | well-formed calls", "n": 32},
                    "success_rate": {"value": 0.5, "definition": "d", "n": 36, "interval": [0.34, 0.66]},
                },
            },
            "core": {"status": "error", "reason": "DownloadError: no network", "source": {"stage": "sft"}},
        }
    }
    write_json(ws.run_dir("eval") / "results.json", results)
    text = build_report(ws).read_text().split("## Evaluation")[1].split("\n## ")[0]
    assert "### tool_calls\n\nok (stage sft, step 80, seconds 3.5)" in text
    assert "| valid_rate | 0.75 | 32 |  | share of valid \\| well-formed calls |" in text
    assert "| success_rate | 0.5 | 36 | 0.34-0.66 | d |" in text
    assert "### core\n\nerror (stage sft)\n\nDownloadError: no network" in text
