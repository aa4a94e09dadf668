"""Grouped folds: no entity on both sides, and memorising an entity cannot score."""

from __future__ import annotations

import numpy as np
import pytest

from probe_bank.errors import UserError
from probe_bank.heldout.folds import ProbeConfig, ProbeData, entity_folds, task_correct


def _data(per_class=20, prompts=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(7), per_class)
    entity = np.repeat(np.arange(len(labels)), prompts)
    own = rng.normal(size=(len(labels), 32))  # each entity its own random point, no class signal
    X = own[entity] + 0.01 * rng.normal(size=(len(entity), 32))
    return ProbeData(X, labels[entity], entity, labels)


def test_folds_never_share_an_entity():
    data = _data()
    folds = entity_folds(data.y, data.entity, ProbeConfig())
    assert len(folds) == 5
    seen = np.zeros(len(data.y), int)
    for tr, te in folds:
        assert not set(data.entity[tr]) & set(data.entity[te])
        assert set(data.y[te]) == set(range(7))  # stratified: every class in every test fold
        seen[te] += 1
    assert (seen == 1).all()


def test_folds_depend_on_labels_and_entities_only():
    """Controls and probes see the same splits: the features play no part."""
    data = _data()
    a = entity_folds(data.y, data.entity, ProbeConfig(seed=3))
    b = entity_folds(data.y, data.entity, ProbeConfig(seed=3))
    assert all((x[1] == y[1]).all() for x, y in zip(a, b, strict=True))


def test_memorising_entities_does_not_leak():
    """Near-duplicate prompts of one entity would give ~1.0 with prompt-level folds."""
    data = _data(per_class=30)
    correct = task_correct(data, "stage1_vs_stage6", ProbeConfig(C=10.0))
    acc = np.nanmean(correct)
    assert 0.3 < acc < 0.7


def test_too_few_entities_is_a_user_error():
    data = _data(per_class=1)
    with pytest.raises(UserError):
        entity_folds(data.y, data.entity, ProbeConfig())


def test_an_entity_subset_keeps_each_kept_entity_whole_and_renumbers_it():
    from probe_bank.build import per_class_sample

    data = _data(per_class=10, prompts=3)
    data = ProbeData(data.X, data.y, data.entity, data.entity_labels, [f"e{i}" for i in range(70)])
    keep = per_class_sample(data.entity_labels, 4, seed=1)
    assert len(keep) == 28 and np.bincount(data.entity_labels[keep]).tolist() == [4] * 7
    assert (per_class_sample(data.entity_labels, 4, seed=1) == keep).all()
    assert not (per_class_sample(data.entity_labels, 4, seed=2) == keep).all()
    sub = data.entities(keep)
    assert sub.n_entities == 28 and sub.ids == [f"e{i}" for i in keep]
    assert np.bincount(sub.entity).tolist() == [3] * 28  # every prompt of a kept entity
    for new, old in enumerate(keep):  # rows of entity `old` are now entity `new`, features kept
        assert (sub.X[sub.entity == new] == data.X[data.entity == old]).all()
        assert (sub.y[sub.entity == new] == data.entity_labels[old]).all()
    assert (per_class_sample(data.entity_labels, 50, seed=0) == np.arange(70)).all()
