from __future__ import annotations

import numpy as np
import pytest

from fedmm.core.data import partition as P
from fedmm.core.data.types import MISSING_LABEL, Partition
from fedmm.core.errors import ConfigError


def test_iid_covers_every_sample_once_and_balances() -> None:
    part = P.iid(103, 10, np.random.default_rng(0))
    assert sorted(part.indices.tolist()) == list(range(103))
    sizes = part.sizes()
    assert sizes.max() - sizes.min() <= 1
    assert part.num_clients == 10


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    labels = np.repeat(np.arange(10), 200)

    def mean_classes_per_client(alpha: float) -> float:
        part = P.dirichlet(labels, 20, alpha, np.random.default_rng(1), min_samples=0)
        assert sorted(part.indices.tolist()) == list(range(labels.size))
        return float(np.mean([np.unique(labels[part.of(c)]).size for c in range(20)]))

    assert mean_classes_per_client(0.1) < mean_classes_per_client(100.0)
    assert mean_classes_per_client(100.0) == pytest.approx(10, abs=0.5)


def test_dirichlet_is_deterministic_for_a_seed() -> None:
    labels = np.repeat(np.arange(5), 50)
    a = P.dirichlet(labels, 7, 0.5, np.random.default_rng(3))
    b = P.dirichlet(labels, 7, 0.5, np.random.default_rng(3))
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.offsets, b.offsets)


def test_dirichlet_bad_alpha_and_impossible_min_size() -> None:
    with pytest.raises(ConfigError, match="alpha"):
        P.dirichlet(np.zeros(10), 2, 0.0, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="fewer than 5 samples"):
        P.dirichlet(
            np.repeat(np.arange(2), 10), 4, 0.01, np.random.default_rng(0), min_samples=5, max_tries=3
        )


def test_natural_split_one_client_per_group() -> None:
    groups = np.array([7, 3, 7, 9, 3, 3])
    part, ids = P.natural(groups)
    assert ids.tolist() == [3, 7, 9]
    assert [sorted(part.of(i).tolist()) for i in range(3)] == [[1, 4, 5], [0, 2], [3]]


def test_modality_availability_fraction() -> None:
    mask = P.modality_availability(100, 3, 0.3, np.random.default_rng(0))
    unimodal = mask.sum(axis=1) == 1
    assert unimodal.sum() == 30
    assert (mask.sum(axis=1)[~unimodal] == 3).all()


def test_missing_modalities_rate_and_at_least_one_kept() -> None:
    present = np.ones((20000, 2), dtype=bool)
    out = P.missing_modalities(present, 0.3, np.random.default_rng(0))
    assert out.any(axis=1).all()
    # Each (sample, modality) dropped w.p. 0.3, then 9 % of rows lose both and get one back.
    assert 0.25 < 1 - out.mean() < 0.30


def test_missing_labels_and_label_noise() -> None:
    labels = np.arange(10000) % 5
    missing = P.missing_labels(labels, 0.2, np.random.default_rng(0))
    assert abs(np.mean(missing == MISSING_LABEL) - 0.2) < 0.02
    noisy = P.label_noise(labels, 0.25, 5, np.random.default_rng(0))
    changed = noisy != labels
    assert abs(changed.mean() - 0.25) < 0.02
    assert noisy.min() >= 0 and noisy.max() < 5  # flipped labels are other valid classes


def test_rates_outside_unit_interval_are_refused() -> None:
    with pytest.raises(ConfigError, match="missing_rate"):
        P.missing_modalities(np.ones((3, 2), bool), 1.5, np.random.default_rng(0))


def test_partition_from_assignment_keeps_order_and_validates() -> None:
    part = Partition.from_assignment(np.array([1, 0, 1, 1]), 3)
    assert part.of(0).tolist() == [1] and part.of(1).tolist() == [0, 2, 3] and part.of(2).tolist() == []
    with pytest.raises(ValueError, match="offsets"):
        Partition(np.array([0, 5]), np.arange(3))


def test_incomplete_samples_drop_exactly_one_modality_from_a_fraction() -> None:
    from fedmm.core.data.partition import incomplete_samples

    present = np.ones((1000, 2), dtype=bool)
    out = incomplete_samples(present, 0.8, np.random.default_rng(0))
    lost = (~out).sum(axis=1)
    assert set(np.unique(lost)) == {0, 1}  # never both
    assert int((lost == 1).sum()) == 800
    assert abs(int((~out[:, 0]).sum()) - 400) < 60  # about half lose each modality
    single = np.array([[True, False], [True, True]])
    assert incomplete_samples(single, 1.0, np.random.default_rng(0))[0].tolist() == [True, False]
