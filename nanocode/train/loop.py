"""The loop every training stage runs (pretraining, agentic SFT, preference optimisation).

A stage starts afresh or, with --resume, continues from its own latest checkpoint (refusing one made with another
config, tokenizer or data); then it trains with periodic logs, evaluations, samples and checkpoints, and stops
cleanly on SIGTERM. `StageRun` is that invocation; a stage subclasses it and supplies its parts:

    prepare_data()            -> the training batches (iterable, with state()/restore()); sets num_steps (when -1),
                                 data_spec and tokens_per_step
    build_step(init, tx)      -> the jitted train step (default: the language-model step)
    fresh_state(init, tx)     -> the state at step 0 when there is no checkpoint
    start(state)              -> anything else the step needs besides the state (the frozen reference, eval data)
    wrap_batches(batches)     -> the batches as the step takes them (precomputed reference log-probs attached)
    train(state, batch)       -> (state, metrics): one optimizer step
    evaluate(step, state)     -> a metrics record; sample(step, state) -> writes samples.jsonl
    batch_metrics(batches)    -> fields for the step's record about the batch just trained on (the realised mix)

A fine-tuning stage (`train.finetune.FinetuneRun`) starts from the latest checkpoint of an earlier stage (only its
parameters: the optimizer starts afresh). The step loop itself is `train_steps` (train, log, evaluate, sample, save when due, stop on
SIGTERM), a plain function of callbacks.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
from flax import nnx

from nanocode.core import config as config_lib
from nanocode.core import mesh as mesh_lib
from nanocode.core import progress as progress_lib
from nanocode.core.checkpoint import Checkpointer, fingerprint, make_meta
from nanocode.core.errors import CheckpointError, ConfigError, StageInterrupted
from nanocode.core.interfaces import Tokenizer
from nanocode.core.preemption import PreemptionGuard
from nanocode.core.resume_check import check_compatible
from nanocode.core.workspace import Workspace
from nanocode.train import mfu as mfu_lib
from nanocode.train.bpb import make_eval_step
from nanocode.train.experiment import Training
from nanocode.train.metrics import JsonlLogger, MetricsLog, format_line, peak_memory_bytes
from nanocode.train.state import Initialised, TrainState, abstract_model

PROBE_TEXT = "def capital(country):\n    return {'France': 'Paris'}[country]  # The capital of France is Paris.\n"


def say(text: str) -> None:
    """A line on stderr from process 0, above the progress bar when one is live (never glued to it)."""
    if jax.process_index() == 0:
        progress_lib.write(text, sys.stderr)


def batch_shards(mesh, rules) -> int:
    """How many ways the batch dimension is split on this mesh (rows must divide evenly)."""
    spec = mesh_lib.batch_sharding(mesh, rules).spec
    axes = spec[0] if len(spec) else None
    axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
    return math.prod(mesh.shape[a] for a in axes)


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """Vocabulary size, every token's byte length and the encoding of a probe text: another tokenizer differs."""
    ids = tokenizer.encode(PROBE_TEXT)
    return fingerprint(
        {"vocab_size": tokenizer.vocab_size, "token_bytes": fingerprint(tokenizer.token_bytes().tobytes()), "ids": ids}
    )


# ---------------------------------------------------------------------------------------------------- the loop
class StageRun:
    """One invocation of a training stage: started afresh, or continued from its latest checkpoint."""

    stage = ""
    rows_per_example = 1  # rows of one example in a batch (2 for paired preference data)
    fresh_start = "afresh"  # said when --resume finds no checkpoint

    def __init__(
        self,
        exp: Training,
        workspace: Workspace,
        *,
        resume: bool,
        force: bool,
        progress: bool,
        on_checkpoint: Callable[[int], None] | None = None,
    ):
        self.exp, self.workspace, self.resume, self.force, self.progress = exp, workspace, resume, force, progress
        self.on_checkpoint = on_checkpoint  # called once each checkpoint is completely on disk
        self.run_dir = workspace.run_dir(self.stage)
        self.main = jax.process_index() == 0
        self.metrics = MetricsLog(exp.metrics_writers, enabled=self.main)  # opened once the start step is known
        self.samples = JsonlLogger(self.run_dir / "samples.jsonl", enabled=self.main)
        self.num_steps = exp.num_steps
        self.data_spec = ""
        self.tokens_per_step = 0

    # -- what a stage supplies ------------------------------------------------------------------------------------
    def prepare_data(self):
        """Read the data; set num_steps (when -1), data_spec and tokens_per_step; return the training batches.
        Anything that must be closed when the run ends goes on `self.cleanup`."""
        raise NotImplementedError

    def build_step(self, init: Initialised, tx) -> Callable:
        return self.exp.lm_step(init, tx, self.num_steps, mesh_lib.batch_sharding(self.mesh, self.rules))

    def origin(self, saved_meta: dict) -> dict:
        """What this run starts from, recorded in its checkpoints' meta (`saved_meta`: the latest one's, if any)."""
        return {}

    def fresh_state(self, init: Initialised, tx) -> TrainState:
        raise NotImplementedError

    def start(self, state: TrainState) -> None:
        """Called once the state exists, before the first step (fresh or resumed)."""

    def wrap_batches(self, batches):
        """The training batches as the step takes them (called after start())."""
        return batches

    def train(self, state: TrainState, batch) -> tuple[TrainState, dict]:
        return self.train_step(state, batch)

    def shard(self, batch) -> Any:
        return mesh_lib.shard_batch(batch, self.mesh, self.rules)

    def evaluate(self, step: int, state: TrainState) -> dict:
        return {}

    def sample(self, step: int, state: TrainState) -> None:
        pass

    def batch_metrics(self, batches) -> dict:
        """Fields added to a step's record about the batch it trained on (called right after the step)."""
        return {}

    def postfix(self, record: dict) -> str:
        return f"loss {record['loss']:.4f} | {record['tok_per_s']:,.0f} tok/s | mfu {record['mfu']:.1%}"

    def announce(self, peak_desc: str) -> str:
        return f"{self.stage}: {self.num_steps} steps of {self.exp.batch_size} examples; MFU against {peak_desc}"

    # -- shared pieces --------------------------------------------------------------------------------------------
    def log_eval(self, record: dict, label: str | None = None) -> dict:
        self.metrics.log(record)
        label = label or f"{self.stage} eval"
        say(f"{label} " + format_line(record["step"], record, tuple(k for k in record if k != "step")))
        return record

    def run(self) -> dict:
        exp = self.exp
        self.tokenizer = exp.load_tokenizer(self.workspace)
        self.mesh, self.rules = exp.mesh.make(), exp.mesh.rules
        self.shards = batch_shards(self.mesh, self.rules)
        rows = exp.micro_rows * self.rows_per_example
        if rows % self.shards:
            what = f"{exp.micro_rows} rows do" if rows == exp.micro_rows else f"{exp.micro_rows} ({rows} rows) does"
            raise ConfigError(
                f"{type(exp).__name__}.micro_batch_size = {what} not split over the {self.shards} batch shards "
                f"of mesh {mesh_lib.mesh_shape(self.mesh)}"
            )
        self.checkpointer = Checkpointer(self.workspace.checkpoint_dir(self.stage), max_to_keep=exp.keep_checkpoints)
        try:
            with mesh_lib.activate(self.mesh, self.rules), contextlib.ExitStack() as self.cleanup:
                return self._run()
        finally:
            self.checkpointer.close()

    def _restore_or_start(self, meta: dict) -> tuple[TrainState, int, dict | None]:
        """(state, start step, data position): the latest checkpoint when resuming, else the stage's fresh state.
        Builds the steps (self.init, train_step, bpb_step) and adds the run's origin to `meta`."""
        latest = self.checkpointer.latest_step()
        if latest is not None and not self.resume:
            raise CheckpointError(
                f"{self.checkpointer.directory} holds checkpoints (latest step {latest}): pass --resume to continue "
                "that run, or delete the directory to start over"
            )
        self.init, tx = self.exp.init_state(self.num_steps, self.mesh, self.rules)
        self.bpb_step = make_eval_step(  # every stage reports validation bits per byte
            self.init.graphdef,
            self.tokenizer.token_bytes(),
            params_shardings=self.init.shardings.params,
            rest_shardings=self.init.shardings.rest,
            batch_sharding=mesh_lib.batch_sharding(self.mesh, self.rules),
        )
        self.train_step = self.build_step(self.init, tx)
        if latest is not None:  # the latest step that reads back intact (a corrupt one is set aside, with a warning)
            restored = self.checkpointer.restore(
                None, self.init.state, check=lambda saved: check_compatible(saved, meta, force=self.force)
            )
            meta.update(self.origin(restored.meta))
            where = self.checkpointer.directory / str(restored.step)
            say(f"{self.stage}: resuming from step {restored.step} ({where})")
            return restored.state, restored.step, restored.data
        meta.update(self.origin({}))
        if self.resume:
            say(f"{self.stage}: no checkpoint in {self.checkpointer.directory}; starting {self.fresh_start}")
        return self.fresh_state(self.init, tx), 0, None

    def _run(self) -> dict:
        exp = self.exp
        self.abstract_params = nnx.state(abstract_model(exp.model_class, exp.model_config, exp.seed), nnx.Param)
        mesh_lib.validate(self.abstract_params, self.mesh, self.rules)
        batches = self.prepare_data()
        meta = make_meta(
            config=config_lib.config_str(),
            tokenizer=tokenizer_fingerprint(self.tokenizer),
            data_spec=self.data_spec,
            mesh=self.mesh,
        )
        state, step, data_state = self._restore_or_start(meta)  # refusals come before any output
        self.start(state)
        batches = self.wrap_batches(batches)
        if data_state:
            batches.restore(data_state)
        config = config_lib.config_str()
        if self.main:
            config_lib.write_config(self.run_dir)
        self.metrics.open(self.run_dir, stage=self.stage, config=config, start_step=step)
        self.cleanup.callback(self.metrics.close)
        flops_per_token = int(abstract_model(exp.model_class, exp.model_config).flops_per_token())
        peak, peak_desc = mfu_lib.peak_flops(exp.model_config.dtype, jax.devices(), exp.peak_flops)
        say(self.announce(peak_desc))

        last: dict[str, Any] = {}
        if step == 0:
            last = self.evaluate(0, state)
        it = iter(batches)

        def save(step: int, state: TrainState, data_state: dict) -> None:
            self.checkpointer.save(step, state, data=data_state, meta=meta)
            if self.on_checkpoint is not None:
                self.checkpointer.wait()
                self.on_checkpoint(step)

        cadence = Cadence(self.num_steps, exp.log_every, exp.eval_every, exp.sample_every, exp.checkpoint_every)
        state, step, last = train_steps(
            self.stage,
            cadence,
            state,
            step,
            train=self.train,
            next_batch=lambda: self.shard(next(it)),
            data_state=batches.state,
            batch_metrics=lambda: self.batch_metrics(batches),
            evaluate=self.evaluate,
            sample=self.sample,
            save=save,
            metrics=self.metrics,
            throughput=Throughput(self.tokens_per_step, flops_per_token, peak),
            postfix=self.postfix,
            progress=self.progress and self.main,
            last=last,
        )
        self.checkpointer.wait()
        if step >= self.num_steps:
            say(f"{self.stage}: done, {step} steps; final checkpoint in {self.checkpointer.directory / str(step)}")
        return last


# ---------------------------------------------------------------------------------------------------- the steps
@dataclass(frozen=True)
class Cadence:
    """How often the loop logs, evaluates, samples and saves (0: only after the last step)."""

    num_steps: int
    log_every: int = 1
    eval_every: int = 0
    sample_every: int = 0
    checkpoint_every: int = 0

    @staticmethod
    def due(every: int, step: int) -> bool:
        return bool(every) and step % every == 0


@dataclass(frozen=True)
class Throughput:
    tokens_per_step: int
    flops_per_token: int
    peak_flops: float


def train_steps(
    stage: str,
    cadence: Cadence,
    state: Any,
    step: int,
    *,
    train: Callable[[Any, Any], tuple[Any, dict]],
    next_batch: Callable[[], Any],
    data_state: Callable[[], dict],
    evaluate: Callable[[int, Any], dict],
    sample: Callable[[int, Any], None],
    save: Callable[[int, Any, dict], None],
    metrics: MetricsLog | JsonlLogger,
    throughput: Throughput,
    postfix: Callable[[dict], str],
    progress: bool = True,
    last: dict | None = None,
    batch_metrics: Callable[[], dict] = dict,
) -> tuple[Any, int, dict]:
    """Steps `step` .. num_steps: train, then log / evaluate / sample / save when due (always after the last step),
    and on SIGTERM save and stop. Returns (state, the step reached, the last metrics).

    The next batch is fetched while the step runs (dispatch is asynchronous); the data position saved with a
    checkpoint is the one after the step's batch, so a resume continues with the next unseen batch.
    """
    last = dict(last or {})
    n = cadence.num_steps
    with (
        PreemptionGuard() as guard,
        progress_lib.Progress(n, stage, unit="step", initial=step, enabled=progress) as bar,
    ):
        batch = next_batch() if step < n else None
        t_last = time.perf_counter()
        while step < n:
            state, out = train(state, batch)  # dispatched; runs while the host prepares the next batch
            step += 1
            position = data_state()  # the position after this step's batch: what a resume continues from
            about_batch = batch_metrics()  # likewise about this step's batch, before the next one is fetched
            if step < n:
                batch = next_batch()
            record = {"step": step, **{k: float(v) for k, v in jax.device_get(out).items()}, **about_batch}
            now = time.perf_counter()
            record["dt"], t_last = now - t_last, now
            record["tok_per_s"] = throughput.tokens_per_step / record["dt"]
            record["mfu"] = mfu_lib.mfu(throughput.flops_per_token, record["tok_per_s"], throughput.peak_flops)
            record["peak_mem"] = peak_memory_bytes(jax.local_devices())[0]
            done, stopping = step == n, guard.should_stop(step)
            if step % cadence.log_every == 0 or done:
                metrics.log(record)
            bar.update(1, postfix=postfix(record))
            last.update(record)
            if done or cadence.due(cadence.eval_every, step):
                last.update(evaluate(step, state))
            if done or cadence.due(cadence.sample_every, step):
                sample(step, state)
            if done or stopping or cadence.due(cadence.checkpoint_every, step):
                save(step, state, position)
            if stopping and not done:
                raise StageInterrupted(f"{stage} stopped at step {step} (checkpoint saved); rerun with --resume")
            t_last = time.perf_counter()  # evals, samples and saves are not training time
    return state, step, last
