"""A data curriculum as a plugin: nanocode's web/code mix with a code weight that moves linearly from
`start_code_weight` at the first step to `end_code_weight` at the last. The run's length comes from the training
stage (`weights_at(step, horizon)`), so it is not repeated here; the loader shares out every batch's rows by the
weights of its step, and the training log records the realised mix (`mix_code`, `mix_web`).

Run it from the clone's root (examples/curriculum.gin: 40 steps of the debug experiment):

    PYTHONPATH=. nanocode pretrain --gin_file experiments/debug_cpu.gin --gin_file examples/curriculum.gin
"""

from nanocode.core.errors import ConfigError
from nanocode.core.interfaces import DataSource
from nanocode.core.registry import register
from nanocode.data.mixture import WebCodeMixture


@register("data_mixture", "linear_curriculum")
class LinearCurriculum(WebCodeMixture):
    """Web and code, the code weight moving linearly over the run from start_code_weight to end_code_weight."""

    def __init__(self, web: DataSource, code: DataSource, start_code_weight: float = 0.1, end_code_weight: float = 0.5):
        if not 0.0 <= end_code_weight <= 1.0:
            raise ConfigError(f"{type(self).__name__}: end_code_weight must be in [0, 1], got {end_code_weight}")
        super().__init__(web, code, code_weight=start_code_weight)  # checks start_code_weight
        self.start_code_weight, self.end_code_weight = start_code_weight, end_code_weight

    def weights_at(self, step: int, horizon: int | None = None) -> dict[str, float]:
        # horizon None: no run to be part of (the tokenizer's sample of the mix): the starting weights
        done = min(1.0, step / max(1, horizon - 1)) if horizon else 0.0
        code = self.start_code_weight + (self.end_code_weight - self.start_code_weight) * done
        return {"web": 1.0 - code, "code": code}
