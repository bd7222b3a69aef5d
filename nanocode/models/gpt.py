"""The nanocode GPT (Flax NNX): a nanochat-style decoder-only transformer.

    token embedding -> norm -> n_layer x [x += attn(norm(x)); x += mlp(norm(x))] -> norm -> lm_head -> softcap

Untied embedding and head; parameter-free RMSNorm in fp32; RoPE (split halves) then QK-norm; ReLU^2 MLP; no biases;
grouped-query attention; logits soft-capped at 15 in fp32. Weights are fp32 masters cast to `compute_dtype` in the
forward pass. Every weight matrix is stored (in, out), so `x @ w` needs no transpose, and every parameter carries
logical axis names (nanocode.core.sharding) for the mesh rules. `GPTConfig.scan_layers` stacks the blocks' weights
and runs them as one scan (nanocode.models.scan): faster compiles for deep models, the same function.

Research forks replace one piece at a time: subclass MLP (or CausalSelfAttention), point a Block subclass's
`mlp_class` at it, point a GPT subclass's `block_class` at that block, and register the GPT subclass under a new
name. examples/swiglu.py does exactly that (docs/extending.md).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name
from jaxtyping import Array, Float, Int

from nanocode.core import sharding as S
from nanocode.core.errors import ConfigError
from nanocode.core.interfaces import LanguageModel
from nanocode.core.kinds import ATTENTION, MODELS
from nanocode.core.registry import register_config
from nanocode.models import attention as _attention  # noqa: F401  (registers the built-in attention implementations)
from nanocode.models import blocked_attention as _blocked  # noqa: F401  (registers the `blocked` one)
from nanocode.models import scan

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """The shape and numerics of a GPT. Frozen (hashable), so it can be static metadata under jit."""

    sequence_len: int
    vocab_size: int
    n_layer: int
    n_head: int
    n_kv_head: int
    n_embd: int
    mlp_ratio: int = 4
    softcap: float = 15.0
    rope_base: float = 10000.0
    compute_dtype: str = "float32"  # 'float32' | 'bfloat16'; weights stay fp32 either way
    attention: str = "xla"  # a name in the `attention` registry: 'xla', 'blocked' (CPU), 'cudnn', 'splash'
    # Run the blocks as one scan over stacked weights (nanocode.models.scan): compile time stops growing with depth.
    # Same arithmetic; another parameter layout (blocks/attn/c_q [n_layer, ...] instead of blocks/<i>/attn/c_q).
    scan_layers: bool = False

    def __post_init__(self):
        def bad(why: str):
            raise ConfigError(f"GPTConfig: {why}")

        for name in ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd", "mlp_ratio"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.n_embd % self.n_head:
            bad(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if self.n_head % self.n_kv_head:
            bad(f"n_head {self.n_head} is not a multiple of n_kv_head {self.n_kv_head}")
        if self.head_dim % 2:
            bad(f"head_dim {self.head_dim} (n_embd / n_head) must be even for RoPE")
        if not self.softcap > 0:
            bad(f"softcap must be positive, got {self.softcap!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            bad(f"compute_dtype {self.compute_dtype!r} is not one of {sorted(COMPUTE_DTYPES)}")
        if not isinstance(self.scan_layers, bool):
            bad(f"scan_layers must be True or False, got {self.scan_layers!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def dtype(self) -> jnp.dtype:
        return jnp.dtype(COMPUTE_DTYPES[self.compute_dtype])


register_config(GPTConfig)

# The nanocode model sizes (experiments/base/model/<name>.gin binds the same values). d3, the CPU debug model, keeps
# fp32 numerics; the others compute in bf16 (weights, norms, softmax and logits stay fp32).
CONFIGS: dict[str, GPTConfig] = {
    "d3": GPTConfig(sequence_len=256, vocab_size=8192, n_layer=3, n_head=2, n_kv_head=2, n_embd=192),
    "d6": GPTConfig(512, 32768, n_layer=6, n_head=3, n_kv_head=3, n_embd=384, compute_dtype="bfloat16"),
    "d12": GPTConfig(1024, 32768, n_layer=12, n_head=3, n_kv_head=3, n_embd=768, compute_dtype="bfloat16"),
    "d20": GPTConfig(2048, 32768, n_layer=20, n_head=5, n_kv_head=5, n_embd=1280, compute_dtype="bfloat16"),
    "d24": GPTConfig(4096, 32768, n_layer=24, n_head=8, n_kv_head=8, n_embd=2048, compute_dtype="bfloat16"),
}


# ---------------------------------------------------------------------------------------------------- building blocks
def rms_norm(x: Float[Array, "... d"], eps: float = 1e-6) -> Float[Array, "... d"]:
    """Parameter-free RMSNorm, computed in fp32 whatever the input dtype, returned in the input dtype."""
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)).astype(x.dtype)


def rope_tables(
    positions: Int[Array, "*p"], head_dim: int, base: float
) -> tuple[Float[Array, "*p d"], Float[Array, "*p d"]]:
    """fp32 rotary tables for absolute `positions` ([t] or [b, t]), already at the full head width:
    cos as [cos, cos] and sin with the rotation's sign folded in as [sin, -sin] (see apply_rope)."""
    inv_freq = base ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    return jnp.concatenate([cos, cos], axis=-1), jnp.concatenate([sin, -sin], axis=-1)


def apply_rope(x: Float[Array, "b t h d"], cos: Float[Array, "*p d"], sin: Float[Array, "*p d"]):
    """Rotate the two halves of each head (nanochat's convention, by -theta), in fp32:

        [x1, x2] -> [x1 cos + x2 sin, x2 cos - x1 sin] = x * [cos, cos] + [x2, x1] * [sin, -sin]

    Swapping the halves as a flip of a [2, d/2] view, with full-width tables, leaves XLA:CPU one elementwise loop
    (split + concatenate took 7% of the CPU train step; benchmarks/train_cpu_results.md).
    """
    x = x.astype(jnp.float32)
    swapped = jnp.flip(x.reshape(*x.shape[:-1], 2, x.shape[-1] // 2), axis=-2).reshape(x.shape)
    return x * cos[..., None, :] + swapped * sin[..., None, :]  # tables broadcast over heads


DENSE_OUTPUT = "dense_output"  # the checkpoint_name of every dense layer's output


def dense(x: Float[Array, "... i"], w: nnx.Param) -> Float[Array, "... o"]:
    """x @ w in x's dtype, with the fp32 master weight cast down and the products accumulated in fp32."""
    # Named, so a remat policy can keep it: the custom VJP hides the dot from dots_with_no_batch_dims_saveable.
    return checkpoint_name(matmul(x, w[...]), DENSE_OUTPUT)


@jax.custom_vjp
def matmul(x: Float[Array, "... i"], w: Float[Array, "i o"]) -> Float[Array, "... o"]:
    """x @ w.astype(x.dtype), accumulated in fp32, returned in x's dtype; w's gradient stays in w's dtype (fp32).

    The backward pass is written out so the weight gradient goes through `weight_gradient` (autodiff's version
    ran on XLA:CPU's slow path: 2x slower in bf16) and reaches an fp32 master weight without a bf16 round trip.
    """
    return jnp.einsum("...i,io->...o", x, w.astype(x.dtype), preferred_element_type=jnp.float32).astype(x.dtype)


def _matmul_fwd(x, w):
    return matmul(x, w), (x, w)


def _matmul_bwd(residuals, g):
    x, w = residuals
    dx = jnp.einsum("...o,io->...i", g, w.astype(g.dtype), preferred_element_type=jnp.float32)
    return dx.astype(x.dtype), weight_gradient(x, g).astype(w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def weight_gradient(x: Float[Array, "... i"], g: Float[Array, "... o"]) -> Float[Array, "i o"]:
    """sum over every leading (batch, time) position of outer(x, g), in fp32: a dense layer's weight gradient.

    Contracted over two or more leading dimensions, XLA:CPU transposes x once and runs its fast (YNNPACK) GEMM;
    a single contracted dimension (what autodiff emits, and [tokens, d] rows) goes to a generic contraction at
    ~130-170 GFLOP/s whatever the dtype. So rows are viewed as [n/2, 2] (keeping their sharding on the first part):
    2.0-2.5x faster in bf16 on the CPU train step's shapes, same or better in fp32 (benchmarks/train_cpu_results.md).
    Elsewhere the dimension layout is immaterial.
    """
    if x.ndim == 2 and x.shape[0] % 2 == 0:
        x, g = x.reshape(-1, 2, x.shape[-1]), g.reshape(-1, 2, g.shape[-1])
    lead = tuple(range(x.ndim - 1))
    return jax.lax.dot_general(x, g, ((lead, lead), ((), ())), preferred_element_type=jnp.float32)


def weight(rngs: nnx.Rngs, shape: tuple[int, ...], axes: S.LogicalAxes, init: str, scale: float = 1.0) -> nnx.Param:
    """An fp32 parameter with logical axis names: 'normal' N(0, scale^2), 'uniform' U(-scale, scale) or 'zeros'.

    Sharded on creation when a mesh and rules are active; otherwise the names are kept as metadata only, so the
    same model builds on a single device and the trainer can still derive shardings from them later.
    """
    key = rngs.params()
    if init == "normal":
        value = scale * jax.random.normal(key, shape, jnp.float32)
    elif init == "uniform":
        value = jax.random.uniform(key, shape, jnp.float32, -scale, scale)
    elif init == "zeros":
        value = jnp.zeros(shape, jnp.float32)
    else:
        raise ValueError(f"unknown init {init!r}")
    eager = nnx.using_eager_sharding() and S.sharding_active()
    # Metadata straight on the Param (nnx.with_partitioning would also record mesh=None, which nnx.as_abstract
    # then takes for a real mesh).
    return nnx.Param(value, out_sharding=axes, eager_sharding=eager)


# ---------------------------------------------------------------------------------------------------- modules
class CausalSelfAttention(nnx.Module):
    """Grouped-query causal self-attention with RoPE and QK-norm.

    Split in three so a KV cache can sit between the halves: `qkv` (project, rotate, normalise), an attention
    implementation from the registry (over a cache when decoding), then `out` (merge heads, project).
    """

    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
        self.config = config
        e, h, hkv, d = config.n_embd, config.n_head, config.n_kv_head, config.head_dim
        s = math.sqrt(3) / math.sqrt(e)  # uniform with std 1/sqrt(n_embd)
        self.c_q = weight(rngs, (e, h * d), (S.EMBED, S.HEADS), "uniform", s)
        self.c_k = weight(rngs, (e, hkv * d), (S.EMBED, S.KV_HEADS), "uniform", s)
        self.c_v = weight(rngs, (e, hkv * d), (S.EMBED, S.KV_HEADS), "uniform", s)
        self.c_proj = weight(rngs, (h * d, e), (S.HEADS, S.EMBED), "zeros")  # each block starts as the identity

    def qkv(self, x: Float[Array, "b t e"], cos: Array, sin: Array):
        """q [b,t,h,d], k and v [b,t,h_kv,d] in the compute dtype; q and k rotated, then RMS-normalised."""
        c = self.config
        b, t, _ = x.shape
        q = dense(x, self.c_q).reshape(b, t, c.n_head, c.head_dim)
        k = dense(x, self.c_k).reshape(b, t, c.n_kv_head, c.head_dim)
        v = dense(x, self.c_v).reshape(b, t, c.n_kv_head, c.head_dim)
        q = rms_norm(apply_rope(q, cos, sin)).astype(x.dtype)
        k = rms_norm(apply_rope(k, cos, sin)).astype(x.dtype)
        q = S.constrain(q, (S.BATCH, S.SEQ, S.HEADS, S.HEAD_DIM))
        k = S.constrain(k, (S.BATCH, S.SEQ, S.KV_HEADS, S.HEAD_DIM))
        v = S.constrain(v, (S.BATCH, S.SEQ, S.KV_HEADS, S.HEAD_DIM))
        return q, k, v

    def attend(self, q, k, v, *, q_offset=0):
        """The configured attention implementation, with the 1/sqrt(head_dim) query scale."""
        attend = ATTENTION.get(self.config.attention)
        return attend(q, k, v, scale=1.0 / math.sqrt(self.config.head_dim), q_offset=q_offset)

    def out(self, y: Float[Array, "b t h d"]) -> Float[Array, "b t e"]:
        b, t, h, d = y.shape
        return dense(y.reshape(b, t, h * d), self.c_proj)

    def __call__(self, x: Float[Array, "b t e"], cos: Array, sin: Array) -> Float[Array, "b t e"]:
        q, k, v = self.qkv(x, cos, sin)
        return self.out(self.attend(q, k, v))


class MLP(nnx.Module):
    """ReLU^2 MLP: n_embd -> mlp_ratio * n_embd -> n_embd."""

    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
        e, hidden = config.n_embd, config.mlp_ratio * config.n_embd
        self.c_fc = weight(rngs, (e, hidden), (S.EMBED, S.MLP), "uniform", math.sqrt(3) / math.sqrt(e))
        self.c_proj = weight(rngs, (hidden, e), (S.MLP, S.EMBED), "zeros")

    def __call__(self, x: Float[Array, "b t e"]) -> Float[Array, "b t e"]:
        h = S.constrain(dense(x, self.c_fc), (S.BATCH, S.SEQ, S.MLP))
        return dense(jnp.square(jax.nn.relu(h)), self.c_proj)


class Block(nnx.Module):
    """Pre-norm residual block. Subclass and set `attention_class` / `mlp_class` to swap one part."""

    attention_class: type[nnx.Module] = CausalSelfAttention
    mlp_class: type[nnx.Module] = MLP

    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
        self.attn = self.attention_class(config, rngs=rngs)
        self.mlp = self.mlp_class(config, rngs=rngs)

    def __call__(self, x: Float[Array, "b t e"], cos: Array, sin: Array) -> Float[Array, "b t e"]:
        x = x + self.attn(rms_norm(x), cos, sin)
        return x + self.mlp(rms_norm(x))


@MODELS.register("gpt")
class GPT(LanguageModel):
    """nanochat-style GPT: RoPE, QK-norm, ReLU^2, untied head, logit softcap, Muon-friendly (in, out) matrices."""

    Config = GPTConfig
    block_class: type[Block] = Block

    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
        if config.attention not in ATTENTION:
            raise ConfigError(f"GPTConfig.attention: {ATTENTION._unknown_message(config.attention)}")
        self.config = config
        v, e = config.vocab_size, config.n_embd
        self.wte = weight(rngs, (v, e), (S.VOCAB, S.EMBED), "normal", 1.0)
        if config.scan_layers:  # one Block whose weights carry a leading 'layers' axis
            self.blocks = scan.stacked_blocks(lambda r: self.block_class(config, rngs=r), config.n_layer, rngs)
        else:
            self.blocks = nnx.List([self.block_class(config, rngs=rngs) for _ in range(config.n_layer)])
        self.lm_head = weight(rngs, (e, v), (S.EMBED, S.VOCAB), "normal", 0.001)

    def embed(self, tokens: Int[Array, "b t"]) -> Float[Array, "b t e"]:
        """Token embeddings in the compute dtype, normalised (the residual stream's start)."""
        x = jnp.take(self.wte[...], tokens, axis=0).astype(self.config.dtype)
        return rms_norm(S.constrain(x, (S.BATCH, S.SEQ, S.EMBED)))

    def rope(self, positions: Int[Array, "*p"]) -> tuple[Array, Array]:
        return rope_tables(positions, self.config.head_dim, self.config.rope_base)

    def hidden(self, tokens: Int[Array, "b t"]) -> Float[Array, "b t e"]:
        """The final normalised hidden states (compute dtype): what `head` turns into logits."""
        x = self.embed(tokens)
        # Computed now, as constants of the compiled step: traced, XLA fused cos/sin into every RoPE loop and
        # recomputed them per element of q and k (3x the RoPE time of the CPU train step).
        with jax.ensure_compile_time_eval():
            cos, sin = self.rope(jnp.arange(tokens.shape[1]))

        def step(block: Block, x: Array) -> Array:
            return S.constrain(block(x, cos, sin), (S.BATCH, S.SEQ, S.EMBED))

        if self.config.scan_layers:
            x = scan.run_blocks(step, self.blocks, x)
        else:
            for block in self.blocks:
                x = step(block, x)
        return rms_norm(x)

    def head(self, h: Float[Array, "b t e"]) -> Float[Array, "b t v"]:
        """Soft-capped fp32 logits from normalised hidden states."""
        logits = jnp.einsum("bte,ev->btv", h, self.lm_head[...].astype(h.dtype), preferred_element_type=jnp.float32)
        logits = S.constrain(logits, (S.BATCH, S.SEQ, S.VOCAB))
        cap = self.config.softcap
        return cap * jnp.tanh(logits / cap)

    def __call__(self, tokens: Int[Array, "b t"]) -> Float[Array, "b t v"]:
        return self.head(self.hidden(tokens))

    # -- accounting (works on abstract models from nnx.eval_shape too: only shapes are read) --------------------
    def param_counts(self) -> dict[str, int]:
        def count(module) -> int:
            return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))

        return {
            "embedding": math.prod(self.wte.shape),
            "blocks": count(self.blocks),
            "head": math.prod(self.lm_head.shape),
            "total": count(self),
        }

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6 per non-embedding weight, plus 12 * L * D * T for the attention scores."""
        c, n = self.config, self.param_counts()
        return 6 * (n["total"] - n["embedding"]) + 12 * c.n_layer * c.n_head * c.head_dim * c.sequence_len
