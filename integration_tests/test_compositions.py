"""Techniques from different packages composed in one Strategy (the matrix grows with each package).

Every composition that runs must lose no client in any round (``dropped == 0``): a client that
fails is dropped, logged and counted, so a broken pairing would otherwise pass on finite metrics.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from fedmm.core import FedAvg, Federation, History, datasets
from fedmm.core.data.types import FederatedDataset
from fedmm.core.errors import ConfigError
from fedmm.core.models import MultimodalModel, late_fusion
from fedmm.layerwise import LayerWise
from fedmm.schedule import EntireUpdate, FlexMod
from fedmm.select import BMSFed, FedMFS
from fedmm.select.fedmfs.model import modality_ensemble


def _no_drops(history: History) -> None:
    assert [r["dropped"] for r in history.rounds] == [0] * len(history.rounds)


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
    _no_drops(history)


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
    _no_drops(history)


def test_flexmod_scheduling_with_bmsfed_selection() -> None:
    data = _val_data()
    torch.manual_seed(0)
    model = late_fusion(data.modalities, data.num_classes, encoders={"a": "mlp", "b": "mlp"})
    bms = BMSFed(clients_per_round=3, chi=1.0)
    strategy = FedAvg([bms, FlexMod(beta=0.5)], lr=0.05)
    picks: list[dict[int, str]] = []
    history = Federation(model, data, strategy, seed=0).run(
        4, progress=False, on_round=lambda _: picks.append(bms.assignment)
    )
    assert [r["selected"] for r in history.rounds] == [6, 3, 3, 3]
    assert all(math.isfinite(r["flexmod/val_accuracy"]) for r in history.rounds)
    _no_drops(history)
    # FlexMod, listed after BMSFed, schedules within BMSFed's choice: a client BMSFed picked to
    # train only the weak modality spends its whole budget on that modality alone.
    weak_only = [rec for rec in history.ledger.records if picks[rec.round - 1].get(rec.client_id) == "I"]
    assert weak_only, "no weak-modality pick to check (chi=1.0 should give some)"
    for rec in weak_only:
        assert len(rec.flops_by_combination) == 1 and "+" not in next(iter(rec.flops_by_combination))
        assert rec.steps >= 1


def test_a_schedule_listed_before_bmsfed_is_refused() -> None:
    # BMSFed replaces its weak-modality clients' combinations: listed after a schedule, it would
    # silently discard the schedule's allocation for them.
    for schedule in (FlexMod(beta=0.5), EntireUpdate()):
        with pytest.raises(ConfigError) as err:
            FedAvg([schedule, BMSFed()])
        assert str(err.value) == (
            f"techniques '{schedule.name}' and 'bmsfed' cannot be combined in this order: bmsfed "
            f"replaces the plan's 'combinations' for some clients, discarding what {schedule.name} "
            f"planned there; list bmsfed before {schedule.name}"
        )
    with pytest.raises(ConfigError, match="list bmsfed before layerwise"):
        FedAvg([LayerWise(), BMSFed()])


BMSFED_FEDMFS = (
    "techniques 'bmsfed' and 'fedmfs' cannot be combined: bmsfed needs the 'fusion' parameter group "
    "(its weak-modality and single-modality clients train encoder.<m>, fusion and head), but fedmfs "
    "builds its own model (a per-modality ensemble), which has no 'fusion' group"
)


@pytest.mark.parametrize(
    "techniques",
    [
        lambda: [BMSFed(clients_per_round=3), FedMFS(gamma=1)],
        lambda: [BMSFed(clients_per_round=3), FedMFS(gamma=1), FlexMod(beta=0.5)],
        lambda: [BMSFed(clients_per_round=3), FlexMod(beta=0.5), FedMFS(gamma=1)],
    ],
    ids=["bmsfed+fedmfs", "bmsfed+fedmfs+flexmod", "bmsfed+flexmod+fedmfs"],
)
def test_bmsfed_with_fedmfs_own_model_is_refused_before_any_round(techniques: Any) -> None:
    # Issue 15: BMSFed's weak-modality clients train 'fusion', which FedMFS's per-modality ensemble
    # lacks, so they were dropped every round while the run exited 0.
    data = _val_data()
    strategy = FedAvg(techniques(), lr=0.05)  # the techniques alone are no conflict ...
    with pytest.raises(ConfigError) as err:
        strategy.create_model(data, {})  # ... FedMFS's model is
    assert str(err.value) == BMSFED_FEDMFS
    with pytest.raises(ConfigError) as err:  # the same ensemble built by hand
        Federation(modality_ensemble(data.modalities, data.num_classes), data, strategy, seed=0)
    assert str(err.value) == BMSFED_FEDMFS


def test_bmsfed_with_fedmfs_on_late_fusion_runs_without_drops() -> None:
    # FedMFS on core's late-fusion model (model="late_fusion") has the 'fusion' group BMSFed trains.
    data = _val_data()
    fedmfs = FedMFS(gamma=1, model="late_fusion")
    strategy = FedAvg([BMSFed(clients_per_round=3, chi=1.0), fedmfs, FlexMod(beta=0.5)], lr=0.05)
    assert strategy.create_model(data, {}) is None
    torch.manual_seed(0)
    model = late_fusion(data.modalities, data.num_classes, encoders={"a": "mlp", "b": "mlp"})
    history = Federation(model, data, strategy, seed=0).run(3, progress=False)
    _no_drops(history)
    assert all(math.isfinite(r["accuracy"]) for r in history.rounds)


def test_flexmod_scheduling_with_layerwise_training() -> None:
    data = _val_data()
    model = _towers(data)
    strategy = FedAvg([FlexMod(beta=0.5), LayerWise(rounds_per_stage=2)], optimizer="adamw", lr=3e-3)
    history = Federation(model, data, strategy, seed=0).run(4, progress=False)
    rec = history.ledger.records[-1]
    assert set(rec.flops_by_combination) <= {"a+b", "a", "b"} and len(rec.flops_by_combination) >= 2
    assert {g for g in rec.groups_up if g.split(".")[-1].isdigit()} <= {"encoder.a.1", "encoder.b.1"}
    _no_drops(history)


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
    _no_drops(history)
