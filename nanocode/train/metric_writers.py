"""Where a training stage's metrics go: the registered `metrics_writer`s, several at once, chosen in gin.

    METRICS_WRITERS = [@jsonl(), @tensorboard()]        # experiments/base/experiment.gin binds every stage to it
    Pretraining.metrics_writers = [@jsonl(), @wandb()]   # or one stage on its own

- `jsonl` (the default): `<run_dir>/metrics.jsonl`, one JSON object per record; the report reads it. Its config is
  `config.gin` beside it. A resumed run appends: a reader takes the last record per step (the report does).
- `tensorboard`: event files in `<run_dir>/tensorboard/` (tensorboardX, `pip install 'nanocode[tensorboard]'`),
  one scalar per numeric field, the config as a text summary. A run resumed from step k opens its file with
  `purge_step` = k + 1, so TensorBoard drops what an interrupted attempt wrote after the checkpoint: one curve.
- `wandb` / `trackio`: one tracker run per stage (`pip install 'nanocode[wandb]'` / `'nanocode[trackio]'`), the
  config in the run's config. `<run_dir>/wandb_run` (`trackio_run`) keeps the run's id and the last step sent, so a
  resumed stage continues the same run and skips the steps the interrupted attempt already sent (a tracker cannot
  take points back): those keep their first values, and no step appears twice.

Every writer runs on process 0 only (`metrics.MetricsLog`).
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nanocode.core.errors import ConfigError
from nanocode.core.interfaces import MetricsWriter
from nanocode.core.io import append_jsonl
from nanocode.core.kinds import METRICS_WRITERS


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The record's finite numbers, by name, without its step."""
    out = {}
    for key, value in record.items():
        if key != "step" and isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = float(value)
    return out


def optional_import(module: str, writer: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"metrics writer {writer!r} needs the {module} package: pip install 'nanocode[{extra}]'"
        ) from None


@METRICS_WRITERS.register("jsonl")
class JsonlWriter(MetricsWriter):
    """One JSON object per line in <run_dir>/metrics.jsonl (the report reads it)."""

    def __init__(self, filename: str = "metrics.jsonl"):
        self.filename = filename
        self._path: Path | None = None

    def open(self, run_dir: Path, *, stage: str, config: str, start_step: int) -> None:
        self._path = Path(run_dir) / self.filename  # the config is config.gin, written beside it by the loop

    def write(self, record: Mapping[str, Any]) -> None:
        append_jsonl(self._path, dict(record))

    def close(self) -> None:
        self._path = None

    def __repr__(self) -> str:
        return f"JsonlWriter({self.filename!r})"


@METRICS_WRITERS.register("tensorboard")
class TensorBoardWriter(MetricsWriter):
    """TensorBoard event files in <run_dir>/tensorboard/ (tensorboardX); a resume replaces what followed its checkpoint."""

    def __init__(self, subdir: str = "tensorboard", flush_secs: int = 30):
        self.subdir, self.flush_secs = subdir, flush_secs
        self._tensorboardx = optional_import("tensorboardX", "tensorboard", "tensorboard")  # missing: fail at config
        self._writer = None

    def open(self, run_dir: Path, *, stage: str, config: str, start_step: int) -> None:
        # A resumed run logs from start_step + 1 on: TensorBoard drops the earlier attempts' events from there.
        first = start_step + 1 if start_step else 0
        # TensorBoard reads a directory's files in name order; the suffix orders two opened in the same second.
        suffix = f".{start_step:010d}.{time.time_ns()}"
        self._writer = self._tensorboardx.SummaryWriter(
            str(Path(run_dir) / self.subdir),
            purge_step=first or None,
            flush_secs=self.flush_secs,
            filename_suffix=suffix,
        )
        # Indented: TensorBoard renders text summaries as markdown, and this keeps the config verbatim.
        self._writer.add_text("config", "\n".join("    " + line for line in config.splitlines()), first)

    def write(self, record: Mapping[str, Any]) -> None:
        step = int(record["step"])
        for key, value in scalars(record).items():
            self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __repr__(self) -> str:
        return f"TensorBoardWriter({self.subdir!r})"


class TrackerWriter(MetricsWriter):
    """A wandb-style experiment tracker (`init`, `log(data, step=)`, `finish`): one run per stage, resumable."""

    module = extra = ""

    def __init__(self, project: str = "nanocode", name: str | None = None):
        self.project, self.name = project, name  # name None: <tag>/<stage>
        self._module = optional_import(self.module, self.module, self.extra)  # missing: fail at config
        self._tracker = None

    def init_kwargs(self, name: str, run_id: str, run_dir: Path) -> dict[str, Any]:
        """The tracker's own `init` arguments besides project, config and resume."""
        raise NotImplementedError

    def open(self, run_dir: Path, *, stage: str, config: str, start_step: int) -> None:
        run_dir = Path(run_dir)
        self._state_file = run_dir / f"{self.module}_run"  # the tracker run's id, then the last step it was sent
        saved = self._state_file.read_text().split() if start_step and self._state_file.exists() else []
        # A resumed stage continues its tracker run (a fresh one starts another) and skips the steps the interrupted
        # attempt already sent: a tracker keeps every point it is sent, so re-sending them would duplicate them.
        self._run_id = saved[0] if saved else f"{time.time_ns():x}"
        self._sent_before = int(saved[1]) if len(saved) > 1 and saved[1].isdigit() else -1
        self._last = self._sent_before
        self._save_state()
        name = self.name or f"{run_dir.parent.name}/{stage}"
        self._module.init(
            project=self.project,
            config={"stage": stage, "gin_config": config},
            resume="allow",
            **self.init_kwargs(name, self._run_id, run_dir),
        )
        self._tracker = self._module

    def _save_state(self) -> None:
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        self._state_file.write_text(f"{self._run_id}\n{self._last}\n")

    def write(self, record: Mapping[str, Any]) -> None:
        step = int(record["step"])
        if step <= self._sent_before:
            return
        self._tracker.log(scalars(record), step=step)
        if step > self._last:
            self._last = step
            self._save_state()

    def close(self) -> None:
        if self._tracker is not None:
            self._tracker.finish()
            self._tracker = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(project={self.project!r})"


@METRICS_WRITERS.register("wandb")
class WandbWriter(TrackerWriter):
    """Weights & Biases: one run per stage (mode 'offline' keeps it under <run_dir>/wandb for a later sync)."""

    module = extra = "wandb"

    def __init__(
        self, project: str = "nanocode", name: str | None = None, entity: str | None = None, mode: str | None = None
    ):
        super().__init__(project, name)
        self.entity, self.mode = entity, mode

    def init_kwargs(self, name: str, run_id: str, run_dir: Path) -> dict[str, Any]:
        return {
            "name": name,
            "id": f"{run_dir.name}-{run_id}",
            "entity": self.entity,
            "mode": self.mode,
            "dir": str(run_dir),
        }


@METRICS_WRITERS.register("trackio")
class TrackioWriter(TrackerWriter):
    """trackio (Hugging Face's local-first tracker, wandb's API): one run per stage, in its local database."""

    module = extra = "trackio"

    def init_kwargs(self, name: str, run_id: str, run_dir: Path) -> dict[str, Any]:
        return {"name": f"{name}-{run_id}"}  # trackio finds the run to resume by its name
