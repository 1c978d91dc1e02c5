"""Per-group learning rates: ``TrainPlan.lr_by_group`` gives the optimiser one parameter group
per learning rate (group patterns resolved like the plan's other group fields)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from flwr.common import RecordDict

from fedmm.core import TrainPlan, datasets
from fedmm.core.arrays import GroupedArrays, get_arrays
from fedmm.core.client import client_round
from fedmm.core.data.types import FederatedDataset
from fedmm.core.errors import ConfigError
from fedmm.core.flower.codec import pack, unpack
from fedmm.core.models import MultimodalModel, late_fusion


@pytest.fixture
def data() -> FederatedDataset:
    return datasets.load("synthetic", clients=2, partition="iid", num_samples=60, test_samples=20, seed=0)


def _model(data: FederatedDataset) -> MultimodalModel:
    torch.manual_seed(0)
    return late_fusion(data.modalities, data.num_classes, encoders={"a": "mlp", "b": "mlp"})


def _one_step(data: FederatedDataset, plan: TrainPlan) -> tuple[GroupedArrays, GroupedArrays]:
    """The weights before and after one client round of a single full-batch step."""
    model = _model(data)
    before = get_arrays(model)
    client_round(
        model,
        before,
        plan.replace(batch_size=10_000, local_epochs=1),
        data.client(0),
        {},
        [],
        round_=1,
        seed=0,
        modalities=data.modalities,
        num_classes=data.num_classes,
    )
    return before, get_arrays(model)


def _delta(before: GroupedArrays, after: GroupedArrays, group: str) -> np.ndarray:
    return np.concatenate([(after[group][k] - before[group][k]).ravel() for k in sorted(before[group])])


def test_a_group_with_its_own_lr_takes_a_step_of_that_size(data: FederatedDataset) -> None:
    base = TrainPlan(optimizer="sgd", lr=0.1)
    b0, a0 = _one_step(data, base)
    b1, a1 = _one_step(data, base.replace(lr_by_group={"head": 0.3, "encoder.*": 0.05}))
    # SGD: the step is lr × gradient, and the gradient of one step from the same weights is the same.
    np.testing.assert_allclose(_delta(b1, a1, "head"), 3 * _delta(b0, a0, "head"), rtol=1e-4, atol=1e-7)
    for enc in ("encoder.a", "encoder.b"):
        np.testing.assert_allclose(_delta(b1, a1, enc), 0.5 * _delta(b0, a0, enc), rtol=1e-4, atol=1e-7)
    # A trainable group that no pattern names keeps the plan's lr.
    np.testing.assert_allclose(_delta(b1, a1, "fusion"), _delta(b0, a0, "fusion"), rtol=1e-6, atol=1e-7)
    assert np.abs(_delta(b0, a0, "head")).max() > 0


def test_the_last_pattern_that_names_a_group_gives_its_lr(data: FederatedDataset) -> None:
    base = TrainPlan(optimizer="sgd", lr=0.1)
    b0, a0 = _one_step(data, base)
    b1, a1 = _one_step(data, base.replace(lr_by_group={"*": 0.2, "encoder.a": 0.4}))
    np.testing.assert_allclose(
        _delta(b1, a1, "encoder.a"), 4 * _delta(b0, a0, "encoder.a"), rtol=1e-4, atol=1e-7
    )
    np.testing.assert_allclose(_delta(b1, a1, "head"), 2 * _delta(b0, a0, "head"), rtol=1e-4, atol=1e-7)


def test_without_lr_by_group_a_round_is_unchanged(data: FederatedDataset) -> None:
    plan = TrainPlan(optimizer="adamw", lr=1e-2)
    _, a0 = _one_step(data, plan)
    _, a1 = _one_step(data, plan.replace(lr_by_group={"*": 1e-2}))
    assert all(np.array_equal(a0[g][k], a1[g][k]) for g in a0 for k in a0[g])


def test_lr_by_group_round_trips_as_plain_data() -> None:
    plan = TrainPlan(lr=0.1, lr_by_group={"encoder.*": 1e-4, "head": 3e-3})
    assert TrainPlan.from_dict(plan.to_dict()) == plan
    back = TrainPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert back == plan and list(back.lr_by_group) == ["encoder.*", "head"]  # order kept: last wins
    content = RecordDict()
    pack(content, "fedmm.plan", plan.to_dict())
    assert TrainPlan.from_dict(unpack(content, "fedmm.plan")) == plan
    # A plan written before the field existed still reads.
    old = plan.to_dict()
    del old["lr_by_group"]
    assert TrainPlan.from_dict(old).lr_by_group == {}


@pytest.mark.parametrize("bad", [0.0, -1e-3, math.inf, math.nan, "fast", True])
def test_a_bad_group_lr_is_refused_naming_it(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"lr_by_group\['head'\]"):
        TrainPlan(lr_by_group={"head": bad})  # type: ignore[dict-item]


def test_a_bad_pattern_is_refused() -> None:
    with pytest.raises(ConfigError, match="lr_by_group"):
        TrainPlan(lr_by_group={"": 0.1})


def test_a_pattern_that_matches_no_group_is_refused_naming_it(data: FederatedDataset) -> None:
    with pytest.raises(ConfigError, match=r"lr_by_group.*'decoder'.*matches nothing"):
        _one_step(data, TrainPlan(lr_by_group={"decoder": 0.1}))
