"""The LR multiplier (warmup, flat, warm-down to final_lr_frac) and Muon's momentum warmup."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nanocode.core.errors import ConfigError
from nanocode.optim.schedules import lr_multiplier, momentum_warmup


def values(schedule, steps):
    return [float(schedule(s)) for s in steps]


def test_default_is_flat_then_linear_warmdown_to_zero():
    lrm = lr_multiplier(100)  # warmup 0, warm-down over the last 40 steps, final 0
    assert values(lrm, [0, 30, 59, 60]) == pytest.approx([1.0, 1.0, 1.0, 1.0])
    assert float(lrm(61)) == pytest.approx(39 / 40)  # the first warm-down step already drops
    assert float(lrm(80)) == pytest.approx(0.5)
    assert float(lrm(99)) == pytest.approx(1 / 40)  # the last update still moves the weights
    assert float(lrm(100)) == pytest.approx(0.0)  # one past the last update: final_lr_frac
    assert float(lrm(1000)) == pytest.approx(0.0)


def test_warmup_and_nonzero_final():
    lrm = lr_multiplier(200, warmup_ratio=0.05, warmdown_ratio=0.5, final_lr_frac=0.1)
    assert float(lrm(0)) == pytest.approx(1 / 10)  # (step + 1) / warmup_steps
    assert float(lrm(4)) == pytest.approx(5 / 10)
    assert float(lrm(9)) == pytest.approx(1.0)  # warmup end
    assert values(lrm, [10, 50, 100]) == pytest.approx([1.0, 1.0, 1.0])  # flat up to the start of warm-down
    assert float(lrm(150)) == pytest.approx(0.1 + 0.9 * 0.5)
    assert float(lrm(200)) == pytest.approx(0.1)


def test_multiplier_is_monotone_and_jits():
    lrm = lr_multiplier(50, warmup_ratio=0.2, warmdown_ratio=0.4, final_lr_frac=0.05)
    steps = jnp.arange(51, dtype=jnp.int32)
    got = np.asarray(jax.jit(jax.vmap(lrm))(steps))
    assert np.all(np.diff(got[:10]) > 0)  # warmup rises
    assert np.all(got[10:31] == 1.0)  # flat
    assert np.all(np.diff(got[30:]) < 0)  # warm-down falls
    assert got[-1] == pytest.approx(0.05)
    np.testing.assert_allclose(got, values(lrm, range(51)), rtol=1e-6)


def test_warmdown_over_all_steps_is_linear_decay():
    lrm = lr_multiplier(10, warmdown_ratio=1.0)  # SFT-style: 1 - step / num_steps
    assert values(lrm, range(11)) == pytest.approx([1 - s / 10 for s in range(11)])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(warmup_ratio=-0.1),
        dict(warmdown_ratio=1.5),
        dict(warmup_ratio=0.6, warmdown_ratio=0.6),
        dict(final_lr_frac=-1),
    ],
)
def test_bad_ratios_raise_one_line(kwargs):
    with pytest.raises(ConfigError) as e:
        lr_multiplier(100, **kwargs)
    assert "\n" not in str(e.value)


def test_bad_total_steps():
    with pytest.raises(ConfigError):
        lr_multiplier(0)


def test_momentum_warmup():
    m = momentum_warmup(0.85, 0.95, 300)
    assert values(m, [0, 150, 300, 301, 10_000]) == pytest.approx([0.85, 0.90, 0.95, 0.95, 0.95])
    assert float(momentum_warmup(0.85, 0.95, 0)(0)) == pytest.approx(0.95)
