"""The pretraining stage: a GPT trained on the web+code mixture, with evals, samples, checkpoints and exact resume.

    nanocode plan     --gin_file experiments/d24_tpu_v6e8.gin     # sizes, FLOPs, horizon: instant, no devices
    nanocode pretrain --gin_file experiments/debug_cpu.gin [--resume [--force]]

`Pretraining` is the experiment (bound in gin, validated when built, resolved to plain objects before anything is
traced); `run` is the loop. Every `log_every` steps one JSON record goes to `<run_dir>/metrics.jsonl` (loss, tokens/s,
MFU, LR, grad norm, peak memory); every `eval_every` steps the validation bits per byte of each source; every
`sample_every` steps greedy completions of fixed prompts go to `samples.jsonl`; every `checkpoint_every` steps (and at
the end, and on SIGTERM) an orbax checkpoint holds the train state, the data position and the run's fingerprints.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from nanocode.core import config as config_lib
from nanocode.core import mesh as mesh_lib
from nanocode.core.checkpoint import Checkpointer, PreemptionGuard, check_compatible, fingerprint, make_meta
from nanocode.core.errors import CheckpointError, ConfigError, StageInterrupted
from nanocode.core.interfaces import DataMixture, MeshFactory, OptimizerFactory, Tokenizer
from nanocode.core.kinds import MODELS, TOKENIZERS
from nanocode.core.progress import Progress
from nanocode.core.registry import register_config
from nanocode.core.workspace import Workspace
from nanocode.data.loader import PackedLoader, validation_loaders
from nanocode.models.counting import param_counts
from nanocode.train import mfu as mfu_lib
from nanocode.train.bpb import evaluate_bpb, make_eval_step
from nanocode.train.metrics import JsonlLogger, format_line, peak_memory_bytes
from nanocode.train.sampling import PRETRAIN_PROMPTS, greedy_complete, make_greedy
from nanocode.train.state import abstract_model, init_train_state
from nanocode.train.step import REMAT_POLICIES, make_train_step

STAGE = "pretrain"


@dataclass(frozen=True)
class Plan:
    """What an experiment will do, from shapes alone."""

    params: dict[str, int]
    flops_per_token: int
    seq_len: int
    batch_size: int
    micro_batch_size: int
    accum_steps: int
    tokens_per_step: int
    num_steps: int
    total_tokens: int
    horizon: str  # how num_steps was chosen

    def describe(self) -> str:
        p = self.params
        lines = [
            f"parameters: embedding {p['embedding']:,} | blocks {p['blocks']:,} | head {p['head']:,} | "
            f"total {p['total']:,}",
            f"FLOPs per token (training): {self.flops_per_token:,}",
            f"tokens per step: {self.tokens_per_step:,} ({self.batch_size} rows x {self.seq_len}; "
            f"{self.accum_steps} micro-batches of {self.micro_batch_size} rows)",
            f"steps: {self.num_steps:,} ({self.horizon})",
            f"tokens: {self.total_tokens:,} ({self.total_tokens / p['total']:.2f} per parameter); "
            f"training FLOPs: {self.flops_per_token * self.total_tokens:.3e}",
        ]
        return "\n".join(lines)


@dataclass(frozen=True, kw_only=True)
class Pretraining:
    """Pretrain a registered model on a data mixture (global batch `batch_size` rows of sequence_len tokens)."""

    model: str = "gpt"
    model_config: Any = field(repr=False)  # the model class's Config (GPTConfig), compute dtype included
    optimizer: OptimizerFactory = field(repr=False)
    mesh: MeshFactory = field(repr=False)
    mixture: DataMixture = field(repr=False)
    tokenizer: str = "bpe"
    batch_size: int  # rows per optimizer step, over all devices
    micro_batch_size: int | None = None  # rows per forward/backward (gradient accumulation); None = batch_size
    num_steps: int = -1  # -1: param_data_ratio x parameters tokens (nanocode's horizon)
    param_data_ratio: float = 8.0
    seed: int = 42
    eval_every: int = 250  # 0: only before the first and after the last step
    eval_batches: int = 8  # validation batches (of micro_batch_size rows) per source
    sample_every: int = 250  # 0: only after the last step
    sample_tokens: int = 16
    checkpoint_every: int = 500  # 0: only at the end (and on SIGTERM)
    keep_checkpoints: int = 2
    log_every: int = 1
    peak_flops: float | None = None  # per device, for MFU; None: the accelerator table, or measured on CPU
    remat: str | None = None  # recompute activations in the backward pass: None, or 'dots' (see step.REMAT_POLICIES)

    def __post_init__(self):
        def bad(why: str):
            raise ConfigError(f"Pretraining.{why}")

        model_class = self.model_class  # an unknown model name raises, listing the registered ones
        for name, cls in (("optimizer", OptimizerFactory), ("mesh", MeshFactory), ("mixture", DataMixture)):
            if not isinstance(getattr(self, name), cls):
                bad(f"{name}: expected a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        if not isinstance(self.model_config, model_class.Config):
            bad(f"model_config: expected a {model_class.Config.__name__}, got {type(self.model_config).__name__}")
        if self.batch_size < 1:
            bad(f"batch_size = {self.batch_size}: must be >= 1")
        if self.batch_size % self.micro_rows:
            bad(f"micro_batch_size = {self.micro_rows} does not divide batch_size = {self.batch_size}")
        if self.num_steps == 0 or self.num_steps < -1:
            bad(f"num_steps = {self.num_steps}: must be >= 1, or -1 for the param_data_ratio horizon")
        if self.param_data_ratio <= 0:
            bad(f"param_data_ratio = {self.param_data_ratio}: must be > 0")
        for name in ("eval_every", "sample_every", "checkpoint_every", "eval_batches", "sample_tokens"):
            if getattr(self, name) < 0:
                bad(f"{name} = {getattr(self, name)}: must be >= 0")
        if self.log_every < 1 or self.keep_checkpoints < 1:
            bad("log_every and keep_checkpoints must be >= 1")
        if self.peak_flops is not None and self.peak_flops <= 0:
            bad(f"peak_flops = {self.peak_flops}: must be > 0 (or None)")
        if self.remat is not None and self.remat not in REMAT_POLICIES:
            bad(f"remat = {self.remat!r}: not one of None, {', '.join(map(repr, REMAT_POLICIES))}")

    # -- derived, from shapes only ----------------------------------------------------------------------------------
    @property
    def model_class(self) -> type:
        return MODELS.get(self.model)

    @property
    def micro_rows(self) -> int:
        return self.micro_batch_size or self.batch_size

    @property
    def seq_len(self) -> int:
        return self.model_config.sequence_len

    def plan(self) -> Plan:
        counts = param_counts(self.model_config, self.model_class)
        model = abstract_model(self.model_class, self.model_config)
        tokens_per_step = self.batch_size * self.seq_len
        if self.num_steps > 0:
            steps, horizon = self.num_steps, "num_steps"
        else:
            # nanocode: ceil(ratio x params / tokens per step) + 1 (d24: 10,240 + 1 = 10,241 steps)
            steps = math.ceil(self.param_data_ratio * counts["total"] / tokens_per_step) + 1
            horizon = f"param_data_ratio {self.param_data_ratio:g} x {counts['total']:,} params"
        return Plan(
            params=counts,
            flops_per_token=int(model.flops_per_token()),
            seq_len=self.seq_len,
            batch_size=self.batch_size,
            micro_batch_size=self.micro_rows,
            accum_steps=self.batch_size // self.micro_rows,
            tokens_per_step=tokens_per_step,
            num_steps=steps,
            total_tokens=steps * tokens_per_step,
            horizon=horizon,
        )

    # -- the step ---------------------------------------------------------------------------------------------------
    def learning_rate(self, num_steps: int):
        """step -> the LR to log: the optimizer's base `lr` (Muon's, for muon_adamw) x its schedule multiplier."""
        schedule = getattr(self.optimizer, "schedule", None)
        if schedule is None:
            return None
        multiplier, base = schedule(num_steps), float(getattr(self.optimizer, "lr", 1.0))
        return lambda step: base * multiplier(step)

    def build_step(self, plan: Plan, mesh, rules, *, abstract: bool):
        """(initialised state, train step) on `mesh` (call under `mesh_lib.activate`). abstract=True builds
        ShapeDtypeStructs with shardings instead of arrays (restore targets, ahead-of-time compilation)."""
        params = nnx.state(abstract_model(self.model_class, self.model_config, self.seed), nnx.Param)
        tx = self.optimizer.build(params, plan.num_steps)
        init = init_train_state(
            self.model_class, self.model_config, tx, seed=self.seed, mesh=mesh, rules=rules, abstract=abstract
        )
        step = make_train_step(
            init.graphdef,
            tx,
            accum_steps=plan.accum_steps,
            state_shardings=init.shardings,
            batch_sharding=mesh_lib.batch_sharding(mesh, rules),
            learning_rate=self.learning_rate(plan.num_steps),
            remat=self.remat,
        )
        return init, step

    def compile_step(self, mesh) -> jax.stages.Compiled:
        """The train step compiled ahead of time for `mesh` from abstract inputs (nothing allocated, no data)."""
        rules = self.mesh.rules
        with mesh_lib.activate(mesh, rules):
            init, step = self.build_step(self.plan(), mesh, rules, abstract=True)
            sharding = mesh_lib.batch_sharding(mesh, rules)
            batch = {"tokens": jax.ShapeDtypeStruct((self.batch_size, self.seq_len + 1), jnp.int32, sharding=sharding)}
            return step.lower(init.state, batch).compile()

    # -- the run --------------------------------------------------------------------------------------------------
    def load_tokenizer(self, workspace: Workspace) -> Tokenizer:
        cls = TOKENIZERS.get(self.tokenizer)
        tokenizer = cls.load(workspace.tokenizer_dir)
        if tokenizer.vocab_size != self.model_config.vocab_size:
            raise ConfigError(
                f"{workspace.tokenizer_dir}: tokenizer has {tokenizer.vocab_size} ids but "
                f"{type(self.model_config).__name__}.vocab_size = {self.model_config.vocab_size}"
            )
        return tokenizer

    def run(
        self,
        workspace: Workspace,
        *,
        resume: bool = False,
        force: bool = False,
        progress: bool = True,
        on_checkpoint: Callable[[int], None] | None = None,
    ) -> dict:
        """Train to `num_steps` (resuming from the latest checkpoint when asked); returns the last metrics.

        `on_checkpoint(step)` is called once each checkpoint is completely on disk (to copy it elsewhere, or to stop).
        """
        run = PretrainRun(self, workspace, resume=resume, force=force, progress=progress)
        run.on_checkpoint = on_checkpoint
        return run.run()


register_config(Pretraining)


# ---------------------------------------------------------------------------------------------------- fingerprints
PROBE_TEXT = "def capital(country):\n    return {'France': 'Paris'}[country]  # The capital of France is Paris.\n"


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """Vocabulary size, every token's byte length and the encoding of a probe text: another tokenizer differs."""
    ids = tokenizer.encode(PROBE_TEXT)
    return fingerprint(
        {"vocab_size": tokenizer.vocab_size, "token_bytes": fingerprint(tokenizer.token_bytes().tobytes()), "ids": ids}
    )


def data_spec_fingerprint(loader: PackedLoader, mixture: DataMixture) -> str:
    """The loader's spec (shard files, seed, shapes, process slicing) and the mixture's weights at step 0."""
    weights = {k: float(v) for k, v in sorted(mixture.weights_at(0).items())}
    return fingerprint({"loader": loader.spec(), "weights": weights})


def _say(text: str) -> None:
    if jax.process_index() == 0:
        print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- the loop
def batch_shards(mesh, rules) -> int:
    """How many ways the batch dimension is split on this mesh (rows must divide evenly)."""
    spec = mesh_lib.batch_sharding(mesh, rules).spec
    axes = spec[0] if len(spec) else None
    axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
    return math.prod(mesh.shape[a] for a in axes)


class PretrainRun:
    """One invocation of the pretraining loop: built fresh, or continued from the latest checkpoint."""

    def __init__(self, exp: Pretraining, workspace: Workspace, *, resume: bool, force: bool, progress: bool):
        self.exp, self.workspace, self.resume, self.force, self.progress = exp, workspace, resume, force, progress
        self.run_dir = workspace.run_dir(STAGE)
        self.main = jax.process_index() == 0
        self.metrics = JsonlLogger(self.run_dir / "metrics.jsonl", enabled=self.main)
        self.samples = JsonlLogger(self.run_dir / "samples.jsonl", enabled=self.main)
        self.on_checkpoint: Callable[[int], None] | None = None

    def run(self) -> dict:
        exp = self.exp
        self.plan = exp.plan()
        self.tokenizer = exp.load_tokenizer(self.workspace)
        self.mesh, self.rules = exp.mesh.make(), exp.mesh.rules
        shards = batch_shards(self.mesh, self.rules)
        if exp.micro_rows % shards:
            raise ConfigError(
                f"Pretraining.micro_batch_size = {exp.micro_rows} rows do not split over the {shards} batch shards "
                f"of mesh {mesh_lib.mesh_shape(self.mesh)}"
            )
        self.checkpointer = Checkpointer(self.workspace.checkpoint_dir(STAGE), max_to_keep=exp.keep_checkpoints)
        try:
            with mesh_lib.activate(self.mesh, self.rules):
                return self._run()
        finally:
            self.checkpointer.close()

    # -- pieces of the loop ---------------------------------------------------------------------------------------
    def shard(self, rows: np.ndarray) -> dict[str, jax.Array]:
        return mesh_lib.shard_batch({"tokens": rows}, self.mesh, self.rules)

    def evaluate(self, step: int, state) -> dict:
        """Validation bits per byte of each source (`<source>_bpb`) and their mean (`val_bpb`)."""
        record: dict[str, Any] = {"step": step}
        for name, batches in self.val_batches.items():
            if batches:
                record[f"{name}_bpb"] = evaluate_bpb(self.eval_step, state.params, state.rest, map(self.shard, batches))
        values = [v for k, v in record.items() if k.endswith("_bpb")]
        record["val_bpb"] = float(np.mean(values)) if values else float("nan")
        self.metrics.log(record)
        _say("eval " + format_line(step, record, tuple(k for k in record if k != "step")))
        return record

    def sample(self, step: int, state) -> None:
        texts = greedy_complete(
            self.greedy,
            self.tokenizer,
            state.params,
            state.rest,
            PRETRAIN_PROMPTS,
            self.exp.sample_tokens,
            rows_multiple=batch_shards(self.mesh, self.rules),
        )
        for prompt, text in zip(PRETRAIN_PROMPTS, texts):
            self.samples.log({"step": step, "prompt": prompt, "completion": text})
            _say(f"sample {step}: {prompt!r} -> {text!r}")

    def restore_or_init(self, meta: dict):
        """(init, train_step, state, start step, data state): the latest checkpoint when resuming, else fresh."""
        exp = self.exp
        latest = self.checkpointer.latest_step()
        if latest is not None and not self.resume:
            raise CheckpointError(
                f"{self.checkpointer.directory} holds checkpoints (latest step {latest}): pass --resume to continue "
                "that run, or delete the directory to start over"
            )
        init, train_step = exp.build_step(self.plan, self.mesh, self.rules, abstract=latest is not None)
        if latest is None:
            if self.resume:
                _say(f"pretrain: no checkpoint in {self.checkpointer.directory}; starting from scratch")
            return init, train_step, init.state, 0, None
        check_compatible(self.checkpointer.read_meta(latest), meta, force=self.force)
        restored = self.checkpointer.restore(latest, init.state)
        _say(f"pretrain: resuming from step {restored.step} ({self.checkpointer.directory / str(latest)})")
        return init, train_step, restored.state, restored.step, restored.data

    # -- the loop -------------------------------------------------------------------------------------------------
    def _run(self) -> dict:
        exp, plan, mesh, rules = self.exp, self.plan, self.mesh, self.rules
        abstract = nnx.state(abstract_model(exp.model_class, exp.model_config, exp.seed), nnx.Param)
        mesh_lib.validate(abstract, mesh, rules)
        pc, pi = jax.process_count(), jax.process_index()
        loader = PackedLoader(
            exp.mixture,
            self.tokenizer,
            batch_size=exp.batch_size // pc,
            seq_len=exp.seq_len,
            split="train",
            seed=exp.seed,
            process_index=pi,
            process_count=pc,
        )
        meta = make_meta(
            config=config_lib.config_str(),
            tokenizer=tokenizer_fingerprint(self.tokenizer),
            data_spec=data_spec_fingerprint(loader, exp.mixture),
            mesh=mesh,
        )
        init, train_step, state, step, data_state = self.restore_or_init(meta)  # refusals come before any output
        _say(plan.describe())
        _say(mesh_lib.partition_table(abstract, mesh, rules))
        if data_state:
            loader.restore(data_state)
        if self.main:
            config_lib.write_config(self.run_dir)

        self.eval_step = make_eval_step(
            init.graphdef,
            self.tokenizer.token_bytes(),
            params_shardings=init.shardings.params,
            rest_shardings=init.shardings.rest,
            batch_sharding=mesh_lib.batch_sharding(mesh, rules),
        )
        self.greedy = make_greedy(init.graphdef, exp.sample_tokens, mesh)
        val = validation_loaders(
            exp.mixture,
            self.tokenizer,
            exp.micro_rows // pc,
            exp.seq_len,
            max_batches=exp.eval_batches,
            process_index=pi,
            process_count=pc,
        )
        self.val_batches = {name: list(it) for name, it in val.items()}  # the same batches at every eval
        if pc > 1:  # every process must run the same number of eval steps (a small val shard may split unevenly)
            counts = multihost_utils.process_allgather(np.asarray([len(b) for b in self.val_batches.values()]))
            fewest = np.asarray(counts).reshape(pc, -1).min(axis=0)
            self.val_batches = {k: b[:n] for (k, b), n in zip(self.val_batches.items(), fewest.tolist())}
        for name, batches in self.val_batches.items():
            if not batches:
                _say(f"pretrain: warning: source {name!r} has too little validation text for one batch; no {name}_bpb")
        peak, peak_desc = mfu_lib.peak_flops(exp.model_config.dtype, jax.devices(), exp.peak_flops)
        _say(f"pretrain: MFU against {peak_desc}")

        last: dict[str, Any] = {}
        if step == 0:
            last = self.evaluate(0, state)
        with (
            loader,
            PreemptionGuard() as guard,
            Progress(plan.num_steps, "pretrain", unit="step", initial=step, enabled=self.progress and self.main) as bar,
        ):
            batch = self.shard(next(loader)) if step < plan.num_steps else None
            t_last = time.perf_counter()
            while step < plan.num_steps:
                state, metrics = train_step(state, batch)  # dispatched; runs while the host prepares the next batch
                step += 1
                data_state = loader.state()  # the position after this step's batch: what a resume continues from
                if step < plan.num_steps:
                    batch = self.shard(next(loader))
                record = {"step": step, **{k: float(v) for k, v in jax.device_get(metrics).items()}}
                now = time.perf_counter()
                record["dt"], t_last = now - t_last, now
                record["tok_per_s"] = plan.tokens_per_step / record["dt"]
                record["mfu"] = mfu_lib.mfu(plan.flops_per_token, record["tok_per_s"], peak)
                record["peak_mem"] = peak_memory_bytes(jax.local_devices())[0]
                done, stopping = step == plan.num_steps, guard.should_stop(step)
                if step % exp.log_every == 0 or done:
                    self.metrics.log(record)
                bar.update(
                    1, postfix=f"loss {record['loss']:.4f} | {record['tok_per_s']:,.0f} tok/s | mfu {record['mfu']:.1%}"
                )
                last = {**last, **record}
                if done or (exp.eval_every and step % exp.eval_every == 0):
                    last.update(self.evaluate(step, state))
                if done or (exp.sample_every and step % exp.sample_every == 0):
                    self.sample(step, state)
                if done or stopping or (exp.checkpoint_every and step % exp.checkpoint_every == 0):
                    self.checkpointer.save(step, state, data=data_state, meta=meta)
                    if self.on_checkpoint is not None:
                        self.checkpointer.wait()
                        self.on_checkpoint(step)
                if stopping and not done:
                    self.checkpointer.wait()
                    raise StageInterrupted(f"pretrain stopped at step {step} (checkpoint saved); rerun with --resume")
                t_last = time.perf_counter()  # evals, samples and saves are not training time
        self.checkpointer.wait()
        if step >= plan.num_steps:
            _say(f"pretrain: done, {step} steps; final checkpoint in {self.checkpointer.directory / str(step)}")
        return last
