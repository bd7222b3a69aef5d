"""The loop the fine-tuning stages share (agentic SFT, preference optimisation).

A fine-tuning stage starts from the latest checkpoint of an earlier stage (only its parameters: the optimizer
starts afresh) or, with --resume, continues from its own latest checkpoint; then it trains with periodic logs,
evaluations, samples and checkpoints, and stops cleanly on SIGTERM — the pretraining loop's behaviour, with the
stage-specific parts (data, step, evals, samples) supplied by a subclass of `StageRun`:

    prepare_data()            -> the training batches (iterable, with state()/restore()); sets num_steps (when -1),
                                 data_spec and tokens_per_step
    build_step(init, tx)      -> the jitted train step
    start(state, init_dir)    -> anything else the step needs besides the state (the frozen reference, eval data)
    wrap_batches(batches)     -> the batches as the step takes them (precomputed reference log-probs attached)
    train(state, batch)       -> (state, metrics): one optimizer step
    evaluate(step, state)     -> a metrics record; sample(step, state) -> writes samples.jsonl

The step loop itself is `train_steps` (train, log, evaluate, sample, save when due, stop on SIGTERM), a plain
function of callbacks that any stage's loop can call.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from nanocode.core import config as config_lib
from nanocode.core import mesh as mesh_lib
from nanocode.core.checkpoint import Checkpointer, PreemptionGuard, check_compatible, complete_steps, make_meta
from nanocode.core.errors import CheckpointError, ConfigError, StageInterrupted
from nanocode.core.interfaces import MeshFactory, OptimizerFactory, Tokenizer
from nanocode.core.kinds import MODELS, TOKENIZERS, TOOLS
from nanocode.core.progress import Progress
from nanocode.core.workspace import Workspace
from nanocode.data.conversation import ConversationCodec, Message, ToolCall
from nanocode.train import mfu as mfu_lib
from nanocode.train.metrics import JsonlLogger, format_line, peak_memory_bytes
from nanocode.train.pretrain import batch_shards, tokenizer_fingerprint
from nanocode.train.state import Initialised, TrainState, abstract_model, init_train_state, split_model
from nanocode.train.step import REMAT_POLICIES

# nanocode's agentic sample prompts (SFT and DPO), answered with greedy tokens at every sample step.
AGENTIC_PROMPTS: tuple[str, ...] = (
    "Can you fix the bug in hello.py?",
    "Can you implement a MLP layer for me?",
    "Where is the utils.py file located?",
)
# nanocode's four tools and their required arguments, for when the agent tools are not registered.
DEFAULT_TOOL_SCHEMAS: dict[str, tuple[str, ...]] = {
    "Read": ("file_path",),
    "Edit": ("file_path", "new_string"),
    "Grep": ("pattern",),
    "Bash": ("command",),
}


def say(text: str) -> None:
    if jax.process_index() == 0:
        print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True, kw_only=True)
class Finetuning:
    """What every fine-tuning stage binds in gin: the model (as pretrained), optimizer, mesh, sizes and cadences.

    `batch_size` counts examples per optimizer step over all devices (rows for SFT, pairs for paired preference
    objectives); `micro_batch_size` examples go through one forward/backward (gradient accumulation).
    """

    model: str = "gpt"
    model_config: Any = field(repr=False)
    optimizer: OptimizerFactory = field(repr=False)
    mesh: MeshFactory = field(repr=False)
    tokenizer: str = "bpe"
    batch_size: int
    micro_batch_size: int | None = None  # None = batch_size
    num_steps: int = -1  # -1: one pass over the training data (see the stage)
    seed: int = 42
    eval_every: int = 100  # 0: only before the first and after the last step
    eval_batches: int = 8  # held-out batches (of micro_batch_size examples) per evaluation
    sample_every: int = 100  # 0: only after the last step
    sample_tokens: int = 64
    checkpoint_every: int = 500  # 0: only at the end (and on SIGTERM)
    keep_checkpoints: int = 2
    log_every: int = 1
    peak_flops: float | None = None  # per device, for MFU; None: the accelerator table, or measured on CPU
    remat: str | None = None
    init_from: str = "pretrain"  # the stage whose latest checkpoint gives the initial parameters
    init_checkpoint: str | None = None  # or an explicit checkpoint directory (or step directory) instead
    system_prompt: str | None = None  # prepended as a system message to every conversation without one

    def __post_init__(self):
        name = type(self).__name__

        def bad(why: str):
            raise ConfigError(f"{name}.{why}")

        model_class = self.model_class  # an unknown model name raises, listing the registered ones
        for attr, cls in (("optimizer", OptimizerFactory), ("mesh", MeshFactory)):
            if not isinstance(getattr(self, attr), cls):
                bad(f"{attr}: expected a {cls.__name__}, got {type(getattr(self, attr)).__name__}")
        if not isinstance(self.model_config, model_class.Config):
            bad(f"model_config: expected a {model_class.Config.__name__}, got {type(self.model_config).__name__}")
        if self.batch_size < 1:
            bad(f"batch_size = {self.batch_size}: must be >= 1")
        if self.micro_rows < 1 or self.batch_size % self.micro_rows:
            bad(f"micro_batch_size = {self.micro_rows} does not divide batch_size = {self.batch_size}")
        if self.num_steps == 0 or self.num_steps < -1:
            bad(f"num_steps = {self.num_steps}: must be >= 1, or -1 for one pass over the data")
        for attr in ("eval_every", "sample_every", "checkpoint_every", "eval_batches", "sample_tokens"):
            if getattr(self, attr) < 0:
                bad(f"{attr} = {getattr(self, attr)}: must be >= 0")
        if self.log_every < 1 or self.keep_checkpoints < 1:
            bad("log_every and keep_checkpoints must be >= 1")
        if self.peak_flops is not None and self.peak_flops <= 0:
            bad(f"peak_flops = {self.peak_flops}: must be > 0 (or None)")
        if self.remat is not None and self.remat not in REMAT_POLICIES:
            bad(f"remat = {self.remat!r}: not one of None, {', '.join(map(repr, REMAT_POLICIES))}")

    @property
    def model_class(self) -> type:
        return MODELS.get(self.model)

    @property
    def micro_rows(self) -> int:
        return self.micro_batch_size or self.batch_size

    @property
    def seq_len(self) -> int:
        return self.model_config.sequence_len

    @property
    def accum_steps(self) -> int:
        return self.batch_size // self.micro_rows

    def learning_rate(self, num_steps: int):
        """step -> the LR to log: the optimizer's base `lr` x its schedule multiplier (None without a schedule)."""
        schedule = getattr(self.optimizer, "schedule", None)
        if schedule is None:
            return None
        multiplier, base = schedule(num_steps), float(getattr(self.optimizer, "lr", 1.0))
        return lambda step: base * multiplier(step)

    def load_tokenizer(self, workspace: Workspace) -> Tokenizer:
        tokenizer = TOKENIZERS.get(self.tokenizer).load(workspace.tokenizer_dir)
        if tokenizer.vocab_size != self.model_config.vocab_size:
            raise ConfigError(
                f"{workspace.tokenizer_dir}: tokenizer has {tokenizer.vocab_size} ids but "
                f"{type(self.model_config).__name__}.vocab_size = {self.model_config.vocab_size}"
            )
        return tokenizer


# ---------------------------------------------------------------------------------------------------- helpers
def with_system_prompt(messages: Sequence[Message], system_prompt: str | None) -> list[Message]:
    messages = list(messages)
    if system_prompt and messages and messages[0].get("role") != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def first_system_prompt(conversations: Sequence[Sequence[Message]]) -> str | None:
    """The system message the data opens with, if any (nanocode gives every conversation the same one): samples
    are prompted with it so they see what training saw."""
    first = conversations[0] if conversations else []
    return (first[0].get("content") or None) if first and first[0].get("role") == "system" else None


def tool_schemas() -> dict[str, tuple[str, ...]]:
    """{tool: required argument names} of the registered agent tools (nanocode's four when none are registered)."""
    schemas = {}
    for name in TOOLS.names():
        args = getattr(TOOLS.get(name), "args", None)
        if args is not None:
            schemas[name] = tuple(a.name for a in args if getattr(a, "required", False))
    return schemas or dict(DEFAULT_TOOL_SCHEMAS)


def has_valid_tool_call(codec: ConversationCodec, reply: Sequence[int], schemas: Mapping[str, Sequence[str]]) -> bool:
    """Whether an assistant reply (ids after <|assistant_start|>) holds a well-formed call of a known tool with its
    required arguments."""
    reply = list(reply)
    start = codec.ids["tool_call_start"]
    if start not in reply:
        return False
    return isinstance(codec.parse_tool_call(reply[reply.index(start) :], schemas), ToolCall)


def greedy_replies(
    greedy, params, rest, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, stop_id: int, rows_multiple: int
) -> list[list[int]]:
    """Greedy continuations of token prompts with `train.sampling.make_greedy`'s function, each cut after the
    first `stop_id` (the fixed-shape decoder keeps going; what follows the stop is discarded)."""
    n = -(-len(prompts) // rows_multiple) * rows_multiple
    width = max(len(p) for p in prompts) + max_new_tokens
    tokens = np.full((n, width), stop_id, np.int32)
    lengths = np.ones((n,), np.int32)
    for i, ids in enumerate(prompts):
        tokens[i, : len(ids)] = ids
        lengths[i] = len(ids)
    out = np.asarray(greedy(params, rest, tokens, lengths))
    replies = []
    for i in range(len(prompts)):
        reply = out[i, lengths[i] : lengths[i] + max_new_tokens].tolist()
        replies.append(reply[: reply.index(stop_id) + 1] if stop_id in reply else reply)
    return replies


def init_step_dir(workspace: Workspace, stage: str, checkpoint: str | None, what: str) -> Path:
    """The complete checkpoint step a stage starts from: the latest of `stage`'s, or of an explicit directory."""
    directory = Path(checkpoint).expanduser() if checkpoint else workspace.checkpoint_dir(stage)
    if directory.name.isdigit() and (directory / "state").is_dir():  # a step directory itself
        return directory
    steps = complete_steps(directory)  # read-only: the stage that wrote it may still be saving
    if not steps:
        raise CheckpointError(
            f"{directory}: no complete {stage} checkpoint to start from (train that stage first, or set {what})"
        )
    return directory / str(steps[-1])


def restore_params(step_dir: Path, abstract_params: Any) -> Any:
    """Only the `params` of a saved train state (orbax partial restore), straight into the shardings that
    `abstract_params` (ShapeDtypeStructs with shardings) carries: the optimizer state stays on disk."""
    restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding), abstract_params)
    args = ocp.args.PyTreeRestore(
        item={"params": abstract_params}, restore_args={"params": restore_args}, partial_restore=True
    )
    asyncio_log = logging.getLogger("asyncio")
    level = asyncio_log.level
    asyncio_log.setLevel(logging.CRITICAL)  # a shape mismatch also logs every failed read; the error says it
    try:
        restored = ocp.PyTreeCheckpointer().restore(step_dir / "state", args=args)
    except Exception as e:  # orbax raises many types with multi-line messages
        first = (str(e).strip().splitlines() or [""])[0].split(" Truncating")[0]
        raise CheckpointError(
            f"{step_dir}: cannot read the model parameters ({type(e).__name__}: {first}); does the experiment's "
            "model config match the checkpoint?"
        ) from e
    finally:
        asyncio_log.setLevel(level)
    return restored["params"]


def start_state(exp: Finetuning, init: Initialised, tx, params: Any) -> TrainState:
    """A fresh train state around given parameters: new optimizer state, step 0, the run's key, laid out as `init`.

    The model is built inside the jit only for its non-parameter variables; its unused random parameters are
    dead code that XLA removes."""

    def make(params):
        _, _, rest = split_model(exp.model_class(exp.model_config, rngs=nnx.Rngs(exp.seed)))
        key = jax.random.key_data(jax.random.key(exp.seed))
        return TrainState(params, rest, tx.init(params), jnp.zeros((), jnp.int32), key)

    return jax.jit(make, out_shardings=init.shardings)(params)


# ---------------------------------------------------------------------------------------------------- the loop
class StageRun:
    """One invocation of a fine-tuning stage: started from the previous stage, or continued from a checkpoint."""

    stage = ""
    rows_per_example = 1  # rows of one example in a batch (2 for paired preference data)

    def __init__(self, exp: Finetuning, workspace: Workspace, *, resume: bool, force: bool, progress: bool):
        self.exp, self.workspace, self.resume, self.force, self.progress = exp, workspace, resume, force, progress
        self.run_dir = workspace.run_dir(self.stage)
        self.main = jax.process_index() == 0
        self.metrics = JsonlLogger(self.run_dir / "metrics.jsonl", enabled=self.main)
        self.samples = JsonlLogger(self.run_dir / "samples.jsonl", enabled=self.main)
        self.on_checkpoint: Callable[[int], None] | None = None
        self.num_steps = exp.num_steps
        self.data_spec = ""
        self.tokens_per_step = 0
        self.sample_system = exp.system_prompt  # prepare_data may take it from the data instead

    # -- what a stage supplies ------------------------------------------------------------------------------------
    def prepare_data(self):
        """Read the data; set num_steps (when -1), data_spec and tokens_per_step; return the training batches."""
        raise NotImplementedError

    def build_step(self, init: Initialised, tx) -> Callable:
        raise NotImplementedError

    def start(self, state: TrainState, init_dir: Path) -> None:
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

    def postfix(self, record: dict) -> str:
        return f"loss {record['loss']:.4f}"

    # -- shared pieces --------------------------------------------------------------------------------------------
    def log_eval(self, record: dict) -> dict:
        self.metrics.log(record)
        say(f"{self.stage} eval " + format_line(record["step"], record, tuple(k for k in record if k != "step")))
        return record

    def sample_prompts(self, step: int, state: TrainState, prompts: Sequence[str] = AGENTIC_PROMPTS) -> None:
        """Greedy replies to fixed user prompts, as the agent would see them (system prompt included)."""
        ids = [
            self.codec.render_prompt(with_system_prompt([{"role": "user", "content": p}], self.sample_system))
            for p in prompts
        ]
        replies = greedy_replies(
            self.greedy,
            state.params,
            state.rest,
            ids,
            self.exp.sample_tokens,
            stop_id=self.codec.ids["assistant_end"],
            rows_multiple=self.shards,
        )
        for prompt, reply in zip(prompts, replies):
            text = self.tokenizer.decode(reply)
            self.samples.log({"step": step, "prompt": prompt, "completion": text})
            say(f"sample {step}: {prompt!r} -> {text!r}")

    def run(self) -> dict:
        exp = self.exp
        self.tokenizer = exp.load_tokenizer(self.workspace)
        self.codec = ConversationCodec(self.tokenizer)
        self.mesh, self.rules = exp.mesh.make(), exp.mesh.rules
        self.shards = batch_shards(self.mesh, self.rules)
        if (exp.micro_rows * self.rows_per_example) % self.shards:
            raise ConfigError(
                f"{type(exp).__name__}.micro_batch_size = {exp.micro_rows} ({exp.micro_rows * self.rows_per_example} "
                f"rows) does not split over the {self.shards} batch shards of mesh {mesh_lib.mesh_shape(self.mesh)}"
            )
        self.checkpointer = Checkpointer(self.workspace.checkpoint_dir(self.stage), max_to_keep=exp.keep_checkpoints)
        try:
            with mesh_lib.activate(self.mesh, self.rules):
                return self._run()
        finally:
            self.checkpointer.close()

    def _restore_or_start(self, meta: dict):
        """(init, state, start step, data state, the previous stage's step directory); sets meta's init_checkpoint.

        A resumed run keeps the step directory it started from (recorded in its checkpoints): the earlier stage may
        have saved more steps since."""
        exp = self.exp
        latest = self.checkpointer.latest_step()
        if latest is not None and not self.resume:
            raise CheckpointError(
                f"{self.checkpointer.directory} holds checkpoints (latest step {latest}): pass --resume to continue "
                "that run, or delete the directory to start over"
            )
        params = nnx.state(abstract_model(exp.model_class, exp.model_config, exp.seed), nnx.Param)
        tx = exp.optimizer.build(params, self.num_steps)
        init = init_train_state(
            exp.model_class, exp.model_config, tx, seed=exp.seed, mesh=self.mesh, rules=self.rules, abstract=True
        )
        self.train_step = self.build_step(init, tx)
        saved = self.checkpointer.read_meta(latest) if latest is not None else {}
        if latest is not None:
            check_compatible(saved, meta, force=self.force)
        if saved.get("init_checkpoint"):
            init_dir = Path(saved["init_checkpoint"])
        else:
            what = f"{type(exp).__name__}.init_checkpoint"
            init_dir = init_step_dir(self.workspace, exp.init_from, exp.init_checkpoint, what)
        meta["init_checkpoint"] = str(init_dir)
        if latest is not None:
            restored = self.checkpointer.restore(latest, init.state)
            say(f"{self.stage}: resuming from step {restored.step} ({self.checkpointer.directory / str(latest)})")
            return init, restored.state, restored.step, restored.data, init_dir
        if self.resume:
            say(f"{self.stage}: no checkpoint in {self.checkpointer.directory}; starting afresh")
        state = start_state(exp, init, tx, restore_params(init_dir, init.state.params))
        say(f"{self.stage}: starting from {init_dir}")
        return init, state, 0, None, init_dir

    def _run(self) -> dict:
        exp = self.exp
        abstract = nnx.state(abstract_model(exp.model_class, exp.model_config, exp.seed), nnx.Param)
        mesh_lib.validate(abstract, self.mesh, self.rules)
        batches = self.prepare_data()
        meta = make_meta(
            config=config_lib.config_str(),
            tokenizer=tokenizer_fingerprint(self.tokenizer),
            data_spec=self.data_spec,
            mesh=self.mesh,
        )
        self.init, state, step, data_state, init_dir = self._restore_or_start(meta)  # refusals before any output
        self.start(state, init_dir)
        batches = self.wrap_batches(batches)
        if data_state:
            batches.restore(data_state)
        if self.main:
            config_lib.write_config(self.run_dir)
        self.flops_per_token = int(abstract_model(exp.model_class, exp.model_config).flops_per_token())
        peak, peak_desc = mfu_lib.peak_flops(exp.model_config.dtype, jax.devices(), exp.peak_flops)
        say(f"{self.stage}: {self.num_steps} steps of {exp.batch_size} examples; MFU against {peak_desc}")

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
            evaluate=self.evaluate,
            sample=self.sample,
            save=save,
            metrics=self.metrics,
            throughput=Throughput(self.tokens_per_step, self.flops_per_token, peak),
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
    metrics: JsonlLogger,
    throughput: Throughput,
    postfix: Callable[[dict], str],
    progress: bool = True,
    last: dict | None = None,
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
        Progress(n, stage, unit="step", initial=step, enabled=progress) as bar,
    ):
        batch = next_batch() if step < n else None
        t_last = time.perf_counter()
        while step < n:
            state, out = train(state, batch)  # dispatched; runs while the host prepares the next batch
            step += 1
            position = data_state()  # the position after this step's batch: what a resume continues from
            if step < n:
                batch = next_batch()
            record = {"step": step, **{k: float(v) for k, v in jax.device_get(out).items()}}
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
