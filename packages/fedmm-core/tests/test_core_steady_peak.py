"""The ledger's peak memory is a steady-state step's: measured while the optimiser's state (Adam's
moments, SGD's momentum) exists, not only on a fresh optimiser's first step, which allocates it
after the activations are gone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

from fedmm.core import TrainPlan, datasets
from fedmm.core import client as client_module
from fedmm.core.arrays import get_arrays
from fedmm.core.client import StepMeter, client_round, train_step
from fedmm.core.data.types import MISSING_LABEL, FederatedDataset
from fedmm.core.ledger import ClientCost
from fedmm.core.measure import StepMeasurement, measure_step
from fedmm.core.models import MultimodalModel, late_fusion

BATCH = 200


@pytest.fixture
def data() -> FederatedDataset:
    # 600 samples per client: three steps of one signature per epoch, with activations large
    # enough that a step's peak comes during backward, not at the optimiser's update.
    return datasets.load("synthetic", clients=2, partition="iid", num_samples=1200, test_samples=20, seed=0)


def _model(data: FederatedDataset) -> MultimodalModel:
    torch.manual_seed(0)
    return late_fusion(data.modalities, data.num_classes, encoders={"a": "mlp", "b": "mlp"})


def _hand_peaks(data: FederatedDataset, optimizer: str) -> list[int]:
    """Peak bytes of the first two steps of a fresh optimiser, measured by hand."""
    model = _model(data)
    model.train()
    opt: torch.optim.Optimizer = (
        torch.optim.Adam(model.parameters(), lr=1e-3)
        if optimizer == "adam"
        else torch.optim.SGD(model.parameters(), lr=1e-2)
    )
    batches = list(data.client(0).batches(BATCH, torch.Generator().manual_seed(0)))[:2]
    peaks = []
    for batch in batches:
        labelled = batch.labels != MISSING_LABEL
        with measure_step() as m:
            train_step(model, batch, None, labelled, int(labelled.sum()), (), None, {}, opt)
        peaks.append(m.peak_bytes)
    return peaks


def _round(data: FederatedDataset, plan: TrainPlan, meter: StepMeter) -> ClientCost:
    model = _model(data)
    result = client_round(
        model,
        get_arrays(model),
        plan,
        data.client(0),
        {},
        [],
        round_=1,
        seed=0,
        modalities=data.modalities,
        num_classes=data.num_classes,
        meter=meter,
    )
    return result.cost


@pytest.fixture
def measured_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The peak bytes of each step the client round measures (each measured step costs a slow,
    per-operator pass)."""
    peaks: list[int] = []

    @contextmanager
    def recording(**kwargs: Any) -> Iterator[StepMeasurement]:
        with measure_step(**kwargs) as m:
            yield m
        if kwargs.get("track_memory", True):
            peaks.append(m.peak_bytes)

    monkeypatch.setattr(client_module, "measure_step", recording)
    return peaks


def test_with_adam_the_ledger_reports_the_steady_state_peak(
    data: FederatedDataset, measured_steps: list[int]
) -> None:
    fresh, steady = _hand_peaks(data, "adam")
    assert steady > fresh  # the moments exist while the activations do
    meter = StepMeter()
    cost = _round(data, TrainPlan(optimizer="adam", lr=1e-3, batch_size=BATCH), meter)
    # The signature's first step (fresh optimiser) and one more, with the moments: no more.
    assert len(measured_steps) == 2
    assert measured_steps[1] - measured_steps[0] == steady - fresh
    assert cost.peak_bytes == measured_steps[1]
    # A later round (a fresh optimiser again) reuses both figures without measuring.
    again = _round(data, TrainPlan(optimizer="adam", lr=1e-3, batch_size=BATCH), meter)
    assert again.peak_bytes == cost.peak_bytes and len(measured_steps) == 2
    assert sorted(entry[1] for entry in meter.cache.values()) == measured_steps


def test_an_optimiser_without_state_is_measured_once(
    data: FederatedDataset, measured_steps: list[int]
) -> None:
    fresh, steady = _hand_peaks(data, "sgd")
    assert fresh == steady
    cost = _round(data, TrainPlan(optimizer="sgd", lr=1e-2, batch_size=BATCH), StepMeter())
    assert len(measured_steps) == 1 and cost.peak_bytes == measured_steps[0]


def test_a_signature_seen_only_on_fresh_first_steps_keeps_its_fresh_peak(
    data: FederatedDataset, measured_steps: list[int]
) -> None:
    # One step per round (the whole client batch): it really runs with a fresh optimiser.
    meter = StepMeter()
    plan = TrainPlan(optimizer="adam", lr=1e-3, batch_size=10_000)
    first = _round(data, plan, meter)
    second = _round(data, plan, meter)
    assert first.peak_bytes == second.peak_bytes > 0
    assert len(measured_steps) == 1
    # It is charged that peak whatever was measured before: a meter that has seen the shape in
    # the steady state (another client, an earlier round) charges the same.
    seen = StepMeter()
    _round(data, plan.replace(local_epochs=2), seen)
    assert _round(data, plan, seen).peak_bytes == first.peak_bytes
    assert max(entry[1] for entry in seen.cache.values()) > first.peak_bytes
