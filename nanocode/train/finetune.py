"""What a fine-tuning stage (agentic SFT, preference optimisation) adds to the shared loop (`train.loop`).

`Finetuning` is the gin-bound config every fine-tuning experiment extends; `FinetuneRun` starts from the parameters
of an earlier stage's latest checkpoint (the optimizer starts afresh) and samples greedy replies to fixed agentic
prompts. The helpers here also serve evaluation and loading: `restore_params` (only the parameters of a saved
state) and `has_valid_tool_call` (the tool-call validity check).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from nanocode.core.checkpoint import complete_steps
from nanocode.core.errors import CheckpointError
from nanocode.core.kinds import TOOLS
from nanocode.core.saved_arrays import layout_mismatch, verify_arrays
from nanocode.core.workspace import Workspace
from nanocode.data.conversation import ConversationCodec, Message, ToolCall
from nanocode.train.experiment import Training
from nanocode.train.loop import StageRun, say
from nanocode.train.sampling import make_greedy
from nanocode.train.state import Initialised, TrainState, split_model

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


@dataclass(frozen=True, kw_only=True)
class Finetuning(Training):
    """What every fine-tuning stage binds in gin: `Training`'s fields plus where the stage starts from."""

    default_horizon: ClassVar[str] = "one pass over the data"
    FROM_EXPERIMENT: ClassVar[tuple[str, ...]] = (*Training.FROM_EXPERIMENT, "system_prompt")

    init_from: str = "pretrain"  # the stage whose latest checkpoint gives the initial parameters
    init_checkpoint: str | None = None  # or an explicit checkpoint directory (or step directory) instead
    # The experiment's system prompt (the one chat, serve, the agent and eval use): prepended as a system message to
    # every conversation without one. '' trains on the conversations as they are.
    system_prompt: str | None = None


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


PYTHON_FILE = re.compile(r"[\w./-]*\w\.py\b")


def names_requested_file(codec: ConversationCodec, request: str, reply: Sequence[int]) -> bool | None:
    """Whether a reply (ids after <|assistant_start|>: text and tool call alike) names a Python file that the
    request names, by base name; None when the request names none. It says the model conditions on the request
    (copies its names) rather than replaying an opening memorised from training."""
    files = {path.rsplit("/", 1)[-1] for path in PYTHON_FILE.findall(request)}
    if not files:
        return None
    text = codec.tok.decode(list(reply))
    return any(f in text for f in files)


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
    mismatch = layout_mismatch(step_dir, {"params": abstract_params})
    if mismatch is not None:
        raise CheckpointError(
            f"{step_dir}: cannot read the model parameters ({mismatch}); does the experiment's model config "
            "(n_layer, scan_layers, n_embd, ...) match the checkpoint?"
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
    verify_arrays(step_dir, {"params": restored["params"]})  # a flipped byte is an error, not silently other weights
    # A partial restore leaves whatever the checkpoint lacks as the abstract target (another n_layer, another
    # GPTConfig.scan_layers layout): refuse rather than hand back a model with placeholder weights.
    leaves = jax.tree_util.tree_leaves_with_path(restored["params"], is_leaf=lambda x: isinstance(x, nnx.Variable))
    values = [(p, x.get_value() if isinstance(x, nnx.Variable) else x) for p, x in leaves]
    missing = [
        jax.tree_util.keystr(p, simple=True, separator="/") for p, x in values if isinstance(x, jax.ShapeDtypeStruct)
    ]
    if missing:
        raise CheckpointError(
            f"{step_dir}: the checkpoint has no parameter {missing[0]} ({len(missing)} missing); does the experiment's "
            "model config (n_layer, scan_layers, ...) match the checkpoint?"
        )
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


class FinetuneRun(StageRun):
    """A fine-tuning stage: starts from the parameters of an earlier stage's checkpoint, samples agentic replies."""

    def __init__(self, exp: Finetuning, workspace: Workspace, **options):
        super().__init__(exp, workspace, **options)
        self.sample_system = exp.system_prompt  # prepare_data may take it from the data instead

    @cached_property
    def codec(self) -> ConversationCodec:
        return ConversationCodec(self.tokenizer)

    @cached_property
    def greedy(self) -> Callable:
        """Greedy decoding (samples, tool-call checks); the steps are built first."""
        return make_greedy(self.init.graphdef, self.exp.sample_tokens)

    def origin(self, saved_meta: dict) -> dict:
        """The earlier stage's step directory. A resumed run keeps the one it started from (recorded in its
        checkpoints): the earlier stage may have saved more steps since."""
        if saved_meta.get("init_checkpoint"):
            self.init_dir = Path(saved_meta["init_checkpoint"])
        else:
            what = f"{type(self.exp).__name__}.init_checkpoint"
            self.init_dir = init_step_dir(self.workspace, self.exp.init_from, self.exp.init_checkpoint, what)
        return {"init_checkpoint": str(self.init_dir)}

    def fresh_state(self, init: Initialised, tx) -> TrainState:
        state = start_state(self.exp, init, tx, restore_params(self.init_dir, init.state.params))
        say(f"{self.stage}: starting from {self.init_dir}")
        return state

    def sample(self, step: int, state: TrainState) -> None:
        if self.exp.sample_tokens:
            self.sample_prompts(step, state)

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
