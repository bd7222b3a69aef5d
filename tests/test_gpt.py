"""The GPT: shapes and dtypes, initialisation, causality, GQA, parameter layout, counts, gin sizes and sharding."""

import dataclasses
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import nanocode.registry as registry
from nanocode.core import config as gin_config
from nanocode.core import sharding
from nanocode.core.errors import ConfigError
from nanocode.models import counting
from nanocode.models.gpt import CONFIGS, GPT, GPTConfig, matmul, rms_norm, weight_gradient

TINY = GPTConfig(sequence_len=16, vocab_size=128, n_layer=2, n_head=4, n_kv_head=4, n_embd=32)


def tokens(cfg=TINY, batch=2, seed=1):
    return jax.random.randint(jax.random.key(seed), (batch, cfg.sequence_len), 0, cfg.vocab_size)


def randomize_projections(model, seed=0):
    """Give the zero-initialised output projections random values, so every block really mixes positions."""
    keys = iter(jax.random.split(jax.random.key(seed), 2 * len(model.blocks)))
    for block in model.blocks:
        for p in (block.attn.c_proj, block.mlp.c_proj):
            p[...] = 0.2 * jax.random.normal(next(keys), p.shape)
    return model


def cross_entropy(logits, targets):
    return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, targets[..., None], -1)[..., 0])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_forward_shapes_and_dtypes(dtype):
    cfg = dataclasses.replace(TINY, compute_dtype=dtype)
    model = randomize_projections(GPT(cfg, rngs=nnx.Rngs(0)))
    x = tokens(cfg)
    logits = model(x)
    assert logits.shape == (2, cfg.sequence_len, cfg.vocab_size) and logits.dtype == jnp.float32
    assert model.hidden(x).dtype == jnp.dtype(dtype)
    assert bool(jnp.all(jnp.isfinite(logits))) and float(jnp.max(jnp.abs(logits))) <= cfg.softcap
    # fp32 master weights whatever the compute dtype
    assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.float32)}
    if dtype == "bfloat16":  # same weights, lower precision: close to the fp32 model, not identical
        ref = randomize_projections(GPT(TINY, rngs=nnx.Rngs(0)))(x)
        assert 0 < float(jnp.max(jnp.abs(logits - ref))) < 0.1


def test_parameter_paths_layout_and_logical_axes():
    model = GPT(dataclasses.replace(TINY, n_kv_head=2), rngs=nnx.Rngs(0))
    e, hd, v = 32, 8, 128
    expected = {
        ("wte",): ((v, e), ("vocab", "embed")),
        ("lm_head",): ((e, v), ("embed", "vocab")),
    }
    for i in range(2):
        expected |= {
            ("blocks", i, "attn", "c_q"): ((e, 4 * hd), ("embed", "heads")),
            ("blocks", i, "attn", "c_k"): ((e, 2 * hd), ("embed", "kv_heads")),
            ("blocks", i, "attn", "c_v"): ((e, 2 * hd), ("embed", "kv_heads")),
            ("blocks", i, "attn", "c_proj"): ((4 * hd, e), ("heads", "embed")),
            ("blocks", i, "mlp", "c_fc"): ((e, 4 * e), ("embed", "mlp")),
            ("blocks", i, "mlp", "c_proj"): ((4 * e, e), ("mlp", "embed")),
        }
    params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    assert set(params) == set(expected)
    for path, (shape, axes) in expected.items():
        assert params[path].shape == shape, path
        assert params[path].get_metadata()["out_sharding"] == axes, path
    assert model.blocks[1].attn.c_q is params[("blocks", 1, "attn", "c_q")]  # attribute access matches the path


def test_initialisation():
    cfg = GPTConfig(sequence_len=8, vocab_size=4096, n_layer=1, n_head=4, n_kv_head=4, n_embd=256)
    model = GPT(cfg, rngs=nnx.Rngs(0))
    wte, head = np.asarray(model.wte[...]), np.asarray(model.lm_head[...])
    assert abs(wte.std() - 1.0) < 0.01 and abs(wte.mean()) < 0.01
    assert abs(head.std() - 0.001) < 1e-5
    bound = math.sqrt(3) / math.sqrt(cfg.n_embd)
    block = model.blocks[0]
    for p in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
        w = np.asarray(p[...])
        assert w.min() >= -bound and w.max() <= bound and abs(w.std() - 1 / math.sqrt(cfg.n_embd)) < 2e-3
    assert not np.any(np.asarray(block.attn.c_proj[...])) and not np.any(np.asarray(block.mlp.c_proj[...]))
    # same seed, same weights; another seed, other weights
    assert np.array_equal(GPT(cfg, rngs=nnx.Rngs(0)).wte[...], wte)
    assert not np.array_equal(GPT(cfg, rngs=nnx.Rngs(1)).wte[...], wte)


def test_zero_init_blocks_pass_the_embedding_through():
    cfg = dataclasses.replace(TINY, vocab_size=1024)
    model = GPT(cfg, rngs=nnx.Rngs(0))
    x = tokens(cfg)
    # zero output projections: every block adds exactly 0, so the residual stream is the normed embedding
    np.testing.assert_allclose(model.hidden(x), rms_norm(rms_norm(model.wte[...][x])), rtol=1e-6, atol=1e-6)
    loss = cross_entropy(model(x[:, :-1]), x[:, 1:])
    assert abs(float(loss) - math.log(cfg.vocab_size)) < 0.01  # lm_head at 0.001: near-uniform predictions


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_causal_future_tokens_do_not_change_past_logits(n_kv_head):
    cfg = dataclasses.replace(TINY, n_kv_head=n_kv_head)
    model = randomize_projections(GPT(cfg, rngs=nnx.Rngs(0)))
    x = tokens(cfg, batch=1)
    j = 9
    y = x.at[0, j].set((x[0, j] + 1) % cfg.vocab_size)
    a, b = model(x), model(y)
    np.testing.assert_array_equal(a[:, :j], b[:, :j])
    assert float(jnp.max(jnp.abs(a[:, j:] - b[:, j:]))) > 1e-4  # the change is seen from position j on


def test_gqa_has_fewer_kv_parameters_and_trains():
    mha = GPT(TINY, rngs=nnx.Rngs(0))
    gqa = GPT(dataclasses.replace(TINY, n_kv_head=1), rngs=nnx.Rngs(0))
    e, d = TINY.n_embd, TINY.head_dim
    assert mha.param_counts()["blocks"] - gqa.param_counts()["blocks"] == TINY.n_layer * 2 * e * (4 - 1) * d
    x = tokens()
    grads = nnx.grad(lambda m: cross_entropy(m(x[:, :-1]), x[:, 1:]))(randomize_projections(gqa))
    assert float(jnp.sum(jnp.abs(grads.blocks[0].attn.c_k[...]))) > 0


def test_d24_counts_and_flops_from_abstract_shapes():
    abstract = counting.abstract_model(CONFIGS["d24"])
    leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
    assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)  # nothing was allocated
    assert counting.param_counts(CONFIGS["d24"]) == {
        "embedding": 67_108_864,
        "blocks": 1_207_959_552,
        "head": 67_108_864,
        "total": 1_342_177_280,
    }
    assert counting.flops_per_token(CONFIGS["d24"]) == 10_066_329_600
    assert counting.param_counts(CONFIGS["d12"])["total"] == 135_266_304
    assert counting.param_counts(CONFIGS["d20"], "gpt")["total"] == 477_102_080


def test_executed_flops_of_blocked_attention_by_hand():
    """The debug model at 512 tokens: 8 query blocks of 64 compute 9/16 of the [t, t] square, 7 matmuls over it
    instead of the 6 that MFU counts; the other implementations are counted as they run."""
    debug = GPTConfig(
        sequence_len=512, vocab_size=8192, n_layer=3, n_head=2, n_kv_head=2, n_embd=192, attention="blocked"
    )
    attention = 12 * 3 * 192 * 512
    assert counting.flops_per_token(debug) == 6 * (4_472_832 - 1_572_864) + attention == 20_938_752
    assert counting.executed_flops_per_token(debug) == 20_938_752 - attention * (1 - 9 / 16 * 7 / 6)
    xla = dataclasses.replace(debug, attention="xla")
    assert counting.executed_flops_per_token(xla) == counting.flops_per_token(xla)


def test_counts_of_a_real_model_match_the_abstract_ones():
    model = GPT(TINY, rngs=nnx.Rngs(0))
    assert model.param_counts() == counting.param_counts(TINY)
    n = model.param_counts()
    assert n["total"] == n["embedding"] + n["blocks"] + n["head"]
    assert model.flops_per_token() == 6 * (n["total"] - n["embedding"]) + 12 * 2 * 32 * 16


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_gin_model_files_match_configs(name, gin_clean):
    gin_config.parse([f"experiments/base/model/{name}.gin"])
    assert gin_config.build(GPTConfig) == CONFIGS[name]


def test_bad_configs_fail_in_one_line():
    with pytest.raises(ConfigError, match="n_embd 100 is not divisible by n_head 3"):
        GPTConfig(sequence_len=8, vocab_size=8, n_layer=1, n_head=3, n_kv_head=3, n_embd=100)
    with pytest.raises(ConfigError, match="not a multiple of n_kv_head"):
        dataclasses.replace(TINY, n_kv_head=3)
    with pytest.raises(ConfigError, match="compute_dtype"):
        dataclasses.replace(TINY, compute_dtype="float16")
    with pytest.raises(ConfigError, match="unknown attention 'splsh'; did you mean 'splash'") as e:
        GPT(dataclasses.replace(TINY, attention="splsh"), rngs=nnx.Rngs(0))
    assert "\n" not in str(e.value)


def test_registered_by_name():
    assert registry.get("model", "gpt") is GPT
    assert {"xla", "cudnn", "splash"} <= set(registry.names("attention"))


def test_constrain_is_the_identity_without_a_mesh():
    x = jnp.ones((2, 3, 4))
    assert sharding.constrain(x, (sharding.BATCH, sharding.SEQ, sharding.EMBED)) is x
    with pytest.raises(ValueError, match="rank 3"):
        sharding.constrain(x, (sharding.BATCH, sharding.SEQ))


RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("seq", None),
    ("head_dim", None),
    ("layers", None),
)


def test_sharded_model_matches_single_device():
    from jax.sharding import AxisType, PartitionSpec

    cfg = dataclasses.replace(TINY, n_kv_head=2)
    x = tokens(cfg, batch=4)
    ref = randomize_projections(GPT(cfg, rngs=nnx.Rngs(0)))(x)
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
        model = randomize_projections(GPT(cfg, rngs=nnx.Rngs(0)))
        assert model.wte[...].sharding.spec == PartitionSpec("tensor", "fsdp")
        assert model.blocks[0].mlp.c_fc[...].sharding.spec == PartitionSpec("fsdp", "tensor")
        graphdef, state = nnx.split(model)
        logits = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))(state, x)
        assert logits.sharding.spec == PartitionSpec(("data", "fsdp"), None, "tensor")
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("lead", [(3, 5), (6,), (7,)])
def test_matmul_gradients_match_autodiff(dtype, lead):
    """The dense layers' hand-written backward pass gives autodiff's gradients (fp32 to the fp32 master weight)."""
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (*lead, 8), jnp.float32).astype(dtype)
    w = jax.random.normal(kw, (8, 12), jnp.float32)
    g = jax.random.normal(kg, (*lead, 12), jnp.float32).astype(dtype)

    def reference(x, w):  # autodiff through the cast, the fp32-accumulated einsum and the cast back
        y = jnp.einsum("...i,io->...o", x.astype(jnp.float32), w, preferred_element_type=jnp.float32)
        return y.astype(x.dtype)

    y, pullback = jax.vjp(matmul, x, w)
    y_ref, pullback_ref = jax.vjp(reference, x, w)
    (dx, dw), (dx_ref, dw_ref) = pullback(g), pullback_ref(g)
    assert y.dtype == dx.dtype == jnp.dtype(dtype) and dw.dtype == jnp.float32
    tol = 1e-5 if dtype == "float32" else 3e-2
    chex.assert_trees_all_close((y, dx, dw), (y_ref, dx_ref, dw_ref), atol=tol * 8, rtol=tol)
    flat_x, flat_g = x.reshape(-1, 8).astype(jnp.float32), g.reshape(-1, 12).astype(jnp.float32)
    chex.assert_trees_all_close(weight_gradient(x, g), flat_x.T @ flat_g, atol=tol * 8, rtol=tol)
