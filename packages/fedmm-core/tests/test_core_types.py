from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmm.core import datasets
from fedmm.core.data.types import ModalitySpec, SampleSet
from fedmm.core.errors import ConfigError, DataError


def test_client_views_share_the_sample_arrays() -> None:
    data = datasets.load("synthetic", clients=50, num_samples=1000, seed=0)
    client = data.client(3)
    assert client.samples is data.train
    assert np.shares_memory(client.indices, data.partition.indices)
    batch = client.batch()
    assert len(batch) == client.num_samples
    assert torch.equal(batch.features["a"], torch.from_numpy(data.train.features["a"][client.indices]))


def test_batches_visit_every_sample_once() -> None:
    data = datasets.load("synthetic", clients=4, num_samples=203, seed=0)
    client = data.client(1)
    gen = torch.Generator().manual_seed(0)
    seen = torch.cat([b.labels for b in client.batches(16, gen)])
    assert seen.shape[0] == client.num_samples
    assert sorted(seen.tolist()) == sorted(client.labels().tolist())


def test_client_modality_mask_hides_a_modality() -> None:
    data = datasets.load("synthetic", clients=10, num_samples=500, unimodal_fraction=1.0, seed=0)
    client = data.client(0)
    assert len(client.modalities) == 1
    batch = client.batch()
    assert batch.present.sum(dim=1).eq(1).all()


def test_sampleset_rejects_bad_shapes() -> None:
    spec = ModalitySpec("x", (3,))
    with pytest.raises(DataError, match="expected"):
        SampleSet([spec], {"x": np.zeros((4, 2))}, np.zeros(4))
    with pytest.raises(DataError, match="missing"):
        SampleSet([spec], {}, np.zeros(4))
    with pytest.raises(DataError, match="presence mask"):
        SampleSet([spec], {"x": np.zeros((4, 3))}, np.zeros(4), present=np.ones((4, 2), bool))


def test_modality_name_rules() -> None:
    with pytest.raises(DataError, match=r"no '\.'"):
        ModalitySpec("a.b", (2,))


def test_load_reports_unknown_dataset_and_bad_modalities() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        datasets.load("nope")
    with pytest.raises(ConfigError, match="invalid"):
        datasets.load("synthetic", only_modalities=["zzz"], num_samples=100)
    with pytest.raises(ConfigError, match="path="):
        datasets.load("uci-har")


def test_restricting_modalities_gives_a_unimodal_dataset() -> None:
    data = datasets.load("synthetic", clients=3, num_samples=300, only_modalities=["b"], seed=0)
    assert data.modality_names == ("b",)
    assert data.train.present.shape[1] == 1


def test_validation_split_is_disjoint_from_clients() -> None:
    data = datasets.load("synthetic", clients=5, num_samples=1000, validation_fraction=0.1, seed=0)
    assert data.validation is not None and len(data.validation) == 100
    assert len(data.train) == 900
    assert data.partition.indices.max() < 900


def test_dataset_options_may_be_named_modalities() -> None:
    # The synthetic loader's own `modalities` option must not collide with load()'s subset argument.
    data = datasets.load("synthetic", clients=2, num_samples=100, modalities=[("x", 3, 1.0), ("y", 2, 0.0)])
    assert data.modality_names == ("x", "y")


def test_generated_mask_follows_the_columns_and_local_copies() -> None:
    data = datasets.load("synthetic", clients=2, partition="iid", num_samples=40, missing_rate=0.5, seed=0)
    client = data.client(1)
    own = client.local_copy()
    assert len(own) == client.num_samples and not own.generated.any()
    np.testing.assert_array_equal(own.present, client.present())
    # Complete every missing value of modality "a" and mark it generated.
    missing = ~own.present[:, 0]
    assert missing.any()
    feats = own.features["a"].copy()
    feats[missing] = 1.0
    present = own.present.copy()
    present[:, 0] = True
    generated = np.zeros_like(present)
    generated[:, 0] = missing
    done = own.with_columns(features={"a": feats}, present=present, generated=generated)
    completed = client.with_samples(done)
    assert completed.num_samples == client.num_samples and completed.present()[:, 0].all()
    np.testing.assert_array_equal(completed.samples.generated[:, 0], missing)
    assert done.take(np.arange(3)).generated.shape == (3, 2)
    with pytest.raises(DataError, match="not present"):
        own.with_columns(generated=np.ones_like(own.present))
