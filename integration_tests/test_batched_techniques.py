"""Batched clients with techniques from the technique packages: the same numbers as one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmm.core import FedAvg, Federation, datasets, models
from fedmm.core.engine import InProcessEngine

fedmm_select = pytest.importorskip("fedmm.select")


def _run(batched: bool) -> tuple[Federation, InProcessEngine]:
    data = datasets.load(
        "synthetic", clients=8, partition="dirichlet", alpha=0.5, incomplete_fraction=0.3, seed=1
    )
    torch.manual_seed(0)
    # FedMFS on late fusion: no per-modality loss terms, so its clients batch; its Shapley report
    # and its choice of uploads run per client on each one's trained weights.
    model = models.late_fusion(data.modalities, data.num_classes)
    strategy = FedAvg([fedmm_select.FedMFS(gamma=1)], clients_per_round=5, momentum=0.9)
    fed = Federation(model, data, strategy, device="cpu", seed=3)
    engine = InProcessEngine(
        fed.model, fed.data, fed.strategy.techniques, meter=fed.meter, batch_clients=batched
    )
    fed.run(3, progress=False, engine=engine)
    return fed, engine


def test_fedmfs_on_late_fusion_batched_equals_sequential() -> None:
    seq, _ = _run(False)
    bat, engine = _run(True)
    assert engine.rounds_batched == 3
    for x, y in zip(seq.history.rounds, bat.history.rounds, strict=True):
        for key in ("accuracy", "loss", "train_loss"):
            assert abs(x[key] - y[key]) <= 1e-4, (x["round"], key, x[key], y[key])
    for g, arrays in seq.global_arrays.items():
        for k, v in arrays.items():
            assert float(np.abs(v - bat.global_arrays[g][k]).max()) <= 1e-5 * (
                float(np.abs(v).max()) or 1.0
            ), k
    for ca, cb in zip(seq.history.ledger.records, bat.history.ledger.records, strict=True):
        assert (ca.client_id, ca.groups_up, ca.bytes_up, ca.flops, ca.peak_bytes) == (
            cb.client_id,
            cb.groups_up,
            cb.bytes_up,
            cb.flops,
            cb.peak_bytes,
        )
        assert set(ca.flops_by_hook) == set(cb.flops_by_hook)
