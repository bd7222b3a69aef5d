"""Metrics writers: registered by name, several at once from gin, process 0 only; TensorBoard event files read back
with the tensorboard package's own reader, and a resumed run continuing the same curves without duplicate steps."""

import json
import shutil
import sys

import gin
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import nanocode.registry as registry
from nanocode.core.errors import ConfigError
from nanocode.core.workspace import Workspace
from nanocode.train.metric_writers import JsonlWriter, TensorBoardWriter, TrackioWriter, WandbWriter, scalars
from nanocode.train.metrics import MetricsLog
from tests.helpers import load_experiment
from tests.test_train_pretrain import EXPERIMENT, base, params_for, with_tokenizer, workspace_env  # noqa: F401


def read_events(directory) -> EventAccumulator:
    events = EventAccumulator(str(directory))
    events.Reload()
    return events


def test_writers_are_registered_components():
    assert {"jsonl", "tensorboard", "wandb", "trackio"} <= set(registry.names("metrics_writer"))
    assert registry.get("metrics_writer", "tensorboard") is TensorBoardWriter


def test_tensorboard_writer_purges_what_an_interrupted_attempt_wrote_after_the_checkpoint(tmp_path):
    first = MetricsLog((TensorBoardWriter(), JsonlWriter()))
    first.open(tmp_path, stage="pretrain", config="Pretraining.batch_size = 8", start_step=0)
    for step in range(1, 6):
        first.log({"step": step, "loss": 10.0 - step, "note": "text is not a scalar", "mfu": float("nan")})
    first.close()
    resumed = MetricsLog((TensorBoardWriter(), JsonlWriter()))  # resumed from the checkpoint of step 3
    resumed.open(tmp_path, stage="pretrain", config="Pretraining.batch_size = 8", start_step=3)
    for step in range(4, 7):
        resumed.log({"step": step, "loss": 100.0 - step})
    resumed.close()

    events = read_events(tmp_path / "tensorboard")
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [
        (1, 9.0),
        (2, 8.0),
        (3, 7.0),
        (4, 96.0),
        (5, 95.0),
        (6, 94.0),
    ]
    assert "note" not in events.Tags()["scalars"] and "mfu" not in events.Tags()["scalars"]
    configs = events.Tensors("config/text_summary")
    assert [c.step for c in configs] == [0, 4]
    assert b"Pretraining.batch_size = 8" in configs[0].tensor_proto.string_val[0]
    # JSONL keeps both attempts' records of steps 4 and 5: the last per step is the resumed one
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 4, 5, 6]
    assert lines[0] == {"step": 1, "loss": 9.0, "note": "text is not a scalar", "mfu": None}


def test_metrics_log_off_process_zero_writes_nothing(tmp_path):
    log = MetricsLog((JsonlWriter(), TensorBoardWriter()), enabled=False)
    log.open(tmp_path, stage="sft", config="", start_step=0)
    log.log({"step": 1, "loss": 1.0})
    log.close()
    assert list(tmp_path.iterdir()) == []
    assert scalars({"step": 3, "a": 1, "b": True, "c": None, "d": 2.5}) == {"a": 1.0, "d": 2.5}


def test_a_missing_tracker_or_a_bad_binding_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what `import wandb` meets where it is not installed
    with pytest.raises(ConfigError, match=r"^metrics writer 'wandb' needs the wandb package: pip install"):
        WandbWriter()  # when the experiment is built, before any data is read
    with pytest.raises(ConfigError, match="metrics_writers: 'metrics.jsonl' is not a MetricsWriter"):
        load_experiment([EXPERIMENT], ["Pretraining.metrics_writers = ['metrics.jsonl']"])
    gin.clear_config()


@pytest.mark.parametrize("module", ["wandb", "trackio"])
def test_a_resumed_tracker_run_continues_its_run_and_sends_no_step_twice(module, tmp_path, monkeypatch):
    """Runs where the optional tracker is installed (pip install 'nanocode[wandb]' / '[trackio]'), offline."""
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    pytest.importorskip(module)
    run_dir = tmp_path / "tag" / "pretrain"
    writer = WandbWriter(mode="offline") if module == "wandb" else TrackioWriter(project="nanocode-test")
    writer.open(run_dir, stage="pretrain", config="Pretraining.batch_size = 8", start_step=0)
    for step in range(1, 6):
        writer.write({"step": step, "loss": 10.0 - step})
    writer.close()
    run_id = (run_dir / f"{module}_run").read_text().split()
    assert run_id[1] == "5"
    writer.open(run_dir, stage="pretrain", config="Pretraining.batch_size = 8", start_step=3)
    for step in range(4, 7):
        writer.write({"step": step, "loss": 100.0 - step})
    writer.close()
    assert (run_dir / f"{module}_run").read_text().split() == [run_id[0], "6"]
    if module == "trackio":
        from trackio.sqlite_storage import SQLiteStorage

        logs = SQLiteStorage.get_logs("nanocode-test", f"tag/pretrain-{run_id[0]}")
        assert [(r["step"], r["loss"]) for r in logs] == [(1, 9), (2, 8), (3, 7), (4, 6), (5, 5), (6, 94)]


@pytest.mark.slow
def test_debug_pretrain_writes_tensorboard_events_and_a_resume_keeps_one_curve(workspace_env):  # noqa: F811
    """A tiny debug pretrain with [@jsonl(), @tensorboard()]: the events read back with every step's scalars; the
    last checkpoint removed (as if killed after logging steps 4..6), a resume from step 3 duplicates no step."""
    tag = "tb"
    writers = "METRICS_WRITERS = [@jsonl(), @tensorboard()]"
    ws = with_tokenizer(workspace_env, tag)
    load_experiment([EXPERIMENT], params_for(tag, writers)).pretraining.run(ws, progress=False)
    run_dir = ws.run_dir("pretrain")
    first = read_events(run_dir / "tensorboard")
    scalars_ = set(first.Tags()["scalars"])
    assert {"loss", "lr", "grad_norm", "tok_per_s", "mfu", "val_bpb", "web_bpb", "code_bpb"} <= scalars_
    assert {"mix_web", "mix_code"} <= scalars_
    assert [e.step for e in first.Scalars("loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in first.Scalars("val_bpb")] == [0, 3, 6]
    config = first.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "Pretraining.batch_size = 8" in config

    shutil.rmtree(Workspace(tag).checkpoint_dir("pretrain") / "6")
    gin.clear_config()
    load_experiment([EXPERIMENT], params_for(tag, writers)).pretraining.run(ws, progress=False, resume=True)
    events = read_events(run_dir / "tensorboard")
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("val_bpb")] == [0, 3, 6]
    assert [e.step for e in events.Scalars("mix_code")] == [1, 2, 3, 4, 5, 6]
    jsonl = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = {r["step"]: r["loss"] for r in jsonl if "loss" in r}  # the last record per step
    assert sorted(r["step"] for r in jsonl if "loss" in r) == [1, 2, 3, 4, 4, 5, 5, 6, 6]
    for e in events.Scalars("loss"):
        assert e.value == pytest.approx(last[e.step], rel=1e-6)
