"""Linear CKA and FedMVP's CKA aggregation weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from fedmm.core.errors import DataError
from fedmm.core.maths import cka_aggregation_weights, cka_matrix, linear_cka


def _reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook formula, without any of the implementation's rescaling or Gram tricks."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def test_self_similarity_is_one():
    x = np.random.default_rng(0).normal(size=(20, 7))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(torch.from_numpy(x).float(), torch.from_numpy(x)) == pytest.approx(1.0, abs=1e-6)


def test_hand_computed_one_dimensional():
    # centred x = [-1, 0, 1], centred y = [-1, 1, 0]: (xᵀy)² / (‖x‖²‖y‖²) = 1 / (2·2) = 0.25 (= Pearson r²).
    x = np.array([[1.0], [2.0], [3.0]])
    y = np.array([[1.0], [3.0], [2.0]])
    assert linear_cka(x, y) == pytest.approx(0.25, abs=1e-12)


def test_hand_computed_two_features():
    # X = [[1,0],[0,1],[-1,0],[0,-1]] (already centred), Y = first column of X.
    # YᵀX = [2, 0] → ‖·‖² = 4; XᵀX = 2·I → ‖·‖_F = 2√2; YᵀY = [[2]] → 2; CKA = 4 / (2√2·2) = 1/√2.
    x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    assert linear_cka(x, x[:, :1]) == pytest.approx(1 / np.sqrt(2), abs=1e-12)


def test_invariances():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 6))
    y = x @ rng.normal(size=(6, 4)) + 0.5 * rng.normal(size=(30, 4))
    base = linear_cka(x, y)
    q = ortho_group.rvs(6, random_state=2)
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(123.0 * x, 1e-6 * y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x + 5.0, y - 3.0) == pytest.approx(base, abs=1e-12)  # column centring
    assert linear_cka(x, y) == pytest.approx(_reference_cka(x, y), abs=1e-12)


def test_symmetric_bounded_and_both_code_paths():
    rng = np.random.default_rng(3)
    for n, d1, d2 in [(50, 3, 4), (5, 40, 60), (8, 8, 8)]:  # feature-space and Gram-space paths
        x, y = rng.normal(size=(n, d1)), rng.normal(size=(n, d2))
        c = linear_cka(x, y)
        assert 0.0 <= c <= 1.0
        assert c == pytest.approx(linear_cka(y, x), abs=1e-12)
        assert c == pytest.approx(_reference_cka(x, y), abs=1e-10)


def test_extreme_scales_are_stable():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(10, 3))
    assert linear_cka(1e200 * x, 1e-200 * x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(1e200 * x, x, normalize_rows=True) == pytest.approx(1.0, abs=1e-12)


def test_normalize_rows():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(12, 4))
    scales = rng.uniform(0.1, 10.0, size=(12, 1))
    # Row-wise rescaling changes plain CKA but not the row-normalised variant.
    assert linear_cka(x, scales * x, normalize_rows=True) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, scales * x) < 1.0


def test_degenerate_and_bad_inputs():
    x = np.random.default_rng(6).normal(size=(5, 3))
    assert linear_cka(x, np.ones((5, 2))) == 0.0  # constant representation
    with pytest.raises(DataError, match="same examples"):
        linear_cka(x, np.zeros((4, 3)))
    with pytest.raises(DataError, match="2-D"):
        linear_cka(x[:, 0], x)
    with pytest.raises(DataError, match="NaN"):
        linear_cka(np.full((3, 2), np.nan), np.zeros((3, 2)))


def test_cka_matrix_and_weights():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(16, 5))
    reps = [a, a @ ortho_group.rvs(5, random_state=8), rng.normal(size=(16, 3))]
    s = cka_matrix(reps)
    assert s.shape == (3, 3)
    np.testing.assert_array_equal(s, s.T)
    np.testing.assert_array_equal(np.diag(s), np.ones(3))
    assert s[0, 1] == pytest.approx(1.0, abs=1e-12)
    assert s[0, 2] == pytest.approx(linear_cka(a, reps[2]), abs=1e-15)
    w = cka_aggregation_weights(reps)
    assert w.sum() == pytest.approx(1.0, abs=1e-15)
    row = s.sum(axis=1)
    np.testing.assert_allclose(w, row / row.sum())
    assert w[0] == pytest.approx(w[1]) and w[2] < w[0]

    same = cka_aggregation_weights([a, a.copy(), torch.from_numpy(a)])
    np.testing.assert_allclose(same, np.full(3, 1 / 3), atol=1e-15)
    with pytest.raises(DataError, match="same probe examples"):
        cka_matrix([a, a[:10]])


def test_cka_weights_scale_with_sample_counts_and_an_empty_client_gets_none():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(12, 4))
    # Identical representations: the weights are the sample shares.
    np.testing.assert_allclose(cka_aggregation_weights([a, a, a], sample_counts=[1, 3, 0]), [0.25, 0.75, 0.0])
    reps = [a, rng.normal(size=(12, 4)), rng.normal(size=(12, 2))]
    degree = cka_matrix(reps).sum(axis=1)
    w = cka_aggregation_weights(reps, sample_counts=[5, 20, 0])
    np.testing.assert_allclose(w, degree * [5, 20, 0] / (degree * [5, 20, 0]).sum())
    assert w[2] == 0.0
    with pytest.raises(DataError, match="sample_counts has 2 entries for 3 representations"):
        cka_aggregation_weights(reps, sample_counts=[1, 2])
    with pytest.raises(DataError, match="no client has a sample"):
        cka_aggregation_weights(reps, sample_counts=[0, 0, 0])
    with pytest.raises(DataError, match="must be finite and >= 0"):
        cka_aggregation_weights(reps, sample_counts=[1, -2, 3])
