"""What a bank serves is, by construction, what its held-out evaluation measured.

The bank's probes are `fit_probes` (the estimator every fold clones) saved through safetensors;
fitted on one fold's training rows and served through `ProbeBank.predict`, they must give that
fold's out-of-fold outputs exactly (float32 storage aside).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from probe_bank.bank import WEIGHTS, ProbeBank, read_manifest, save_bank
from probe_bank.fit import fit_probes
from probe_bank.heldout.folds import ProbeConfig, cross_fit, entity_folds, entity_mean
from tests.probe_bank.synthetic import planted

CFG = ProbeConfig(C=1.0, ridge_alpha=1.0, n_splits=4)


def _serve(tmp_path: Path, X: np.ndarray, y: np.ndarray, entity: np.ndarray) -> ProbeBank:
    """A bank saved from the training rows, loaded back the way `ProbeBank.load` reads it."""
    from safetensors.numpy import load_file

    from probe_bank.estimator import RecencyProbes

    fields = {
        "model_fingerprint": "0" * 64,
        "model_path": str(tmp_path),
        "run_path": str(tmp_path),
        "layer": 0,
        "position": "last",
        "hook": "blocks.0.hook_resid_post",
        "d_model": X.shape[1],
        "templates": ["Q: Who is {alias}?\nA:"],
        "max_tokens": 64,
        "seed": 0,
        "created_at": "2026-12-01T00:00:00+00:00",
        "corpus": {},
    }
    save_bank(tmp_path, fit_probes(X, y, entity, CFG), fields, {})
    probes = RecencyProbes.from_tensors(load_file(str(tmp_path / WEIGHTS)))
    return ProbeBank(tmp_path, read_manifest(tmp_path), probes)


def test_saved_bank_equals_the_fold_estimator(tmp_path: Path) -> None:
    data, _ = planted(0.7, per_class=16, seed=3)
    held = cross_fit(data, CFG)
    tr, te = entity_folds(data.y, data.entity, CFG)[0]
    bank = _serve(tmp_path, data.X[tr], data.y[tr], data.entity[tr])
    served = bank.predict(data.X[te])
    n = data.n_entities
    test_entities = np.unique(data.entity[te])
    probs = entity_mean(np.array([s.stage_probabilities for s in served]), data.entity[te], n)
    assert held.stage_probs is not None
    np.testing.assert_allclose(probs[test_entities], held.stage_probs[test_entities], atol=1e-5)
    rec = entity_mean(np.array([s.recency_score for s in served]), data.entity[te], n)
    staged = test_entities[data.entity_labels[test_entities] > 0]
    assert held.recency is not None
    np.testing.assert_allclose(rec[staged], held.recency[staged], atol=1e-4)
    late = np.array([s.p_late for s in served])
    logit = entity_mean(np.log(late / (1 - late)), data.entity[te], n)  # per row, then mean
    assert held.late_decision is not None
    np.testing.assert_allclose(logit[staged], held.late_decision[staged], atol=1e-3)
    # and the pair probes the report reads
    pair = bank.probes.pair_decision(data.X[te])
    assert held.pair_decision is not None
    one_six = [k for k, p in enumerate(held.pairs) if p == (1, 6)][0]
    in_pair = test_entities[np.isin(data.entity_labels[test_entities], (1, 6))]
    got = entity_mean(pair[:, one_six], data.entity[te], n)[in_pair]
    np.testing.assert_allclose(got, held.pair_decision[in_pair, one_six], atol=1e-4)


def test_a_different_pipeline_would_be_caught(tmp_path: Path) -> None:
    """The check above can fail: a bank fitted on other rows does not match the fold."""
    data, _ = planted(0.7, per_class=16, seed=3)
    held = cross_fit(data, CFG)
    tr, te = entity_folds(data.y, data.entity, CFG)[0]
    bank = _serve(tmp_path, data.X, data.y, data.entity)  # all rows: not the fold's estimator
    served = bank.predict(data.X[te])
    probs = entity_mean(
        np.array([s.stage_probabilities for s in served]), data.entity[te], data.n_entities
    )
    test_entities = np.unique(data.entity[te])
    assert held.stage_probs is not None
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(probs[test_entities], held.stage_probs[test_entities], atol=1e-5)
