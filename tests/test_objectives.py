"""Golden tests: every registered objective against a closed-form numpy computation on fixed inputs."""

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nanocode.registry as registry
from nanocode.core import config
from nanocode.core.interfaces import PreferenceBatch, SequenceLogps

# Fixed per-sequence summed log-probs and completion lengths (4 pairs).
PC = np.array([-10.0, -20.0, -5.0, -30.0])  # policy, chosen
PR = np.array([-12.0, -18.0, -9.0, -31.0])  # policy, rejected
RC = np.array([-11.0, -19.0, -6.0, -29.0])  # reference, chosen
RR = np.array([-11.5, -19.5, -8.0, -30.0])  # reference, rejected
NC = np.array([5.0, 10.0, 4.0, 12.0])
NR = np.array([6.0, 8.0, 4.0, 15.0])


def batch(with_ref=True):
    ref = (lambda x: jnp.asarray(x)) if with_ref else (lambda x: None)
    return PreferenceBatch(
        chosen=SequenceLogps(jnp.asarray(PC), jnp.asarray(NC), ref(RC)),
        rejected=SequenceLogps(jnp.asarray(PR), jnp.asarray(NR), ref(RR)),
    )


def logsig(x):
    return -np.log1p(np.exp(-x))


def sig(x):
    return 1 / (1 + np.exp(-x))


def objective(name, **kw):
    return registry.get("preference_objective", name)(**kw)


DELTA = (PC - RC) - (PR - RR)


def test_dpo_applies_beta_once():
    loss, m = objective("dpo", beta=0.1)(batch())
    np.testing.assert_allclose(loss, -logsig(0.1 * DELTA), rtol=1e-6)
    np.testing.assert_allclose(m["rewards/margins"], 0.1 * DELTA, rtol=1e-6)
    np.testing.assert_allclose(m["rewards/accuracy"], (DELTA > 0).astype(float))
    # beta applied twice (MaxText's quirk) would give a different value: make sure the test can tell them apart.
    assert not np.allclose(loss, -logsig(0.1 * 0.1 * DELTA))


def test_cdpo_label_smoothing():
    loss, _ = objective("dpo", beta=0.2, label_smoothing=0.1)(batch())
    z = 0.2 * DELTA
    np.testing.assert_allclose(loss, -0.9 * logsig(z) - 0.1 * logsig(-z), rtol=1e-6)


def test_ipo_length_averaged_and_plain():
    loss, _ = objective("ipo", beta=0.5)(batch())
    dbar = (PC - RC) / NC - (PR - RR) / NR
    np.testing.assert_allclose(loss, (dbar - 1.0) ** 2, rtol=1e-5)
    loss, _ = objective("ipo", beta=0.5, length_normalize=False)(batch())
    np.testing.assert_allclose(loss, (DELTA - 1.0) ** 2, rtol=1e-5)


def test_hinge_and_robust():
    loss, _ = objective("hinge", beta=0.3)(batch())
    np.testing.assert_allclose(loss, np.maximum(0, 1 - 0.3 * DELTA), rtol=1e-6)
    loss, _ = objective("robust", beta=0.3, label_smoothing=0.2)(batch())
    z = 0.3 * DELTA
    np.testing.assert_allclose(loss, (-0.8 * logsig(z) + 0.2 * logsig(-z)) / 0.6, rtol=1e-5)


def test_simpo_orpo_sft_are_reference_free():
    for name in ("simpo", "orpo", "sft"):
        assert not registry.get("preference_objective", name).needs_reference
    lw, ll = PC / NC, PR / NR
    loss, _ = objective("simpo", beta=2.0, gamma=0.5)(batch(with_ref=False))
    np.testing.assert_allclose(loss, -logsig(2.0 * (lw - ll) - 0.5), rtol=1e-5)
    loss, _ = objective("orpo", beta=0.1)(batch(with_ref=False))
    log_odds = (lw - ll) - (np.log1p(-np.exp(lw)) - np.log1p(-np.exp(ll)))
    np.testing.assert_allclose(loss, -lw - 0.1 * logsig(log_odds), rtol=1e-5)
    loss, _ = objective("sft")(batch(with_ref=False))
    np.testing.assert_allclose(loss, -lw, rtol=1e-6)


def test_combined_is_weighted_sum():
    dpo, sft = objective("dpo", beta=0.1), objective("sft")
    loss, m = objective("combined", objectives=[dpo, sft], weights=[1.0, 0.5])(batch())
    np.testing.assert_allclose(loss, -logsig(0.1 * DELTA) + 0.5 * (-PC / NC), rtol=1e-5)
    assert "0_dpo/rewards/margins" in m and "1_sft/nll" in m
    assert registry.get("preference_objective", "combined")([dpo, sft]).needs_reference


def kto_batch(ref_mismatch):
    return PreferenceBatch(
        completions=SequenceLogps(jnp.asarray(PC), jnp.asarray(NC), jnp.asarray(RC)),
        desirable=jnp.asarray([True, False, True, False]),
        mismatched=SequenceLogps(jnp.asarray(PR), jnp.asarray(NR), jnp.asarray(ref_mismatch)),
    )


def test_kto_golden_with_clamped_baseline():
    kto = objective("kto", beta=0.1, desirable_weight=1.0, undesirable_weight=1.5)
    r = PC - RC
    # Mismatched log-ratios with a negative mean: the baseline clamps to 0.
    loss, m = kto(kto_batch(RR + 1.0))
    assert np.mean(PR - (RR + 1.0)) < 0
    z = 0.0
    want = np.where([True, False, True, False], 1 - sig(0.1 * (r - z)), 1.5 * (1 - sig(0.1 * (z - r))))
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    np.testing.assert_allclose(m["kl"], 0.0)
    # A positive mean is used as is.
    loss, m = kto(kto_batch(RR - 2.0))
    z = np.mean(PR - (RR - 2.0))
    assert z > 0
    want = np.where([True, False, True, False], 1 - sig(0.1 * (r - z)), 1.5 * (1 - sig(0.1 * (z - r))))
    np.testing.assert_allclose(loss, want, rtol=1e-6)


def test_kto_baseline_is_detached():
    kto = objective("kto", beta=0.1)

    def total(mismatched_policy):
        b = kto_batch(RR - 2.0)
        b.mismatched = SequenceLogps(mismatched_policy, b.mismatched.counts, b.mismatched.reference)
        return kto(b)[0].sum()

    grad = jax.grad(total)(jnp.asarray(PR))
    np.testing.assert_array_equal(grad, 0.0)


def test_validation_of_hyperparameters():
    with pytest.raises(ValueError, match="label_smoothing"):
        objective("robust", label_smoothing=0.5)
    with pytest.raises(ValueError, match="one weight per objective"):
        objective("combined", objectives=[objective("dpo")], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="needs reference"):
        objective("dpo")(batch(with_ref=False))


def test_plugin_objective_selected_by_name_from_gin(tmp_path, gin_clean):
    gin_file = tmp_path / "exp.gin"
    gin_file.write_text("import examples.ln_dpo\nOBJ = @ln_dpo()\nln_dpo.beta = 0.25\n")
    registry.load_builtins()
    config.parse([str(gin_file)])
    built = gin.query_parameter("%OBJ").scoped_configurable_fn()
    assert type(built).__name__ == "LengthNormalisedDPO" and built.beta == 0.25
    loss, _ = built(batch())
    dbar = (PC - RC) / NC - (PR - RR) / NR
    np.testing.assert_allclose(loss, -logsig(0.25 * dbar), rtol=1e-5)
