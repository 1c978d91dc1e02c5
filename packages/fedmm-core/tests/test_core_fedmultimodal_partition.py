"""FedMultimodal's UCI-HAR split: natural groups, each cut into sub-clients by a Dirichlet over
labels; and its client-level missing modalities (a client lacks a modality for all its samples)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedmm.core.data import partition as P
from fedmm.core.data.registry import federate, load_central
from fedmm.core.errors import ConfigError


def test_each_group_is_cut_into_its_own_subclients() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(4), 60)  # 4 subjects, 60 windows each
    labels = rng.integers(0, 6, size=groups.shape[0])
    part, parent = P.natural_dirichlet(
        groups, labels, subclients=5, alpha=0.1, rng=np.random.default_rng(1), min_samples=2
    )
    assert part.num_clients == 20 and parent.tolist() == np.repeat(np.arange(4), 5).tolist()
    for c in range(20):
        idx = part.of(c)
        assert idx.size >= 2
        assert set(groups[idx].tolist()) == {parent[c]}  # a sub-client holds one subject's windows only
    assert sorted(np.concatenate([part.of(c) for c in range(20)]).tolist()) == list(range(240))

    # Small alpha skews labels inside a subject; a large one spreads them.
    def skew(alpha: float) -> float:
        p, _ = P.natural_dirichlet(groups, labels, 5, alpha, np.random.default_rng(2), min_samples=1)
        return float(
            np.mean([np.bincount(labels[p.of(c)], minlength=6).max() / p.of(c).size for c in range(20)])
        )

    assert skew(0.1) > skew(100.0) + 0.2


def test_impossible_subclient_sizes_are_one_clear_error() -> None:
    groups = np.repeat(np.arange(2), 6)
    labels = np.zeros(12, dtype=np.int64)
    with pytest.raises(ConfigError, match="group 0 has 6 samples: too few for 5 sub-clients of at least 2"):
        P.natural_dirichlet(
            groups, labels, subclients=5, alpha=0.5, rng=np.random.default_rng(0), min_samples=2
        )


def test_client_missing_modalities_and_clients_left_with_none_are_dropped() -> None:
    rng = np.random.default_rng(0)
    mask = P.client_missing_modalities(1000, 2, 0.5, rng)
    assert mask.shape == (1000, 2) and abs(mask.mean() - 0.5) < 0.05
    assert (~mask.any(axis=1)).sum() > 150  # about a quarter lack both
    assert P.client_missing_modalities(10, 2, 0.0, rng).all()


def test_federate_with_fedmultimodal_knobs() -> None:
    central = load_central("synthetic", num_samples=600, num_classes=3, seed=0)
    central = dataclasses.replace(central, train_groups=np.arange(len(central.train)) % 6)
    data = federate(
        central,
        clients=None,
        partition="natural_dirichlet",
        subclients=3,
        alpha=0.5,
        client_missing_rate=0.4,
        seed=0,
    )
    assert data.client_modalities is not None
    assert data.client_modalities.any(axis=1).all()  # nobody is left with nothing: those were dropped
    kept = data.num_clients
    assert kept <= 18 and data.metadata["clients_dropped_no_modality"] == 18 - kept
    assert data.metadata["partition"] == "natural_dirichlet" and len(data.metadata["client_groups"]) == kept
    with pytest.raises(
        ConfigError, match="partition='natural_dirichlet' makes 6 groups x 3 sub-clients = 18 clients"
    ):
        federate(central, clients=10, partition="natural_dirichlet", subclients=3)
