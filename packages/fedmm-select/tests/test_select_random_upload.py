"""RandomUpload, FedMFS's random-γ baseline as a technique of its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmm.core.config import TechniqueSection, build_technique
from fedmm.core.data.registry import federate
from fedmm.core.data.synthetic import make_synthetic
from fedmm.core.errors import ArgumentError, ConfigError
from fedmm.core.federation import Federation
from fedmm.core.protocol import FedAvg
from fedmm.select import RandomUpload
from fedmm.select.fedmfs import modality_ensemble, random_gamma


@pytest.mark.parametrize(
    ("kwargs", "argument", "message"),
    [
        ({"gamma": 0}, "gamma", "RandomUpload: gamma must be an integer >= 1, got 0"),
        ({"shapley": "kernel"}, "shapley", "RandomUpload: shapley must be one of 'tree', 'exact'"),
        ({"shap_samples": 0}, "shap_samples", "RandomUpload: shap_samples must be an integer >= 1"),
        ({"model": "joint"}, "model", "RandomUpload: model must be one of 'ensemble', 'late_fusion'"),
    ],
)
def test_select_random_upload_bad_arguments(kwargs: dict[str, object], argument: str, message: str) -> None:
    with pytest.raises(ArgumentError, match=message) as info:
        RandomUpload(**kwargs)  # type: ignore[arg-type]
    assert info.value.argument == argument


def test_select_random_upload_config_roundtrip_and_toml() -> None:
    t = RandomUpload(gamma=2, shapley="exact", n_estimators=5)
    assert set(t.config()) == {"gamma", "shapley", "n_estimators", "shap_samples", "model", "aggregation"}
    assert RandomUpload(**t.config()).config() == t.config()
    built = build_technique(TechniqueSection(name="random_upload", gamma=1))  # type: ignore[call-arg]
    assert isinstance(built, RandomUpload) and built.args.gamma == 1
    # FedMFS's priority weights mean nothing to a random choice: refused, not ignored.
    with pytest.raises(ConfigError, match="alpha_s"):
        build_technique(TechniqueSection(name="random_upload", alpha_s=0.5))  # type: ignore[call-arg]


def test_select_random_upload_draws_gamma_owned_modalities_from_the_report_seed() -> None:
    central = make_synthetic(
        400, num_classes=3, modalities=[("a", 4, 1.0), ("b", 8, 0.5), ("c", 8, 0.0)], seed=1
    )
    data = federate(central, clients=4, unimodal_fraction=0.5, seed=0)
    torch.manual_seed(0)
    model = modality_ensemble(data.modalities, data.num_classes)
    fed = Federation(model, data, FedAvg([RandomUpload(gamma=2)], lr=0.1), seed=0)
    fed.run(1, progress=False)
    assert data.client_modalities is not None
    for cid, report in fed.reports.items():
        owned = data.client_modalities[cid]
        sent = np.asarray(report["fedmfs/upload"], dtype=bool)
        assert not np.any(sent & ~owned)
        assert sent.sum() == min(2, owned.sum())
    # The choice is random_gamma on the client's report seed, so it is reproducible.
    t = RandomUpload(gamma=2)
    avail = np.array([True, True, True])
    names = ["a", "b", "c"]
    phi = np.zeros(3)
    assert t._choose(model, names, phi, avail, 7) == random_gamma(avail, 2, np.random.default_rng(7))
