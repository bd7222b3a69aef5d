"""Parameter counts and training FLOPs per token of a model config, from abstract shapes (nothing is allocated).

    >>> param_counts(CONFIGS["d24"])["total"]
    1342177280

The model is built under `nnx.eval_shape`, so a 1.3B-parameter config costs milliseconds and no memory, and the
numbers come from the model's own methods: a fork with a different MLP is counted as it really is.
"""

from __future__ import annotations

from flax import nnx

from nanocode.core.interfaces import LanguageModel
from nanocode.core.kinds import MODELS
from nanocode.models.blocked_attention import executed_fraction
from nanocode.models.gpt import GPT


def abstract_model(config, model: str | type[LanguageModel] = GPT) -> LanguageModel:
    """The model built with shapes only (its parameters are jax.ShapeDtypeStruct). `model`: a class or a name."""
    cls = MODELS.get(model) if isinstance(model, str) else model
    return nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))


def param_counts(config, model: str | type[LanguageModel] = GPT) -> dict[str, int]:
    """{'embedding', 'blocks', 'head', 'total'} parameter counts."""
    return abstract_model(config, model).param_counts()


def flops_per_token(config, model: str | type[LanguageModel] = GPT) -> int:
    """Training FLOPs per token (forward + backward): 6 * (N - embedding) + 12 * L * D * T. The attention term counts
    the full [t, t] score square whatever the implementation computes (nanochat's rule: MFU compares across them)."""
    return abstract_model(config, model).flops_per_token()


def executed_flops_per_token(config, model: str | type[LanguageModel] = GPT) -> float:
    """The training FLOPs per token the config's attention implementation really executes: `flops_per_token` with its
    attention term scaled by the share of the square computed ('blocked' skips the masked triangle and recomputes the
    scores once; the others are counted whole)."""
    t = config.sequence_len
    attention = 12 * config.n_layer * config.n_head * config.head_dim * t
    fraction = executed_fraction(t) if config.attention == "blocked" else 1.0
    return flops_per_token(config, model) - attention * (1.0 - fraction)
