"""The pretraining stage: a GPT trained on the web+code mixture, with evals, samples, checkpoints and exact resume.

    nanocode plan     --gin_file experiments/d24_tpu_v6e8.gin     # sizes, FLOPs, horizon: instant, no devices
    nanocode pretrain --gin_file experiments/debug_cpu.gin [--resume [--force]]

`Pretraining` is the experiment (bound in gin, validated when built, resolved to plain objects before anything is
traced); `PretrainRun` is its part of the shared loop (`train.loop`). Every `log_every` steps one record goes to the
stage's metrics writers (`<run_dir>/metrics.jsonl` by default: loss, tokens/s, MFU, LR, grad norm, peak memory, and
`mix_<source>`, the share of the batch's tokens each source gave); every `eval_every` steps the validation
bits per byte of each source; every `sample_every` steps greedy completions of fixed prompts go to `samples.jsonl`;
every `checkpoint_every` steps (and at the end, and on SIGTERM) an orbax checkpoint holds the train state, the data
position and the run's fingerprints. What differs from fine-tuning: random initial weights, the data mixture (packed
documents), the param_data_ratio horizon and one bits-per-byte figure per source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from nanocode.core import mesh as mesh_lib
from nanocode.core.checkpoint import fingerprint
from nanocode.core.interfaces import DataMixture
from nanocode.core.registry import register_config
from nanocode.core.workspace import Workspace
from nanocode.data.loader import PackedLoader, validation_loaders
from nanocode.data.mixture import realised_mix
from nanocode.models.counting import param_counts
from nanocode.train.bpb import evaluate_bpb
from nanocode.train.experiment import Training
from nanocode.train.loop import StageRun, say
from nanocode.train.sampling import PRETRAIN_PROMPTS, greedy_complete, make_greedy
from nanocode.train.state import abstract_model

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
class Pretraining(Training):
    """Pretrain a registered model on a data mixture (global batch `batch_size` rows of sequence_len tokens)."""

    default_horizon: ClassVar[str] = "the param_data_ratio horizon"
    FROM_EXPERIMENT: ClassVar[tuple[str, ...]] = (*Training.FROM_EXPERIMENT, "mixture")

    mixture: DataMixture | None = field(default=None, repr=False)  # the experiment's data
    param_data_ratio: float = 8.0  # num_steps = -1 trains param_data_ratio x parameters tokens (nanocode's horizon)
    eval_every: int = 250  # validation bits per byte of every source of the mixture
    sample_every: int = 250
    sample_tokens: int = 16

    def __post_init__(self):
        super().__post_init__()
        if self.mixture is not None and not isinstance(self.mixture, DataMixture):
            self.invalid(f"mixture: expected a DataMixture, got {type(self.mixture).__name__}")
        if self.param_data_ratio <= 0:
            self.invalid(f"param_data_ratio = {self.param_data_ratio}: must be > 0")

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
            accum_steps=self.accum_steps,
            tokens_per_step=tokens_per_step,
            num_steps=steps,
            total_tokens=steps * tokens_per_step,
            horizon=horizon,
        )

    def build_step(self, plan: Plan, mesh, rules, *, abstract: bool):
        """(initialised state, train step) on `mesh` (call under `mesh_lib.activate`). abstract=True builds
        ShapeDtypeStructs with shardings instead of arrays (restore targets, ahead-of-time compilation)."""
        init, tx = self.init_state(plan.num_steps, mesh, rules, abstract=abstract)
        return init, self.lm_step(init, tx, plan.num_steps, mesh_lib.batch_sharding(mesh, rules))

    def compile_step(self, mesh) -> jax.stages.Compiled:
        """The train step compiled ahead of time for `mesh` from abstract inputs (nothing allocated, no data)."""
        rules = self.mesh.rules
        with mesh_lib.activate(mesh, rules):
            init, step = self.build_step(self.plan(), mesh, rules, abstract=True)
            sharding = mesh_lib.batch_sharding(mesh, rules)
            batch = {"tokens": jax.ShapeDtypeStruct((self.batch_size, self.seq_len + 1), jnp.int32, sharding=sharding)}
            return step.lower(init.state, batch).compile()

    def make_run(self, workspace: Workspace, **options) -> PretrainRun:
        return PretrainRun(self, workspace, **options)


register_config(Pretraining)


def data_spec_fingerprint(loader: PackedLoader, mixture: DataMixture, horizon: int) -> str:
    """The loader's spec (shard files, seed, shapes, process slicing) and the mixture's weights at step 0."""
    weights = {k: float(v) for k, v in sorted(mixture.weights_at(0, horizon).items())}
    return fingerprint({"loader": loader.spec(), "weights": weights})


def copy_rows(rows: np.ndarray, length: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The copy test's rows: each row's tokens shuffled (familiar tokens, but no text predicts them), cut into
    `length`-token spans, each span written twice; with the masks of the scored targets of the first copies and of
    the second copies. The first token of a copy is not scored (nothing before it predicts it), so both masks
    cover the same tokens; tokens after the last whole pair stay as they were, unscored."""
    rng = np.random.default_rng(seed)
    out = np.array(rows, copy=True)
    first, second = np.zeros(rows.shape, np.int32), np.zeros(rows.shape, np.int32)
    for i, row in enumerate(rows):
        shuffled = rng.permutation(row)
        for k in range(rows.shape[1] // (2 * length)):
            at = 2 * k * length
            span = shuffled[k * length : (k + 1) * length]
            out[i, at : at + length] = out[i, at + length : at + 2 * length] = span
            first[i, at + 1 : at + length] = 1
            second[i, at + length + 1 : at + 2 * length] = 1
    return out, first, second


# ---------------------------------------------------------------------------------------------------- the run
class PretrainRun(StageRun):
    """The pretraining stage's parts of the shared loop: packed mixture batches, random initial weights, bits per
    byte of each source, greedy completions of plain-text prompts."""

    stage = STAGE
    fresh_start = "from scratch"

    def prepare_data(self) -> PackedLoader:
        exp = self.exp
        self.plan = exp.plan()
        self.num_steps, self.tokens_per_step = self.plan.num_steps, self.plan.tokens_per_step
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
            horizon=self.num_steps,  # a curriculum's weights_at(step, horizon) is told the run's length
        )
        self.data_spec = data_spec_fingerprint(loader, exp.mixture, self.num_steps)
        return self.cleanup.enter_context(loader)  # stops its prefetch thread when the run ends

    def batch_metrics(self, batches: PackedLoader) -> dict:
        """The mix the batch realised: `mix_<source>`, each source's share of its tokens (this process's rows)."""
        return realised_mix(batches.last_info.source_tokens) if batches.last_info is not None else {}

    def fresh_state(self, init, tx):
        return self.exp.init_state(self.num_steps, self.mesh, self.rules, abstract=False)[0].state  # random weights

    def start(self, state) -> None:
        exp, mesh, rules = self.exp, self.mesh, self.rules
        say(self.plan.describe())
        say(mesh_lib.partition_table(self.abstract_params, mesh, rules))
        self.greedy = make_greedy(self.init.graphdef, exp.sample_tokens, mesh)
        pc, pi = jax.process_count(), jax.process_index()
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
                say(f"pretrain: warning: source {name!r} has too little validation text for one batch; no {name}_bpb")
        # copy_gain: bits per byte the model saves on the second copy of a span of shuffled validation tokens over
        # the first. About 0 until it has induction heads (it cannot copy from its context), then a phase change to
        # most of the first copy's; copying is what later lets an agent put a request's file name into its call.
        rows = next((b[0] for b in self.val_batches.values() if b), None)
        self.copy_batches = []
        if rows is not None:
            repeated, first, second = copy_rows(rows, length=min(48, rows.shape[1] // 2))  # short rows: one pair
            self.copy_batches = [
                mesh_lib.shard_batch({"tokens": repeated, "mask": mask}, mesh, rules) for mask in (first, second)
            ]

    def announce(self, peak_desc: str) -> str:
        return f"pretrain: MFU against {peak_desc}"  # the plan already said the steps and their sizes

    def shard(self, rows: np.ndarray) -> dict[str, jax.Array]:
        return mesh_lib.shard_batch({"tokens": rows}, self.mesh, self.rules)

    def evaluate(self, step: int, state) -> dict:
        """Validation bits per byte of each source (`<source>_bpb`), their mean (`val_bpb`) and `copy_gain`."""
        record: dict[str, Any] = {"step": step}
        for name, batches in self.val_batches.items():
            if batches:
                record[f"{name}_bpb"] = evaluate_bpb(self.bpb_step, state.params, state.rest, map(self.shard, batches))
        values = [v for k, v in record.items() if k.endswith("_bpb")]
        record["val_bpb"] = float(np.mean(values)) if values else float("nan")
        if self.copy_batches:
            first, second = (evaluate_bpb(self.bpb_step, state.params, state.rest, [b]) for b in self.copy_batches)
            record["copy_gain"] = first - second
        return self.log_eval(record, "eval")

    def sample(self, step: int, state) -> None:
        texts = greedy_complete(
            self.greedy,
            self.tokenizer,
            state.params,
            state.rest,
            PRETRAIN_PROMPTS,
            self.exp.sample_tokens,
            rows_multiple=self.shards,
        )
        for prompt, text in zip(PRETRAIN_PROMPTS, texts):
            self.samples.log({"step": step, "prompt": prompt, "completion": text})
            say(f"sample {step}: {prompt!r} -> {text!r}")
