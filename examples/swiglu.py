"""A research fork as a plugin: the GPT with a SwiGLU MLP, registered as `gpt_swiglu`.

Only the MLP changes: subclass it, give a Block subclass the new `mlp_class`, give a GPT subclass the new
`block_class`, register that under a new name. The weights are made with `weight(rngs, shape, logical axes, init,
scale)`, whose logical axes (`nanocode.core.sharding`: EMBED, MLP, ...) the mesh's rules map onto devices, and
applied with `dense(x, w)` (the model's compute dtype). Select it with `Experiment.model = 'gpt_swiglu'` after
importing this module (an `import examples.swiglu` line in the gin file, or --plugin=examples.swiglu).
"""

import math

import jax

from nanocode.core import sharding as S
from nanocode.core.registry import register
from nanocode.models.gpt import GPT, MLP, Block, dense, weight


class SwiGLU(MLP):
    """silu(x W_gate) * (x W_fc) -> W_proj, with a hidden width of 2/3 * mlp_ratio * n_embd (iso-parameter)."""

    def __init__(self, config, *, rngs):  # replaces MLP's weights rather than adding to them
        e = config.n_embd
        hidden = 2 * config.mlp_ratio * e // 3
        s = math.sqrt(3) / math.sqrt(e)
        self.c_gate = weight(rngs, (e, hidden), (S.EMBED, S.MLP), "uniform", s)
        self.c_fc = weight(rngs, (e, hidden), (S.EMBED, S.MLP), "uniform", s)
        self.c_proj = weight(rngs, (hidden, e), (S.MLP, S.EMBED), "zeros")

    def __call__(self, x):
        return dense(jax.nn.silu(dense(x, self.c_gate)) * dense(x, self.c_fc), self.c_proj)


class SwiGLUBlock(Block):
    mlp_class = SwiGLU


@register("model", "gpt_swiglu")
class GPTSwiGLU(GPT):
    """The nanocode GPT with SwiGLU MLPs (a research fork: examples/swiglu.py)."""

    block_class = SwiGLUBlock
