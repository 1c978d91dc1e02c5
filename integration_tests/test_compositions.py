"""Techniques from different packages composed in one Strategy (the matrix grows with each package)."""

from __future__ import annotations

import math

import numpy as np
import torch

from fedmm.core import FedAvg, Federation, datasets
from fedmm.core.data.types import FederatedDataset
from fedmm.core.models import MultimodalModel, late_fusion
from fedmm.layerwise import LayerWise
from fedmm.schedule import FlexMod
from fedmm.select import BMSFed, FedMFS


def _towers(data: FederatedDataset) -> MultimodalModel:
    """Two 2-layer transformer towers with projection heads (layered encoders for LayerWise)."""
    torch.manual_seed(0)
    tower = {"layers": 2, "heads": 2, "tokens": 4, "projection": 16}
    return late_fusion(
        data.modalities,
        data.num_classes,
        embed_dim=16,
        hidden=16,
        encoders={m.name: "transformer" for m in data.modalities},
        encoder_options={m.name: tower for m in data.modalities},
    )


def test_bmsfed_selection_with_layerwise_training() -> None:
    data = datasets.load(
        "synthetic",
        clients=8,
        partition="iid",
        unimodal_fraction=0.25,
        num_samples=480,
        test_samples=120,
        seed=0,
    )
    model = _towers(data)
    bms = BMSFed(clients_per_round=3, chi=1.0)
    strategy = FedAvg([bms, LayerWise(mode="lw", rounds_per_stage=2)], optimizer="adamw", lr=3e-3)
    fed = Federation(model, data, strategy, seed=0)
    history = fed.run(4, progress=False)
    assert [r["selected"] for r in history.rounds] == [8, 3, 3, 3]  # BMSFed's selection holds
    assert [r["layerwise/stage"] for r in history.rounds] == [1, 1, 2, 2]
    for rec in history.ledger.records:
        stage = (rec.round + 1) // 2
        layers = {g for g in rec.groups_up if g.split(".")[-1].isdigit()}
        # Only the newest layer of a tower ever goes up, whatever BMSFed assigned.
        assert layers <= {f"encoder.{m}.{stage - 1}" for m in ("a", "b")}
    assert all(math.isfinite(r["accuracy"]) for r in history.rounds)


def _val_data() -> FederatedDataset:
    return datasets.load(
        "synthetic",
        clients=6,
        partition="iid",
        num_samples=600,
        test_samples=150,
        validation_fraction=0.2,
        seed=0,
    )


def test_flexmod_scheduling_with_fedmfs_upload_selection() -> None:
    data = _val_data()
    strategy = FedAvg([FlexMod(beta=0.5), FedMFS(gamma=1)], lr=0.05)
    torch.manual_seed(0)
    model = strategy.create_model(data, {}) or late_fusion(data.modalities, data.num_classes)
    fed = Federation(model, data, strategy, seed=0)
    history = fed.run(3, progress=False)
    last = history.rounds[-1]
    assert any(k.startswith("flexmod/iterations/") for k in last)
    assert sum(last[f"fedmfs/uploads/{m}"] for m in ("a", "b")) == 6  # one modality model per client
    for rec in history.ledger.records:
        if rec.round > 1:
            assert len([g for g in rec.groups_up if g.startswith("encoder.")]) == 1


def test_flexmod_scheduling_with_bmsfed_selection() -> None:
    data = _val_data()
    torch.manual_seed(0)
    model = late_fusion(data.modalities, data.num_classes, encoders={"a": "mlp", "b": "mlp"})
    strategy = FedAvg([BMSFed(clients_per_round=3), FlexMod(beta=0.5)], lr=0.05)
    history = Federation(model, data, strategy, seed=0).run(3, progress=False)
    assert [r["selected"] for r in history.rounds] == [6, 3, 3]
    assert all(math.isfinite(r["flexmod/val_accuracy"]) for r in history.rounds)


def test_flexmod_scheduling_with_layerwise_training() -> None:
    data = _val_data()
    model = _towers(data)
    strategy = FedAvg([FlexMod(beta=0.5), LayerWise(rounds_per_stage=2)], optimizer="adamw", lr=3e-3)
    history = Federation(model, data, strategy, seed=0).run(4, progress=False)
    rec = history.ledger.records[-1]
    assert set(rec.flops_by_combination) <= {"a+b", "a", "b"} and len(rec.flops_by_combination) >= 2
    assert {g for g in rec.groups_up if g.split(".")[-1].isdigit()} <= {"encoder.a.1", "encoder.b.1"}


def test_fedmvp_completion_with_bmsfed_selection() -> None:
    from fedmm.completion import FedMVP

    data = datasets.load(
        "synthetic",
        clients=6,
        partition="iid",
        num_samples=600,
        test_samples=150,
        incomplete_fraction=0.5,
        validation_fraction=0.2,
        seed=0,
    )
    fedmvp = FedMVP(extractor_epochs=2, dim=16)
    strategy = FedAvg([BMSFed(clients_per_round=3), fedmvp], optimizer="adam", lr=1e-3)
    model = strategy.create_model(data, {})
    fed = Federation(model, data, strategy, seed=0)
    history = fed.run(3, progress=False)
    assert [r["selected"] for r in history.rounds] == [6, 3, 3]
    assert all(np.isfinite(r["fedmvp/cka_weight_min"]) for r in history.rounds)
    for cid, state in fed.client_states.items():
        assert state["fedmvp/completed/present"].all(), cid
