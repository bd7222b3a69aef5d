"""Parameter groups, Newton–Schulz, Muon's momentum, the d_model LR scaling, optimisation, sharding and gin files.

The toy model below is shaped like nanocode's GPT (wte, blocks[i].attn.c_q/c_k/c_v/c_proj, blocks[i].mlp.c_fc/c_proj,
lm_head) plus one 1-D gain, so these tests do not depend on nanocode.models.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nanocode.core import config
from nanocode.core.errors import ConfigError
from nanocode.core.kinds import OPTIMIZERS
from nanocode.optim import groups
from nanocode.optim.adamw import AdamW
from nanocode.optim.muon import MuonAdamW, newton_schulz, scale_by_muon, shape_scale
from nanocode.optim.schedules import momentum_warmup


# ---------------------------------------------------------------------------------------------------- toy GPT
class Attn(nnx.Module):
    def __init__(self, d, rngs):
        self.c_q = nnx.Linear(d, d, use_bias=False, rngs=rngs)
        self.c_k = nnx.Linear(d, d, use_bias=False, rngs=rngs)
        self.c_v = nnx.Linear(d, d, use_bias=False, rngs=rngs)
        self.c_proj = nnx.Linear(d, d, use_bias=False, rngs=rngs)

    def __call__(self, x):  # a per-token gated mix: enough to give every projection a gradient
        return self.c_proj(jax.nn.sigmoid(self.c_q(x) * self.c_k(x)) * self.c_v(x))


class MLP(nnx.Module):
    def __init__(self, d, rngs):
        self.c_fc = nnx.Linear(d, 4 * d, use_bias=False, rngs=rngs)
        self.c_proj = nnx.Linear(4 * d, d, use_bias=False, rngs=rngs)

    def __call__(self, x):
        return self.c_proj(jax.nn.relu(self.c_fc(x)) ** 2)


class Block(nnx.Module):
    def __init__(self, d, rngs):
        self.attn = Attn(d, rngs)
        self.mlp = MLP(d, rngs)

    def __call__(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


class ToyGPT(nnx.Module):
    def __init__(self, vocab=64, d=32, n_layer=2, *, rngs):
        self.wte = nnx.Embed(vocab, d, rngs=rngs)
        self.blocks = nnx.List([Block(d, rngs) for _ in range(n_layer)])
        self.gain = nnx.Param(jnp.ones(d))  # 1-D: the 'other' group
        self.lm_head = nnx.Linear(d, vocab, use_bias=False, rngs=rngs)

    def __call__(self, tokens):
        x = self.wte(tokens)
        for block in self.blocks:
            x = block(x)
        x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-6) * self.gain
        return self.lm_head(x)


EXPECTED_LABELS = {
    "wte/embedding": "embedding",
    "lm_head/kernel": "head",
    "gain": "other",
    **{f"blocks/{i}/attn/{n}/kernel": "muon" for i in range(2) for n in ("c_q", "c_k", "c_v", "c_proj")},
    **{f"blocks/{i}/mlp/{n}/kernel": "muon" for i in range(2) for n in ("c_fc", "c_proj")},
}


def toy(d=32, seed=0):
    return ToyGPT(d=d, rngs=nnx.Rngs(seed))


def labels_by_path(params):
    return {path: label for path, label, _ in groups.labelled_leaves(params)}


# ---------------------------------------------------------------------------------------------------- groups
def test_labels_on_nnx_state_pure_dict_and_abstract():
    model = toy()
    state = nnx.state(model, nnx.Param)
    assert labels_by_path(state) == EXPECTED_LABELS
    assert labels_by_path(nnx.to_pure_dict(state)) == EXPECTED_LABELS
    abstract = nnx.state(nnx.eval_shape(lambda: toy()), nnx.Param)
    assert labels_by_path(abstract) == EXPECTED_LABELS
    assert labels_by_path(jax.eval_shape(lambda: nnx.to_pure_dict(state))) == EXPECTED_LABELS


def test_label_tree_is_a_prefix_optax_accepts():
    state = nnx.state(toy(), nnx.Param)
    labels = groups.label_params(state)
    assert sorted(set(jax.tree.leaves(labels))) == ["embedding", "head", "muon", "other"]
    masked = optax.masked(optax.sgd(1.0), jax.tree.map(lambda label: label == "muon", labels))
    masked.init(state)  # raises if the labels do not line up with the params


def test_custom_group_names():
    params = {"tok_emb": jnp.zeros((10, 4)), "out": jnp.zeros((4, 10)), "w": jnp.zeros((4, 4)), "b": jnp.zeros(4)}
    labels = groups.label_params(params, embedding=("tok_emb",), head=("out",))
    assert labels == {"tok_emb": "embedding", "out": "head", "w": "muon", "b": "other"}


# ---------------------------------------------------------------------------------------------------- Newton–Schulz
def matrix_with_spectrum(key, rows, cols, low=0.05, high=1.0):
    """U diag(s) V^T with singular values spread over [low, high] (random Gaussian square matrices have a few tiny
    singular values that no 5-step iteration can lift, which says nothing about the iteration)."""
    k1, k2, k3 = jax.random.split(key, 3)
    k = min(rows, cols)
    u, _ = jnp.linalg.qr(jax.random.normal(k1, (rows, k)))
    v, _ = jnp.linalg.qr(jax.random.normal(k2, (cols, k)))
    s = jax.random.uniform(k3, (k,), minval=low, maxval=high)
    return (u * s) @ v.T


@pytest.mark.parametrize("shape", [(64, 64), (128, 32), (32, 128)])
def test_newton_schulz_is_approximately_orthogonal(shape):
    for seed in range(2):
        g = matrix_with_spectrum(jax.random.key(seed), *shape)
        out = newton_schulz(g)
        assert out.shape == g.shape and out.dtype == g.dtype
        sv = np.linalg.svd(np.asarray(out), compute_uv=False)
        assert sv.min() > 0.6 and sv.max() < 1.25, (sv.min(), sv.max())  # quintic lands in ~[0.65, 1.2]
        # ... and it is the orthogonal polar factor U V^T, not just any orthogonal matrix
        u, _, vt = np.linalg.svd(np.asarray(g), full_matrices=False)
        polar = u @ vt
        cosine = np.sum(polar * np.asarray(out)) / (np.linalg.norm(polar) * np.linalg.norm(out))
        assert cosine > 0.95


def test_newton_schulz_gaussian_tall_and_wide():
    for shape in [(128, 32), (32, 128)]:
        g = jax.random.normal(jax.random.key(3), shape)
        sv = np.linalg.svd(np.asarray(newton_schulz(g)), compute_uv=False)
        assert 0.6 < sv.min() and sv.max() < 1.25


def test_newton_schulz_ignores_scale_and_works_on_stacks():
    g = jax.random.normal(jax.random.key(0), (3, 16, 48))
    np.testing.assert_allclose(newton_schulz(g), newton_schulz(1000.0 * g), atol=2e-2)
    np.testing.assert_allclose(newton_schulz(g)[1], newton_schulz(g[1]), atol=1e-6)


def test_shape_scale():
    assert shape_scale((32, 128)) == 2.0  # (in, out) expanding 4x, like c_fc: sqrt(4)
    assert shape_scale((128, 32)) == 1.0  # contracting, like the MLP's c_proj
    assert shape_scale((64, 64)) == 1.0


# ---------------------------------------------------------------------------------------------------- Muon momentum
def test_muon_momentum_follows_the_warmup_schedule():
    tx = scale_by_muon(momentum=momentum_warmup(0.85, 0.95, 300))
    g1 = {"w": jax.random.normal(jax.random.key(1), (8, 16))}
    g2 = {"w": jax.random.normal(jax.random.key(2), (8, 16))}
    state = tx.init(g1)
    _, state = tx.update(g1, state)
    np.testing.assert_allclose(state.momentum["w"], (1 - 0.85) * g1["w"], rtol=1e-6)  # step 0: m = 0.85
    buf1 = state.momentum["w"]
    m1 = 0.85 + 0.10 / 300  # step 1
    _, state = tx.update(g2, state)
    np.testing.assert_allclose(state.momentum["w"], buf1 + (1 - m1) * (g2["w"] - buf1), rtol=1e-5)
    assert int(state.count) == 2


def test_muon_update_is_nesterov_newton_schulz_times_shape_scale():
    tx = scale_by_muon(momentum=0.9, nesterov=True)
    g = {"tall": jax.random.normal(jax.random.key(0), (64, 16)), "wide": jax.random.normal(jax.random.key(1), (16, 64))}
    state = tx.init(g)
    _, state = tx.update(g, state)
    g2 = jax.tree.map(lambda x: -0.5 * x + 0.1, g)
    updates, _ = tx.update(g2, state)
    for name in g:
        buf = state.momentum[name] + 0.1 * (g2[name] - state.momentum[name])
        expected = newton_schulz(g2[name] + 0.9 * (buf - g2[name])) * shape_scale(g[name].shape)
        np.testing.assert_allclose(updates[name], expected, atol=1e-5)
    sv = np.linalg.svd(np.asarray(updates["wide"]), compute_uv=False)
    assert 1.2 < sv.min() and sv.max() < 2.5  # the (in, out) = (16, 64) expanding matrix's step is doubled


def test_muon_rejects_vectors():
    with pytest.raises(ValueError, match="bias"):
        scale_by_muon().init({"bias": jnp.zeros(4)})


# ---------------------------------------------------------------------------------------------------- muon_adamw
def test_registered_and_mirrored_into_gin():
    assert OPTIMIZERS.get("muon_adamw") is MuonAdamW
    assert OPTIMIZERS.get("adamw") is AdamW


@pytest.mark.parametrize("d", [32, 128])
def test_embedding_and_head_lrs_scale_with_d_model(d):
    state = nnx.state(toy(d=d), nnx.Param)
    opt = MuonAdamW()
    assert opt.d_model(state) == d
    lrs = opt.group_lrs(state)
    scale = (d / 768) ** -0.5
    assert lrs == pytest.approx({"muon": 0.02, "embedding": 0.3 * scale, "head": 0.004 * scale, "other": 0.004})


def test_first_step_moves_each_group_by_its_lr():
    """Adam's first bias-corrected step is lr * sign(g): the applied update shows each group's effective LR."""
    d = 32
    model = toy(d=d)
    params = nnx.state(model, nnx.Param)
    opt = MuonAdamW(warmup_ratio=0.1)  # step 0 multiplier = 1 / 10
    tx = opt.build(params, total_steps=100)
    grads = jax.tree.map(lambda x: jnp.ones_like(x), params)
    updates, _ = tx.update(grads, tx.init(params), params)
    u = nnx.to_pure_dict(updates)
    scale, mult = (d / 768) ** -0.5, 0.1
    np.testing.assert_allclose(u["wte"]["embedding"], -0.3 * scale * mult, rtol=1e-5)
    np.testing.assert_allclose(u["lm_head"]["kernel"], -0.004 * scale * mult, rtol=1e-5)
    np.testing.assert_allclose(u["gain"], -0.004 * mult, rtol=1e-5)
    # Muon: a rank-one gradient orthogonalises to one singular value in the quintic's ~[0.65, 1.2] band, times
    # lr * mult * shape scale
    c_fc = np.asarray(u["blocks"][0]["mlp"]["c_fc"]["kernel"])  # (d, 4d): expands 4x, scale 2
    top = np.linalg.svd(c_fc, compute_uv=False)[0]
    assert 0.6 * (0.02 * mult * 2.0) < top < 1.25 * (0.02 * mult * 2.0)
    c_proj = np.asarray(u["blocks"][0]["mlp"]["c_proj"]["kernel"])  # (4d, d): contracts, scale 1
    top = np.linalg.svd(c_proj, compute_uv=False)[0]
    assert 0.6 * (0.02 * mult) < top < 1.25 * (0.02 * mult)


def test_missing_embedding_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="wte") as e:
        MuonAdamW().build({"w": jnp.zeros((4, 4))}, 10)
    assert "\n" not in str(e.value)


def test_bad_fields_raise_config_error():
    with pytest.raises(ConfigError):
        MuonAdamW(warmdown_ratio=2.0)
    with pytest.raises(ConfigError):
        MuonAdamW(ns_dtype="bfloat17")
    with pytest.raises(ConfigError):
        AdamW(b2=1.0)


# ---------------------------------------------------------------------------------------------------- optimisation
def permutation_task(vocab=64, n=256, seed=0):
    """Learn token -> perm[token]: a tiny problem every group (embedding, blocks, gain, head) takes part in."""
    perm = jax.random.permutation(jax.random.key(seed), vocab)
    tokens = jax.random.randint(jax.random.key(seed + 1), (n,), 0, vocab)
    return tokens, perm[tokens]


def train(factory, steps=40):
    model = toy()
    graphdef, params = nnx.split(model, nnx.Param)
    tx = factory.build(params, total_steps=steps)
    opt_state = tx.init(params)
    tokens, targets = permutation_task()

    @jax.jit
    def step(params, opt_state):
        def loss_fn(params):
            logits = nnx.merge(graphdef, params)(tokens)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    return losses


@pytest.mark.parametrize("factory", [MuonAdamW(), AdamW(lr=1e-2)], ids=["muon_adamw", "adamw"])
def test_a_few_steps_reduce_the_loss(factory):
    losses = train(factory)
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.25 * losses[0], losses


def test_works_with_nnx_optimizer():
    """nnx.Optimizer inits on a State of Variables and updates on pure arrays: labels must fit both."""
    model = toy()
    tokens, targets = permutation_task()
    optimizer = nnx.Optimizer(model, MuonAdamW().build(nnx.state(model, nnx.Param), 10), wrt=nnx.Param)

    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(tokens), targets).mean()

    first = float(loss_fn(model))
    for _ in range(3):
        optimizer.update(model, nnx.grad(loss_fn)(model))
    assert float(loss_fn(model)) < first


# ---------------------------------------------------------------------------------------------------- sharding
def mesh_4x2():
    devices = np.array(jax.devices()[:8]).reshape(4, 2)
    return Mesh(devices, ("a", "b"), axis_types=(AxisType.Auto, AxisType.Auto))


@pytest.mark.parametrize("shape,spec", [((64, 128), P("a", "b")), ((256, 64), P("a", None)), ((64, 64), P(None, "b"))])
def test_newton_schulz_sharded_matches_unsharded(shape, spec):
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (simulated) devices")
    mesh = mesh_4x2()
    g = jax.random.normal(jax.random.key(0), shape)
    sharded = jax.device_put(g, NamedSharding(mesh, spec))
    out = jax.jit(newton_schulz)(sharded)
    assert out.sharding.spec == spec  # the result stays distributed like its input
    np.testing.assert_allclose(np.asarray(out), np.asarray(jax.jit(newton_schulz)(g)), atol=3e-2)


def test_muon_adamw_step_on_sharded_params_matches_unsharded():
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (simulated) devices")
    mesh = mesh_4x2()
    params = nnx.to_pure_dict(nnx.state(toy(), nnx.Param))
    grads = jax.tree.map(lambda x: jax.random.normal(jax.random.key(x.size), x.shape), params)

    def spec(x):
        return P("a", "b") if x.ndim == 2 else P("a")

    shard = jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, spec(x))), params)
    shard_grads = jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, spec(x))), grads)
    tx = MuonAdamW().build(params, total_steps=10)

    def step(params, grads, state):
        updates, state = tx.update(grads, state, params)
        return updates, state

    state = tx.init(shard)  # zeros_like keeps each parameter's sharding in the optimizer state
    muon_state = state.inner_states["muon"].inner_state[0]
    kernel = muon_state.momentum["blocks"][0]["attn"]["c_q"]["kernel"]
    assert kernel.sharding.spec == P("a", "b")

    sharded, _ = jax.jit(step)(shard, shard_grads, state)
    plain, _ = jax.jit(step)(params, grads, tx.init(params))
    assert sharded["blocks"][1]["mlp"]["c_fc"]["kernel"].sharding.spec == P("a", "b")
    labels = groups.label_params(params)
    for (path, a), b, label in zip(
        jax.tree_util.tree_leaves_with_path(sharded), jax.tree.leaves(plain), jax.tree.leaves(labels)
    ):
        # Muon's bf16 Newton–Schulz reduces in another order when sharded: allow ~3% of its unit step
        # (lr 0.02 x shape scale <= 2); the AdamW groups run in f32 and must agree closely.
        atol = 0.03 * 0.02 * 2 if label == "muon" else 1e-6
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, err_msg=groups.path_str(path))


# ---------------------------------------------------------------------------------------------------- gin
@pytest.mark.parametrize("name,cls", [("muon_adamw", MuonAdamW), ("adamw", AdamW)])
def test_gin_optimizer_files_restate_the_defaults(gin_clean, name, cls):
    config.parse([f"experiments/base/optim/{name}.gin"], [f"{name}.lr = 0.5"])
    built = config.build(cls)
    assert type(built) is cls
    assert built == cls(lr=0.5)  # the file restates the class defaults; the override wins
