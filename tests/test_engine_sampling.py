"""Sampling: greedy at temperature 0, exact top-k / top-p masks, seeded determinism, and the distribution drawn."""

import jax.numpy as jnp
import numpy as np
import pytest

from nanocode.models import sampling
from nanocode.models.sampling import NEG, SamplingParams, filter_logits, sample


def kept(logits, top_k, top_p):
    out = np.asarray(filter_logits(jnp.asarray(logits, jnp.float32), jnp.asarray(top_k), jnp.asarray(top_p)))
    return [sorted(np.flatnonzero(row > NEG).tolist()) for row in out]


def test_top_k_keeps_exactly_the_k_largest():
    logits = [[0.1, 3.0, -1.0, 2.0, 5.0, 0.0]]
    assert kept(logits, [1], [1.0]) == [[4]]
    assert kept(logits, [3], [1.0]) == [[1, 3, 4]]
    assert kept(logits, [0], [1.0]) == [[0, 1, 2, 3, 4, 5]]  # 0 = off
    assert kept(logits, [100], [1.0]) == [[0, 1, 2, 3, 4, 5]]


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = np.array([0.05, 0.4, 0.1, 0.3, 0.15])
    logits = np.log(probs)[None]
    # sorted: 0.4 (1), 0.3 (3), 0.15 (4), 0.1 (2), 0.05 (0)
    assert kept(logits, [0], [0.3]) == [[1]]
    assert kept(logits, [0], [0.4]) == [[1]]  # mass before the second token is 0.4: not < 0.4
    assert kept(logits, [0], [0.41]) == [[1, 3]]
    assert kept(logits, [0], [0.8]) == [[1, 3, 4]]
    assert kept(logits, [0], [1.0]) == [[0, 1, 2, 3, 4]]
    # top-k first, then top-p renormalised over the k kept: 0.4/0.7 = 0.57 < 0.6 -> both survive
    assert kept(logits, [2], [0.6]) == [[1, 3]]
    assert kept(logits, [2], [0.5]) == [[1]]


def test_rows_filter_independently():
    logits = np.log(np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]))
    assert kept(logits, [1, 0], [1.0, 0.6]) == [[0], [0, 1]]


def draw(logits, params: list[SamplingParams], positions):
    args = sampling.stack(params)
    return np.asarray(sample(jnp.asarray(logits, jnp.float32), positions=jnp.asarray(positions), **args))


def test_temperature_zero_is_argmax_and_seeds_are_deterministic():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 50)) * 2
    greedy = draw(logits, [SamplingParams(temperature=0.0, seed=s) for s in range(4)], [0, 1, 2, 3])
    assert greedy.tolist() == np.argmax(logits, -1).tolist()
    params = [SamplingParams(temperature=1.0, seed=7)] * 4
    a = draw(logits, params, [5, 5, 5, 5])
    assert (a == draw(logits, params, [5, 5, 5, 5])).all()  # same seed, same position: same token
    many = [draw(logits, [SamplingParams(1.0, seed=s)] * 4, [5] * 4) for s in range(20)]
    assert len({tuple(m) for m in many}) > 1  # other seeds draw other tokens
    # a row's draw does not depend on the other rows of the batch
    single = draw(logits[2:3], [SamplingParams(temperature=1.0, seed=7)], [5])
    assert single[0] == a[2]


def test_draws_follow_the_filtered_distribution():
    probs = np.array([0.5, 0.25, 0.15, 0.1])
    logits = np.tile(np.log(probs), (2000, 1))
    seeds = [SamplingParams(temperature=1.0, top_k=2, seed=s) for s in range(2000)]
    tokens = draw(logits, seeds, np.zeros(2000, np.int32))
    assert set(tokens.tolist()) == {0, 1}  # top-k 2: only the two most likely ever come out
    frac0 = np.mean(tokens == 0)
    assert abs(frac0 - 2 / 3) < 0.05  # renormalised 0.5 / 0.75
    hot = draw(logits, [SamplingParams(temperature=100.0, seed=s) for s in range(2000)], np.arange(2000))
    assert abs(np.mean(hot == 3) - 0.25) < 0.05  # a high temperature flattens towards uniform


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": -0.1}, {"temperature": float("nan")}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}, {"seed": -1}],
)
def test_invalid_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        SamplingParams(**kwargs)


def test_large_top_k_and_wide_nuclei_take_the_exact_slow_path():
    """Beyond the CANDIDATES most likely tokens the fast path cannot decide; the draws must still be exact."""
    v = 4 * sampling.CANDIDATES
    logits = np.tile(np.linspace(0.0, -0.5, v), (3000, 1))  # nearly flat, token 0 the most likely
    k = 2 * sampling.CANDIDATES
    got = draw(logits, [SamplingParams(1.0, top_k=k, seed=s) for s in range(3000)], np.zeros(3000, np.int32))
    assert got.max() < k and got.max() >= sampling.CANDIDATES  # top-k larger than the fast path's candidates
    probs = np.exp(logits[0]) / np.exp(logits[0]).sum()
    nucleus = int(np.searchsorted(np.cumsum(probs), 0.9)) + 1
    assert nucleus > sampling.CANDIDATES
    got = draw(logits, [SamplingParams(1.0, top_p=0.9, seed=s) for s in range(3000)], np.zeros(3000, np.int32))
    assert got.max() < nucleus and got.max() >= sampling.CANDIDATES
    # a peaked distribution's nucleus closes within the candidates: the same set, from the fast path
    peaked = np.tile(-0.3 * np.arange(v, dtype=np.float64), (3000, 1))
    got = draw(peaked, [SamplingParams(1.0, top_p=0.9, seed=s) for s in range(3000)], np.zeros(3000, np.int32))
    expected = kept(peaked[:1], [0], [0.9])[0]
    assert set(got.tolist()) <= set(expected) and len(set(got.tolist())) == len(expected)


def test_argmax_matches_numpy_first_maximum():
    x = np.array([[1.0, 3.0, 3.0, 0.0], [-1.0, -2.0, -1.0, -5.0]], np.float32)
    assert sampling.argmax(jnp.asarray(x)).tolist() == [1, 0]
