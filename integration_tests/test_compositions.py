"""Techniques from different packages composed in one Strategy (the matrix grows with each package)."""

from __future__ import annotations

import math

import torch

from fedmm.core import FedAvg, Federation, datasets
from fedmm.core.models import late_fusion
from fedmm.layerwise import LayerWise
from fedmm.select import BMSFed


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
    torch.manual_seed(0)
    tower = {"layers": 2, "heads": 2, "tokens": 4, "projection": 16}
    model = late_fusion(
        data.modalities,
        data.num_classes,
        embed_dim=16,
        hidden=16,
        encoders={m.name: "transformer" for m in data.modalities},
        encoder_options={m.name: tower for m in data.modalities},
    )
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
