"""Vectorised metrics checked against slow, obvious per-user references (sklearn)."""

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from choirflow.evaluate import metrics

pytestmark = pytest.mark.unit


def _reference(labels, scores, users):
    aucs, weights = [], []
    for u in np.unique(users):
        m = users == u
        if labels[m].min() != labels[m].max():
            aucs.append(roc_auc_score(labels[m], scores[m]))
            weights.append(m.sum())
    return np.average(aucs, weights=weights), float(np.mean(aucs))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_per_user_reference(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    users = rng.integers(0, 200, n).astype(str)
    scores = np.round(rng.random(n), 2)  # ties on purpose
    labels = (rng.random(n) < 0.2 + 0.5 * scores).astype(int)
    weighted, averaged = _reference(labels, scores, users)
    assert metrics.gauc_impression_weighted(labels, scores, users) == pytest.approx(weighted)
    assert metrics.user_averaged_auc(labels, scores, users) == pytest.approx(averaged)
    assert metrics.auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert metrics.logloss(labels, scores) == pytest.approx(
        log_loss(labels, np.clip(scores, 1e-7, 1 - 1e-7))
    )


def test_single_class_users_are_skipped_and_weights_differ():
    labels = np.array([1, 0, 1, 0, 0, 0, 1, 1, 0, 1])
    scores = np.array([0.9, 0.1, 0.2, 0.8, 0.5, 0.4, 0.7, 0.6, 0.3, 0.2])
    users = np.array(["a", "a", "b", "b", "b", "b", "b", "c", "c", "d"])
    # a: perfect (n=2); b: 0 of its pairs (n=5) -> weighted differs from plain mean
    per_user = metrics.per_user_auc(labels, scores, users).set_index("user")
    assert set(per_user.index) == {"a", "b", "c"}
    assert per_user.loc["a", "auc"] == 1.0
    assert metrics.gauc_impression_weighted(labels, scores, users) != pytest.approx(
        metrics.user_averaged_auc(labels, scores, users)
    )
