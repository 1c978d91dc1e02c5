"""Shared fixtures for fedmm-core tests: small, fast synthetic federations."""

from __future__ import annotations

import pytest
import torch

from fedmm.core import datasets, models
from fedmm.core.data.types import FederatedDataset


@pytest.fixture
def small_data() -> FederatedDataset:
    return datasets.load("synthetic", clients=6, partition="iid", num_samples=600, test_samples=200, seed=0)


@pytest.fixture
def small_model(small_data: FederatedDataset) -> models.MultimodalModel:
    torch.manual_seed(0)
    return models.late_fusion(
        small_data.modalities, small_data.num_classes, encoders={"a": "mlp", "b": "mlp"}
    )
