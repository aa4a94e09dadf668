"""Temperature scaling and ECE."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from probe_bank.calibration import TemperatureScaledClassifier, fit_temperature
from probe_bank.heldout.stats import expected_calibration_error, interval, spearman


def test_ece_known_case():
    probs = np.tile([0.9, 0.1], (10, 1))
    labels = np.array([0] * 5 + [1] * 5)  # 90% confident, 50% right
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)
    assert expected_calibration_error(np.tile([0.5, 0.5], (4, 1)), [0, 1, 0, 1]) == 0.0


def test_temperature_undoes_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 3))
    y = np.array([rng.choice(3, p=np.exp(z) / np.exp(z).sum()) for z in true_logits])
    assert fit_temperature(3 * true_logits, y) == pytest.approx(3.0, rel=0.15)


def test_scaled_classifier_is_an_estimator_and_calibrates():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 40))
    y = (X[:, 0] + rng.normal(size=300) > 0).astype(int)
    groups = np.arange(300) // 2
    raw = LogisticRegression(C=100.0, max_iter=2000)
    est = TemperatureScaledClassifier(raw, n_splits=3).fit(X, y, groups=groups)
    assert est.temperature_ > 1  # weak regularisation in 40 dims over-fits: soften
    Xt = rng.normal(size=(2000, 40))
    yt = (Xt[:, 0] + rng.normal(size=2000) > 0).astype(int)
    before = expected_calibration_error(raw.fit(X, y).predict_proba(Xt), yt)
    after = expected_calibration_error(est.predict_proba(Xt), yt)
    assert after < before
    np.testing.assert_allclose(est.predict_proba(Xt).sum(1), 1)
    assert set(est.predict(Xt)) <= {0, 1}


def test_interval_reports_value_bounds_and_count():
    labels = np.repeat([0, 1], 50)
    values = np.r_[np.ones(40), np.zeros(10), np.ones(25), np.zeros(25)]
    out = interval(lambda idx: values[idx].mean(), labels, 100, n_boot=500, seed=0)
    assert out["value"] == pytest.approx(0.65) and out["n_entities"] == 100
    lo, hi = out["ci95"]
    assert 0.5 < lo < 0.65 < hi < 0.8
    assert spearman(np.arange(5), np.arange(5) ** 2) == pytest.approx(1.0)
    assert np.isnan(spearman(np.ones(3), np.arange(3)))
