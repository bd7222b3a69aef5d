"""Pretraining data mixtures: named sources and the weights they are drawn with.

The loader (nanocode.data.packed_stream) shares out the rows of every batch among the sources in proportion to
`weights_at(step, horizon)`, each source's share rounded up or down at random, where `step` is the batch being built
and `horizon` the run's number of steps (the pretraining stage's num_steps; None where there is no run, e.g. the
tokenizer's sample). A curriculum is a subclass
(or a plugin: examples/curriculum.py) that overrides `weights_at`; nothing else has to change. The training log
records the mix each batch realised (`mix_<source>`: its share of the batch's tokens).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping

from nanocode.core.errors import ConfigError
from nanocode.core.interfaces import DataMixture, DataSource
from nanocode.core.kinds import DATA_MIXTURES


def check_weights(weights: Mapping[str, float], sources: Mapping[str, DataSource], owner: str) -> dict[str, float]:
    """Weights as floats, one per known source, finite and >= 0, some positive; else a one-line ConfigError."""
    unknown = sorted(set(weights) - set(sources))
    if unknown:
        raise ConfigError(f"{owner}: weights for unknown sources {unknown} (sources: {', '.join(sources)})")
    out = {}
    for name, w in weights.items():
        try:
            w = float(w)
        except (TypeError, ValueError):
            raise ConfigError(f"{owner}: weight of {name!r} is not a number: {w!r}") from None
        if not math.isfinite(w) or w < 0:
            raise ConfigError(f"{owner}: weight of {name!r} must be finite and >= 0, got {w}")
        out[name] = w
    if not any(out.values()):
        raise ConfigError(f"{owner}: every weight is zero ({out}); give some source a positive weight")
    return out


def check_signature(mixture: DataMixture) -> None:
    """A one-line ConfigError for a mixture whose `weights_at` cannot take (step, horizon) (one written before the
    horizon was passed), rather than a TypeError from the loader's thread."""
    try:
        inspect.signature(mixture.weights_at).bind(0, None)
    except TypeError:
        raise ConfigError(
            f"{type(mixture).__name__}.weights_at{inspect.signature(mixture.weights_at)}: it must take "
            "(step, horizon=None), horizon being the run's number of steps"
        ) from None
    except ValueError:  # no signature to inspect (a builtin): let the call itself decide
        pass


def realised_mix(source_tokens: Mapping[str, int]) -> dict[str, float]:
    """Each source's share of a batch's tokens, as `mix_<source>` (the fields the training log records)."""
    total = sum(source_tokens.values())
    return {f"mix_{name}": n / total for name, n in source_tokens.items()} if total else {}


@DATA_MIXTURES.register("weighted")
class WeightedMixture(DataMixture):
    """Sources drawn with fixed relative weights (e.g. `{"web": 4, "code": 1}`)."""

    def __init__(self, sources: Mapping[str, DataSource], weights: Mapping[str, float]):
        if not sources:
            raise ConfigError(f"{type(self).__name__}: no sources")
        for name, source in sources.items():
            if not isinstance(source, DataSource):
                raise ConfigError(
                    f"{type(self).__name__}: source {name!r} is a {type(source).__name__}, not a DataSource"
                )
        self._sources = dict(sources)
        self._weights = check_weights(weights, self._sources, type(self).__name__)

    @property
    def sources(self) -> Mapping[str, DataSource]:
        return self._sources

    def weights_at(self, step: int, horizon: int | None = None) -> Mapping[str, float]:
        """The same weights at every step; curricula override this."""
        return dict(self._weights)

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}={self._weights.get(n, 0.0):g}:{s!r}" for n, s in self._sources.items())
        return f"{type(self).__name__}({parts})"


@DATA_MIXTURES.register("web_code")
class WebCodeMixture(WeightedMixture):
    """nanocode's mix: prose from the web and code, the code drawn with probability `code_weight` (0.2 = 4:1)."""

    def __init__(self, web: DataSource, code: DataSource, code_weight: float = 0.2):
        if not 0.0 <= code_weight <= 1.0:
            raise ConfigError(f"{type(self).__name__}: code_weight must be in [0, 1], got {code_weight}")
        self.code_weight = code_weight
        super().__init__({"web": web, "code": code}, {"web": 1.0 - code_weight, "code": code_weight})
