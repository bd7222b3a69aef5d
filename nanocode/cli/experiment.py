"""The experiment: the one root a gin file binds, holding what the stages share and one field per stage.

    Experiment.tag = 'd24'
    Experiment.model_config = @GPTConfig()
    Experiment.mesh = @axes()
    Experiment.data = @web_code()
    Experiment.tokenizer_training = @TokenizerTraining()
    Experiment.pretraining = @Pretraining()
    Experiment.synth = @Synthesis()          # None: no teacher (the SFT and preference data come ready-made)
    Experiment.sft = @SFTTraining()
    Experiment.align = @Alignment()
    Experiment.rl = @RLTraining()
    Experiment.eval = @Evaluation()
    Experiment.report = @Report()

Every field without a default must be bound; a stage an experiment leaves out is bound to None, on purpose. The CLI
builds the experiment once, right after parsing, for every command: each stage is built and handed the shared pieces
it declares (its FROM_EXPERIMENT fields: model, model config, mesh, tokenizer, data, system prompt), so a missing or
wrong binding anywhere is one line naming the experiment file, before any compute. In Python the same object is
built by hand: `Experiment(tag=..., model_config=GPTConfig(...), ..., sft=SFTTraining(...))`.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nanocode import registry
from nanocode.agents.loading import InferenceModel
from nanocode.agents.policy import system_prompt as nanocode_system_prompt
from nanocode.agents.rl import RLTraining
from nanocode.align.synthesis import Synthesis
from nanocode.core import config
from nanocode.core.errors import ConfigError
from nanocode.core.interfaces import DataMixture, MeshFactory
from nanocode.core.kinds import MODELS
from nanocode.core.registry import register_config
from nanocode.core.workspace import Workspace
from nanocode.data.tokenizer_training import TokenizerTraining
from nanocode.evals.report import Report
from nanocode.evals.run import Evaluation
from nanocode.train.align import Alignment
from nanocode.train.pretrain import Pretraining
from nanocode.train.sft import SFTTraining

# Experiment field -> the class its stage is (a plugin may bind a subclass).
STAGES: dict[str, type] = {
    "tokenizer_training": TokenizerTraining,
    "pretraining": Pretraining,
    "synth": Synthesis,
    "sft": SFTTraining,
    "align": Alignment,
    "rl": RLTraining,
    "eval": Evaluation,
    "report": Report,
}
# A stage field whose name differs from the experiment field that fills it (vocab_size: the model config's).
SHARED_AS = {"mixture": "data", "vocab_size": "model_config"}


@dataclass(frozen=True, kw_only=True)
class Experiment:
    """A whole run: its tag, model, mesh, data and system prompt, and every stage's settings."""

    tag: str  # names the workspace directory of every stage's output: $NANOCODE_BASE_DIR/<tag>/
    model: str = "gpt"  # a registered model name
    model_config: Any = field(repr=False)  # that model's Config (GPTConfig)
    tokenizer: str = "bpe"  # a registered tokenizer name
    mesh: MeshFactory = field(repr=False)
    data: DataMixture | None = field(repr=False)  # the pretraining mixture (tokenizer training samples it too)
    # What every conversation starts with, in training (SFT, align) and at inference (chat, agent, serve, eval).
    # None: nanocode's runtime prompt listing the registered tools; '': none.
    system_prompt: str | None = None
    tokenizer_training: TokenizerTraining | None
    pretraining: Pretraining | None
    synth: Synthesis | None
    sft: SFTTraining | None
    align: Alignment | None
    rl: RLTraining | None
    eval: Evaluation | None
    report: Report | None
    files: tuple[str, ...] = field(default=(), compare=False)  # the gin files it came from (for messages)

    def __post_init__(self):
        if not self.tag or not re.fullmatch(r"[\w.-]+", self.tag) or self.tag in (".", ".."):
            raise ConfigError(f"Experiment.tag = {self.tag!r}: use letters, digits, '_', '-' or '.' (a directory name)")
        model_class = MODELS.get(self.model)  # an unknown name raises, listing the registered ones
        if not isinstance(self.model_config, model_class.Config):
            raise ConfigError(
                f"Experiment.model_config: expected a {model_class.Config.__name__} for model {self.model!r}, got "
                f"{type(self.model_config).__name__}"
            )
        if not isinstance(self.mesh, MeshFactory):
            raise ConfigError(f"Experiment.mesh: expected a mesh (e.g. @axes()), got {type(self.mesh).__name__}")
        if self.data is not None and not isinstance(self.data, DataMixture):
            raise ConfigError(
                f"Experiment.data: expected a data mixture (e.g. @web_code()), got {type(self.data).__name__}"
            )
        if self.system_prompt is None:
            object.__setattr__(self, "system_prompt", nanocode_system_prompt())
        for name, cls in STAGES.items():
            stage = getattr(self, name)
            if stage is None:
                continue
            if not isinstance(stage, cls):
                raise ConfigError(
                    f"Experiment.{name}: expected a {cls.__name__} (e.g. @{cls.__name__}()), got {type(stage).__name__}"
                )
            object.__setattr__(self, name, self._bind(name, stage))  # frozen: completed once, here

    def _bind(self, name: str, stage: Any) -> Any:
        """The stage with the experiment's shared pieces filled in; one it already holds must be the same."""
        wanted = {f: self.shared(f) for f in getattr(type(stage), "FROM_EXPERIMENT", ())}
        if "mixture" in wanted and wanted["mixture"] is None:
            raise ConfigError(f"Experiment.data is None, but the {name} stage reads a data mixture: bind one")
        bound = dataclasses.replace(stage, **wanted)  # validates the completed stage (its __post_init__)
        defaults = {f.name: f.default for f in dataclasses.fields(stage)}
        for f in wanted:
            have = getattr(stage, f)
            if have is not None and have != defaults.get(f) and have != getattr(bound, f):
                raise ConfigError(
                    f"{type(stage).__name__}.{f} is bound on the stage, but every stage takes it from the experiment: "
                    f"bind Experiment.{SHARED_AS.get(f, f)} instead"
                )
        return bound

    def shared(self, name: str) -> Any:
        """The value of a stage's FROM_EXPERIMENT field `name`."""
        if name == "vocab_size":  # the tokenizer is trained for the model's embedding table
            return self.model_config.vocab_size
        return getattr(self, SHARED_AS.get(name, name))

    # -- what the commands use ----------------------------------------------------------------------------------
    @property
    def workspace(self) -> Workspace:
        return Workspace(self.tag)

    def stage(self, name: str) -> Any:
        """The bound stage `name` (an Experiment field), or a one-line error when the experiment leaves it out."""
        if name not in STAGES:
            raise ConfigError(f"unknown stage {name!r} (stages: {', '.join(STAGES)})")
        stage = getattr(self, name)
        if stage is None:
            raise ConfigError(f"{self.where}: Experiment.{name} = None: this experiment has no {name} stage")
        return stage

    @property
    def where(self) -> str:
        return " + ".join(self.files) or "the experiment"

    def inference_model(self) -> InferenceModel:
        """What chat, the agent and the server load: the experiment's model and tokenizer."""
        return InferenceModel(model=self.model, model_config=self.model_config, tokenizer=self.tokenizer)


register_config(Experiment)


# ---------------------------------------------------------------------------------------------------- loading
def load(gin_files: Sequence[str], gin_params: Sequence[str] = (), plugins: Sequence[str] = ()) -> Experiment:
    """Parse the gin files and bindings (plugins first) and build the experiment; ConfigError in one line."""
    if not gin_files and not gin_params:
        raise ConfigError("no experiment given: pass --gin_file FILE (e.g. experiments/debug_cpu.gin)")
    registry.load_builtins()
    try:
        config.parse(gin_files, gin_params, plugins)
    except ConfigError as e:
        if "No configurable matching 'Workspace'" in str(e):  # the binding of gin files written before Experiment
            raise ConfigError(f"{e} (the workspace tag is bound as Experiment.tag)") from None
        raise
    where = " + ".join(gin_files) or "--gin_param"
    try:
        experiment = config.build(Experiment)
    except ConfigError as e:
        raise ConfigError(f"{where}: {_stage_hint(str(e))}") from None
    return dataclasses.replace(experiment, files=tuple(gin_files))


def _stage_hint(message: str) -> str:
    """Say which stage an unbound field belongs to: 'SFTTraining.batch_size is not bound' -> '... (the sft stage)'."""
    if message.startswith("Experiment.") and "is not bound" in message:
        name = message.split(".", 1)[1].split()[0]
        if name in STAGES:
            hint = f"bind it to a stage, e.g. @{STAGES[name].__name__}(), or to None to leave the stage out"
            return f"{message} ({hint})"
        return message
    for name, cls in STAGES.items():
        if message.startswith(f"{cls.__name__}.") and "is not bound" in message:
            return f"{message} (the {name} stage)"
    return message


# ---------------------------------------------------------------------------------------------------- printing
SECRET = re.compile(r"(^|_)(api_?key|key|token|secret|password)($|_)", re.IGNORECASE)  # values never printed


def describe(experiment: Experiment) -> str:
    """The resolved experiment as an indented tree: shared pieces first, then each stage's own settings."""
    lines = [f"Experiment ({experiment.where})"]
    for f in dataclasses.fields(experiment):
        if f.name != "files":
            lines += _lines(f.name, getattr(experiment, f.name), 1)
    return "\n".join(lines) + "\n"


def _lines(name: str, value: Any, depth: int) -> list[str]:
    pad = "  " * depth
    if SECRET.search(name) and isinstance(value, str) and value and not name.endswith("_env"):
        return [f"{pad}{name}: ***"]
    children = _children(value)
    if children is None:
        return [f"{pad}{name}: {_scalar(value)}"]
    head = f"{pad}{name}: {type(value).__name__}"
    if depth >= 5:
        return [head + " ..."]
    skip = getattr(type(value), "FROM_EXPERIMENT", ())  # shown once, at the top
    out = [head]
    for key, child in children:
        if key not in skip:
            out += _lines(key, child, depth + 1)
    return out


def _children(value: Any) -> list[tuple[str, Any]] | None:
    """A composite's (name, value) pairs, or None for a value printed on one line."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    if isinstance(value, dict) and any(_children(v) is not None for v in value.values()):
        return [(str(k), v) for k, v in value.items()]
    if isinstance(value, list | tuple) and any(_children(v) is not None for v in value):
        return [(f"[{i}]", v) for i, v in enumerate(value)]
    if hasattr(value, "__dict__") and not isinstance(value, type) and not inspect.isroutine(value):
        public = [(k, v) for k, v in vars(value).items() if not k.startswith("_") and not inspect.isroutine(v)]
        if isinstance(value, DataMixture):  # its sources and weights live behind properties
            public += [("sources", dict(value.sources)), ("weights_at_step_0", dict(value.weights_at(0)))]
        return public or None
    return None


def _scalar(value: Any) -> str:
    text = repr(value)
    if isinstance(value, str) and len(text) > 100:
        first = value.splitlines()[0] if value else ""
        return f"{first[:70]!r}... ({len(value):,} characters)"
    return text if len(text) <= 160 else text[:150] + f"... ({len(text):,} characters)"
