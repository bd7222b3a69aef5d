"""What every training stage binds in gin (pretraining, SFT, preference optimisation): `Training`.

A stage's own settings: optimizer, batch sizes, horizon, seed, the cadences of logs, evals, samples and checkpoints,
and optionally its own context length. The pieces every stage shares — the model (its registered name and Config),
the mesh and the tokenizer — are the experiment's (`nanocode.cli.experiment.Experiment`), which hands them to each
stage (`FROM_EXPERIMENT`); built on its own in Python, a stage takes them as arguments. Validated when built, so a bad
value is one line naming the binding before anything is read or traced. A stage subclasses it with its own fields
(data, objective, where it starts from), registers the subclass with gin, and supplies the loop that runs it
(`make_run`, a `loop.StageRun`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, is_dataclass, replace
from typing import Any, ClassVar, NoReturn

from flax import nnx

from nanocode.core.errors import ConfigError
from nanocode.core.interfaces import MeshFactory, MetricsWriter, OptimizerFactory, Tokenizer
from nanocode.core.kinds import MODELS, TOKENIZERS
from nanocode.core.workspace import Workspace
from nanocode.train.metric_writers import JsonlWriter
from nanocode.train.state import Initialised, abstract_model, init_train_state
from nanocode.train.step import REMAT_POLICIES, make_train_step


@dataclass(frozen=True, kw_only=True)
class Training:
    """A training stage's experiment. `batch_size` counts examples per optimizer step over all devices (rows; pairs
    for paired preference objectives); `micro_batch_size` examples go through one forward/backward."""

    default_horizon: ClassVar[str] = "one pass over the data"  # what num_steps = -1 means (in its error message)
    # Fields the experiment fills in (never bound on the stage itself in gin; in Python they are arguments). Those in
    # REQUIRED must be set before the stage runs (a system_prompt of None means none).
    FROM_EXPERIMENT: ClassVar[tuple[str, ...]] = ("model", "model_config", "mesh", "tokenizer")
    REQUIRED: ClassVar[tuple[str, ...]] = ("model", "model_config", "mesh", "tokenizer", "mixture")

    model: str = "gpt"  # a registered model name
    model_config: Any = field(default=None, repr=False)  # the model class's Config (GPTConfig), compute dtype included
    mesh: MeshFactory | None = field(default=None, repr=False)
    tokenizer: str = "bpe"  # a registered tokenizer name
    sequence_len: int | None = None  # this stage's context; None: the model config's (RoPE carries weights across)
    optimizer: OptimizerFactory = field(repr=False)
    batch_size: int
    micro_batch_size: int | None = None  # gradient accumulation; None = batch_size
    num_steps: int = -1  # -1: the stage's own horizon (default_horizon)
    seed: int = 42
    eval_every: int = 100  # 0: only before the first and after the last step
    eval_batches: int = 8  # held-out batches (of micro_batch_size examples) per evaluation (per source, pretraining)
    sample_every: int = 100  # 0: only after the last step
    sample_tokens: int = 64
    checkpoint_every: int = 500  # 0: only at the end (and on SIGTERM)
    keep_checkpoints: int = 2
    log_every: int = 1
    peak_flops: float | None = None  # per device, for MFU; None: the accelerator table, or measured on CPU
    remat: str | None = None  # recompute activations in the backward pass: None, or 'dots' (see step.REMAT_POLICIES)
    # where the metrics go (train.metric_writers): [@jsonl(), @tensorboard(), @wandb(), @trackio()], several at once
    metrics_writers: tuple[MetricsWriter, ...] = field(default_factory=lambda: (JsonlWriter(),))

    def invalid(self, why: str) -> NoReturn:
        raise ConfigError(f"{type(self).__name__}.{why}")

    def __post_init__(self):
        bad = self.invalid
        if not isinstance(self.optimizer, OptimizerFactory):
            bad(f"optimizer: expected an OptimizerFactory, got {type(self.optimizer).__name__}")
        if self.mesh is not None and not isinstance(self.mesh, MeshFactory):
            bad(f"mesh: expected a MeshFactory, got {type(self.mesh).__name__}")
        if self.sequence_len is not None and self.sequence_len < 1:
            bad(f"sequence_len = {self.sequence_len}: must be >= 1 (or None for the model config's)")
        if self.model_config is not None:
            model_class = self.model_class  # an unknown model name raises, listing the registered ones
            if not isinstance(self.model_config, model_class.Config):
                bad(f"model_config: expected a {model_class.Config.__name__}, got {type(self.model_config).__name__}")
            if self.sequence_len is not None and self.sequence_len != self.model_config.sequence_len:
                if not is_dataclass(self.model_config):
                    bad(f"sequence_len: {type(self.model_config).__name__} is not a dataclass to set it in")
                # the stage trains at its own context: its model is built with it (frozen: set once, here)
                object.__setattr__(self, "model_config", replace(self.model_config, sequence_len=self.sequence_len))
        if self.batch_size < 1:
            bad(f"batch_size = {self.batch_size}: must be >= 1")
        if self.micro_rows < 1 or self.batch_size % self.micro_rows:
            bad(f"micro_batch_size = {self.micro_rows} does not divide batch_size = {self.batch_size}")
        if self.num_steps == 0 or self.num_steps < -1:
            bad(f"num_steps = {self.num_steps}: must be >= 1, or -1 for {self.default_horizon}")
        for attr in ("eval_every", "sample_every", "checkpoint_every", "eval_batches", "sample_tokens"):
            if getattr(self, attr) < 0:
                bad(f"{attr} = {getattr(self, attr)}: must be >= 0")
        if self.log_every < 1 or self.keep_checkpoints < 1:
            bad("log_every and keep_checkpoints must be >= 1")
        if self.peak_flops is not None and self.peak_flops <= 0:
            bad(f"peak_flops = {self.peak_flops}: must be > 0 (or None)")
        writers = self.metrics_writers
        writers = (writers,) if isinstance(writers, MetricsWriter) else writers
        if not isinstance(writers, list | tuple):
            bad(f"metrics_writers: expected a list of writers, got {type(writers).__name__}")
        object.__setattr__(self, "metrics_writers", tuple(writers))  # gin binds a list
        for writer in self.metrics_writers:
            if not isinstance(writer, MetricsWriter):
                bad(f"metrics_writers: {writer!r} is not a MetricsWriter (registered: @jsonl(), @tensorboard(), ...)")
        if self.remat is not None and self.remat not in REMAT_POLICIES:
            bad(f"remat = {self.remat!r}: not one of None, {', '.join(map(repr, REMAT_POLICIES))}")

    def require_experiment(self) -> None:
        """Refuse, in one line, to run a stage that still lacks what the experiment supplies."""
        missing = [name for name in self.FROM_EXPERIMENT if getattr(self, name) is None and name in self.REQUIRED]
        if missing:
            self.invalid(
                f"{missing[0]} is not set: a stage gets {', '.join(self.FROM_EXPERIMENT)} from its Experiment "
                "(nanocode.cli.experiment), or as arguments when built in Python"
            )

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

    @property
    def accum_steps(self) -> int:
        return self.batch_size // self.micro_rows

    def learning_rate(self, num_steps: int) -> Callable[[Any], float] | None:
        """step -> the LR to log: the optimizer's base `lr` (Muon's, for muon_adamw) x its schedule multiplier
        (None without a schedule)."""
        schedule = getattr(self.optimizer, "schedule", None)
        if schedule is None:
            return None
        multiplier, base = schedule(num_steps), float(getattr(self.optimizer, "lr", 1.0))
        return lambda step: base * multiplier(step)

    # -- building blocks of a run -----------------------------------------------------------------------------------
    def load_tokenizer(self, workspace: Workspace) -> Tokenizer:
        tokenizer = TOKENIZERS.get(self.tokenizer).load(workspace.tokenizer_dir)
        if tokenizer.vocab_size != self.model_config.vocab_size:
            raise ConfigError(
                f"{workspace.tokenizer_dir}: tokenizer has {tokenizer.vocab_size} ids but "
                f"{type(self.model_config).__name__}.vocab_size = {self.model_config.vocab_size}"
            )
        return tokenizer

    def init_state(self, num_steps: int, mesh, rules, *, abstract: bool = True) -> tuple[Initialised, Any]:
        """(the train state laid out on `mesh`, the optimizer for a `num_steps` schedule); call under
        `mesh_lib.activate`. abstract=True gives ShapeDtypeStructs with shardings (restore targets, AOT compiles)."""
        params = nnx.state(abstract_model(self.model_class, self.model_config, self.seed), nnx.Param)
        tx = self.optimizer.build(params, num_steps)
        init = init_train_state(
            self.model_class, self.model_config, tx, seed=self.seed, mesh=mesh, rules=rules, abstract=abstract
        )
        return init, tx

    def lm_step(self, init: Initialised, tx, num_steps: int, batch_sharding) -> Callable:
        """The language-model train step (pretraining, SFT): mean next-token loss over the batch's (masked) targets."""
        return make_train_step(
            init.graphdef,
            tx,
            accum_steps=self.accum_steps,
            state_shardings=init.shardings,
            batch_sharding=batch_sharding,
            learning_rate=self.learning_rate(num_steps),
            remat=self.remat,
        )

    def make_run(self, workspace: Workspace, **options):
        """The stage's `loop.StageRun` for this experiment (resume, force, progress, on_checkpoint)."""
        raise NotImplementedError

    def run(
        self,
        workspace: Workspace,
        *,
        resume: bool = False,
        force: bool = False,
        progress: bool = True,
        on_checkpoint: Callable[[int], None] | None = None,
    ) -> dict:
        """Train to num_steps (resuming from the latest checkpoint when asked); returns the last metrics.

        `on_checkpoint(step)` is called once each checkpoint is completely on disk (to copy it elsewhere, or to stop).
        """
        self.require_experiment()
        run = self.make_run(workspace, resume=resume, force=force, progress=progress, on_checkpoint=on_checkpoint)
        return run.run()
