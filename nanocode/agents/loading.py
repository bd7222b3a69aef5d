"""Load a trained model for inference: the experiment's model, a stage's checkpointed parameters, the tokenizer.

The model class and config come from the experiment (`Experiment.inference_model()`), the parameters from the latest
complete checkpoint of `Workspace(tag).checkpoint_dir(stage)` (or a given directory), and the tokenizer from
`Workspace(tag).tokenizer_dir`.
Only the `params` subtree of the saved train state is read (the fine-tuning loop's `restore_params`: an orbax partial
restore), straight onto one device, whatever mesh the run was trained on; the optimizer state stays on disk.

    spec = InferenceModel(model="gpt", model_config=GPTConfig(...))     # or experiment.inference_model()
    loaded = load(spec, Workspace("debug"), stage="sft")
    engine = Engine(loaded.model)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
from flax import nnx

from nanocode.core.checkpoint import complete_steps
from nanocode.core.errors import CheckpointError, ConfigError
from nanocode.core.interfaces import Tokenizer
from nanocode.core.kinds import MODELS, TOKENIZERS
from nanocode.core.workspace import Workspace
from nanocode.train.finetune import restore_params

STAGES = ("pretrain", "sft", "align", "rl")


@dataclass(frozen=True, kw_only=True)
class InferenceModel:
    """Which model to build and which tokenizer to load (the experiment's)."""

    model: str = "gpt"
    model_config: Any = field(repr=False)
    tokenizer: str = "bpe"

    def __post_init__(self):
        cls = MODELS.get(self.model)  # an unknown name raises, listing the registered ones
        if not isinstance(self.model_config, cls.Config):
            raise ConfigError(
                f"InferenceModel.model_config: expected a {cls.Config.__name__} for model {self.model!r}, "
                f"got {type(self.model_config).__name__}"
            )


@dataclass
class Loaded:
    model: nnx.Module
    tokenizer: Tokenizer
    step: int
    checkpoint: Path  # the step directory read
    meta: dict[str, Any]
    stage: str = "sft"  # whose checkpoint it is


def latest_stage(workspace: Workspace) -> str:
    """The last stage of the pipeline with a complete checkpoint (rl, else align, else sft, else pretrain): what a
    user means by "the model" when they name no stage."""
    for stage in reversed(STAGES):
        if complete_steps(workspace.checkpoint_dir(stage)):
            return stage
    raise CheckpointError(
        f"{workspace.model_dir}: no complete checkpoint of any stage ({', '.join(STAGES)}): train one first"
    )


def step_dir(workspace: Workspace, stage: str, checkpoint: str | Path | None = None, step: int | None = None) -> Path:
    """The complete checkpoint step to read: the latest (or `step`) of the stage's checkpoints or of `checkpoint`,
    which may also be a step directory itself."""
    directory = Path(checkpoint).expanduser() if checkpoint is not None else workspace.checkpoint_dir(stage)
    if step is None and directory.name.isdigit() and directory.parent.is_dir():
        if int(directory.name) in complete_steps(directory.parent):  # a step directory itself
            return directory
    steps = complete_steps(directory)
    if not steps:
        raise CheckpointError(
            f"{directory}: no complete {stage} checkpoint (train that stage first, or pass --checkpoint)"
        )
    if step is not None and step not in steps:
        raise CheckpointError(f"{directory}: no complete checkpoint for step {step} (complete: {steps})")
    return directory / str(steps[-1] if step is None else step)


def load_model(model_class: type, config: Any, path: Path) -> nnx.Module:
    """The model with its parameters read from the `params` of the train state saved in step directory `path`,
    onto one device (built abstractly first: no random initialisation is computed only to be overwritten)."""
    graphdef, params, rest = nnx.split(nnx.eval_shape(lambda: model_class(config, rngs=nnx.Rngs(0))), nnx.Param, ...)
    if jax.tree.leaves(rest):  # non-parameter state (none in GPT): take its initial values from a real model
        rest = nnx.state(model_class(config, rngs=nnx.Rngs(0)), nnx.Not(nnx.Param))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), params)
    return nnx.merge(graphdef, restore_params(path, target), rest)


def load(
    spec: InferenceModel,
    workspace: Workspace,
    *,
    stage: str = "sft",
    checkpoint: str | Path | None = None,
    step: int | None = None,
) -> Loaded:
    """Build the model, read its parameters from the stage's checkpoint and load the tokenizer. `stage="latest"`:
    the last stage that has one (an explicit `checkpoint` of unknown stage is taken as a chat model, "sft")."""
    if stage == "latest":
        stage = "sft" if checkpoint is not None else latest_stage(workspace)
    path = step_dir(workspace, stage, checkpoint, step)
    tokenizer = TOKENIZERS.get(spec.tokenizer).load(workspace.tokenizer_dir)
    if tokenizer.vocab_size > spec.model_config.vocab_size:
        raise ConfigError(
            f"{workspace.tokenizer_dir}: tokenizer has {tokenizer.vocab_size} ids but the model's vocab_size is "
            f"{spec.model_config.vocab_size}"
        )
    model = load_model(MODELS.get(spec.model), spec.model_config, path)
    try:
        meta = json.loads((path / "meta" / "metadata").read_text())
    except (OSError, ValueError):
        meta = {}
    return Loaded(model, tokenizer, int(path.name), path, meta, stage)
