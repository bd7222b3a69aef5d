"""The component kinds of nanocode, each a registry with the interface its entries implement.

Forks add a kind with `registry.new_kind(...)`; plugins add entries with `registry.register(kind, name)`.
"""

from nanocode.core import interfaces as I
from nanocode.core.registry import new_kind

TOKENIZERS = new_kind("tokenizer", I.Tokenizer, "text <-> token ids (trained BPE, run with tiktoken)")
DATA_SOURCES = new_kind("data_source", I.DataSource, "documents in parquet shards, downloaded or built locally")
DATA_MIXTURES = new_kind("data_mixture", I.DataMixture, "sources and their (step-dependent) sampling weights")
SFT_DATASETS = new_kind("sft_dataset", None, "conversation datasets for agentic SFT")
PREFERENCE_DATASETS = new_kind("preference_dataset", None, "paired or unpaired preference datasets")
MODELS = new_kind("model", I.LanguageModel, "causal language models (Flax NNX)")
ATTENTION = new_kind("attention", None, "attention implementations (XLA, cuDNN flash, Pallas splash)")
OPTIMIZERS = new_kind("optimizer", I.OptimizerFactory, "optax optimizers with their parameter groups and schedules")
MESHES = new_kind("mesh", I.MeshFactory, "device meshes with logical-axis rules")
CONSTITUTIONS = new_kind("constitution", I.Constitution, "written constitutions parsed into principles")
PREFERENCE_OBJECTIVES = new_kind("preference_objective", I.PreferenceObjective, "preference-optimisation losses")
RL_OBJECTIVES = new_kind("rl_objective", I.RLObjective, "policy-gradient losses over sampled agentic episodes")
TEACHERS = new_kind("teacher", None, "rollout generators for synthetic data (LLM endpoints, scripted)")
TOOLS = new_kind("tool", None, "agent tools (Read, Edit, Grep, Bash, ...)")
TASK_GENERATORS = new_kind("task_generator", None, "generators of agentic tasks over real small repositories")
METRICS_WRITERS = new_kind(
    "metrics_writer", I.MetricsWriter, "training metrics destinations (JSONL, TensorBoard, W&B, trackio)"
)
EVAL_SUITES = new_kind("eval_suite", None, "evaluation suites (core, humaneval, agentic)")
