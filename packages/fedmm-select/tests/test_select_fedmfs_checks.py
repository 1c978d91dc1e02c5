"""FedMFS's checks before round 1 (γ against M, a priority the Shapley values cannot move) and its
plain-mean aggregation option."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from fedmm.core.config import parse_config
from fedmm.core.data.registry import federate
from fedmm.core.data.synthetic import make_synthetic
from fedmm.core.data.types import FederatedDataset
from fedmm.core.errors import ConfigError
from fedmm.core.federation import Federation
from fedmm.core.ledger import ClientCost
from fedmm.core.protocol import (
    ClientResult,
    FedAvg,
    ResultsContext,
    RoundContext,
    Technique,
    check_techniques,
)
from fedmm.core.runner import build_federation
from fedmm.select.baselines.random_upload import RandomUpload
from fedmm.select.fedmfs import FedMFS, modality_ensemble

def _data(dims: tuple[int, int] = (4, 96), unimodal_fraction: float = 0.0) -> FederatedDataset:
    central = make_synthetic(
        200, num_classes=3, modalities=[("small", dims[0], 1.0), ("large", dims[1], 0.0)], seed=1
    )
    return federate(central, clients=3, unimodal_fraction=unimodal_fraction, seed=0)


def _federation(data: FederatedDataset, technique: Technique) -> Federation:
    model = modality_ensemble(data.modalities, data.num_classes)
    return Federation(model, data, FedAvg([technique]), seed=0)


# -- γ > M, refused before round 1 ----------------------------------------------------------------


@pytest.mark.parametrize("technique", [FedMFS(gamma=3), RandomUpload(gamma=3)])
def test_select_fedmfs_gamma_above_modalities_refused_when_the_federation_is_built(
    technique: Technique,
) -> None:
    # A model built by hand: create_model never runs, so the federation's check is the first.
    with pytest.raises(
        ConfigError,
        match=r"gamma = 3 exceeds the number of modalities \(2: small, large\); use 1 <= gamma <= 2",
    ):
        _federation(_data(), technique)


def test_select_fedmfs_gamma_above_modalities_refused_from_toml_with_core_model() -> None:
    # model = "late_fusion": FedMFS builds nothing, so only the federation's check sees M.
    cfg = parse_config(
        {
            "run": {"rounds": 1},
            "data": {"name": "synthetic", "clients": 2, "options": {"num_samples": 60, "num_classes": 3}},
            "techniques": [{"name": "fedmfs", "gamma": 3, "model": "late_fusion"}],
        }
    )
    with pytest.raises(ConfigError, match=r"FedMFS: gamma = 3 exceeds the number of modalities \(2: a, b\)"):
        build_federation(cfg, progress=False)


