"""Class prototypes, their merging and quality, against hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmm.core.errors import DataError
from fedmm.core.maths import class_prototypes, merge_prototypes, nearest_prototype_accuracy, prototype_quality


def test_class_prototypes_hand_computed():
    z = np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0], [9.0, 9.0], [2.0, 2.0]])
    y = np.array([0, 0, 2, -1, 2])
    protos, counts = class_prototypes(z, y, num_classes=4)
    np.testing.assert_array_equal(counts, [2, 0, 2, 0])
    np.testing.assert_allclose(protos, [[2.0, 1.0], [0.0, 0.0], [1.0, 3.0], [0.0, 0.0]])
    assert protos.dtype == np.float64 and counts.dtype == np.int64


def test_class_prototypes_accepts_torch():
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    protos, counts = class_prototypes(z, torch.tensor([1, 1]), 2)
    np.testing.assert_allclose(protos, [[0.0, 0.0], [2.0, 3.0]])
    np.testing.assert_array_equal(counts, [0, 2])


def test_class_prototypes_bad_input():
    z = np.zeros((3, 2))
    with pytest.raises(DataError, match=r"labels must be in 0\.\.1"):
        class_prototypes(z, np.array([0, 2, 1]), 2)
    with pytest.raises(DataError, match="3 embeddings"):
        class_prototypes(z, np.array([0, 1]), 2)
    with pytest.raises(DataError, match="2-D"):
        class_prototypes(np.zeros(3), np.array([0, 1, 1]), 2)
    with pytest.raises(DataError, match="NaN"):
        class_prototypes(np.array([[math.nan, 0.0]]), np.array([0]), 2)


def test_merge_prototypes_count_weighted():
    p1 = np.array([[1.0, 1.0], [0.0, 0.0], [4.0, 0.0]])
    n1 = np.array([1, 0, 2])
    p2 = np.array([[4.0, 7.0], [0.0, 0.0], [1.0, 3.0]])
    n2 = np.array([2, 0, 1])
    merged, counts = merge_prototypes([p1, p2], [n1, n2])
    # class 0: (1·[1,1] + 2·[4,7]) / 3 = [3, 5]; class 2: (2·[4,0] + 1·[1,3]) / 3 = [3, 1]
    np.testing.assert_allclose(merged, [[3.0, 5.0], [0.0, 0.0], [3.0, 1.0]])
    np.testing.assert_array_equal(counts, [3, 0, 3])


def test_merge_equals_pooled_class_means():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(60, 5))
    y = rng.integers(-1, 4, size=60)
    parts = [slice(0, 20), slice(20, 45), slice(45, 60)]
    local = [class_prototypes(z[s], y[s], 5) for s in parts]
    merged, counts = merge_prototypes([p for p, _ in local], [c for _, c in local])
    pooled, pooled_counts = class_prototypes(z, y, 5)
    np.testing.assert_allclose(merged, pooled, atol=1e-12)
    np.testing.assert_array_equal(counts, pooled_counts)


def test_merge_prototypes_bad_input():
    with pytest.raises(DataError, match="at least one"):
        merge_prototypes([], [])
    with pytest.raises(DataError, match="shape"):
        merge_prototypes([np.zeros((2, 3)), np.zeros((3, 3))], [np.ones(2), np.ones(3)])
    with pytest.raises(DataError, match="non-negative"):
        merge_prototypes([np.zeros((2, 3))], [np.array([1, -1])])


def test_quality_orthogonal_identical_and_120_degrees():
    assert prototype_quality(np.eye(3)) == pytest.approx(0.0, abs=1e-12)
    assert prototype_quality(np.array([[1.0, 2.0], [2.0, 4.0], [0.5, 1.0]])) == pytest.approx(1.0, abs=1e-12)
    angles = np.deg2rad([90.0, 210.0, 330.0])
    star = np.stack([np.cos(angles), np.sin(angles)], axis=1) * np.array([[1.0], [2.0], [3.0]])
    assert prototype_quality(star) == pytest.approx(-0.5, abs=1e-12)


def test_quality_hand_computed_and_counts():
    # cos([1,0],[1,1]) = 1/√2, cos([1,0],[0,1]) = 0, cos([1,1],[0,1]) = 1/√2 → mean √2/3.
    p = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-5.0, 3.0]])
    assert prototype_quality(p, counts=[4, 1, 2, 0]) == pytest.approx(math.sqrt(2) / 3, abs=1e-12)


def test_quality_zero_rows_and_too_few_classes():
    # A zero row has cosine 0 with everything: pairs (1,2)=1, (1,0)=0, (2,0)=0 → 1/3.
    p = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 0.0]])
    q = prototype_quality(p)
    assert q == pytest.approx(1 / 3, abs=1e-12)
    assert math.isnan(prototype_quality(np.array([[1.0, 0.0], [0.0, 1.0]]), counts=[3, 0]))
    assert math.isnan(prototype_quality(np.zeros((0, 4))))
    assert prototype_quality(np.zeros((2, 3))) == 0.0


def test_nearest_prototype_accuracy():
    protos = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    z = np.array([[1.0, 1.0], [9.0, 1.0], [1.0, 9.0], [6.0, 0.0], [0.0, 4.0], [5.0, 5.0]])
    y = np.array([0, 1, 2, 0, 0, -1])
    # predictions: 0, 1, 2, 1 (6 is nearer 10 than 0), 0; the last sample is unlabelled → 4/5.
    assert nearest_prototype_accuracy(z, y, protos) == pytest.approx(0.8)
    # Without class 1's prototype the 4th sample goes to class 0 (correct) and the 2nd is lost.
    assert nearest_prototype_accuracy(z, y, protos, counts=[1, 0, 1]) == pytest.approx(0.8)
    assert nearest_prototype_accuracy(z[:3], y[:3], protos, counts=[1, 0, 1]) == pytest.approx(2 / 3)
    assert math.isnan(nearest_prototype_accuracy(z, -np.ones(6, dtype=int), protos))
    with pytest.raises(DataError, match="features"):
        nearest_prototype_accuracy(z, y, np.zeros((3, 4)))


def test_nearest_prototype_accuracy_own_prototypes_separable():
    rng = np.random.default_rng(1)
    centres = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    y = rng.integers(0, 3, size=90)
    z = centres[y] + 0.1 * rng.normal(size=(90, 3))
    protos, counts = class_prototypes(torch.from_numpy(z), torch.from_numpy(y), 3)
    assert nearest_prototype_accuracy(z, y, protos, counts) == 1.0


def test_update_keeps_last_rounds_prototype_for_a_class_nobody_reported() -> None:
    from fedmm.core.maths.prototypes import update_prototypes

    first, first_counts = update_prototypes(None, [np.array([[1.0, 1.0], [2.0, 2.0]])], [np.array([3, 1])])
    np.testing.assert_array_equal(first_counts, [3, 1])
    # Round 2: class 1 is reported by nobody, class 0 by two clients.
    protos = [np.array([[0.0, 0.0], [9.0, 9.0]]), np.array([[4.0, 4.0], [9.0, 9.0]])]
    merged, counts = update_prototypes((first, first_counts), protos, [np.array([1, 0]), np.array([3, 0])])
    np.testing.assert_allclose(merged, [[3.0, 3.0], [2.0, 2.0]])  # class 0 merged, class 1 kept
    np.testing.assert_array_equal(counts, [4, 1])
