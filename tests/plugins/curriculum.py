"""A data curriculum as a plugin: nanocode's web/code mix with a code weight that moves linearly from
`start_code_weight` to `end_code_weight` over `steps` batches, then stays. Select it in gin with
`import tests.plugins.curriculum` (or --plugin tests.plugins.curriculum) and `Experiment.data = @linear_curriculum()`."""

from nanocode.core.interfaces import DataSource
from nanocode.core.registry import register
from nanocode.data.mixture import WebCodeMixture


@register("data_mixture", "linear_curriculum")
class LinearCurriculum(WebCodeMixture):
    """Web and code, the code weight ramping linearly with the training step."""

    def __init__(
        self,
        web: DataSource,
        code: DataSource,
        start_code_weight: float = 0.0,
        end_code_weight: float = 0.5,
        steps: int = 1000,
    ):
        super().__init__(web, code, code_weight=start_code_weight)
        self.start_code_weight, self.end_code_weight, self.steps = start_code_weight, end_code_weight, steps

    def weights_at(self, step: int) -> dict[str, float]:
        w = self.start_code_weight + (self.end_code_weight - self.start_code_weight) * min(1.0, step / self.steps)
        return {"web": 1.0 - w, "code": w}
