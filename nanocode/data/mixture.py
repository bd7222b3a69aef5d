"""Pretraining data mixtures: named sources and the weights they are drawn with.

The loader draws one parquet row group (~1024 documents) at a time; each draw picks a source with probability
proportional to `weights_at(step)`, where `step` is the batch being built. A curriculum is a subclass (or a plugin)
that overrides `weights_at`; nothing else has to change.
"""

from __future__ import annotations

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

    def weights_at(self, step: int) -> Mapping[str, float]:
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
