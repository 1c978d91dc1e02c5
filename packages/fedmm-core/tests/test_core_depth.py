"""Layered encoders at a reduced depth: the model, the client round and the engine's evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmm.core import FedAvg, Federation, RoundContext, Technique, TrainPlan, datasets
from fedmm.core.arrays import get_arrays, nbytes
from fedmm.core.client import client_round
from fedmm.core.data.types import FederatedDataset
from fedmm.core.errors import ConfigError
from fedmm.core.models import MultimodalModel, absent_groups, deepest, late_fusion, set_depth


@pytest.fixture
def data() -> FederatedDataset:
    return datasets.load("synthetic", clients=4, partition="iid", num_samples=200, test_samples=80, seed=0)


def _model(data: FederatedDataset, layers: int = 4) -> MultimodalModel:
    torch.manual_seed(0)
    opts = {m.name: {"layers": layers, "heads": 2, "tokens": 4, "projection": 16} for m in data.modalities}
    return late_fusion(
        data.modalities,
        data.num_classes,
        embed_dim=16,
        encoders={m.name: "transformer" for m in data.modalities},
        encoder_options=opts,
    )


def test_projection_head_is_its_own_group_and_sets_the_width(data: FederatedDataset) -> None:
    model = _model(data)
    groups = model.parameter_groups()
    assert "encoder.a.proj" in groups and "encoder.a.3" in groups
    batch = data.client(0).batch(np.arange(5))
    assert model(batch).embeddings["a"].shape == (5, 16)


def test_set_depth_skips_layers_and_validates(data: FederatedDataset) -> None:
    model = _model(data)
    batch = data.client(0).batch(np.arange(5))
    full = model(batch).logits
    assert set_depth(model, {"a": 2}) == {"a": 2, "b": 4}
    shallow = model(batch).logits
    assert not torch.allclose(full, shallow)
    # Changing a skipped layer changes nothing at depth 2.
    with torch.no_grad():
        for p in model.encoders["a"].layers[3].parameters():
            p.add_(1.0)
    assert torch.equal(model(batch).logits, shallow)
    assert absent_groups(model, {"a": 2}) == ("encoder.a.2", "encoder.a.3")
    assert set_depth(model, {}) == {"a": 4, "b": 4}
    with pytest.raises(ConfigError, match=r"integer in 0\.\.4"):
        set_depth(model, {"a": 5})
    with pytest.raises(ConfigError, match="no layered encoder"):
        set_depth(late_fusion(data.modalities, data.num_classes), {"a": 1})
    assert deepest(model, [{"a": 1, "b": 1}, {"a": 3, "b": 2}]) == {"a": 3, "b": 2}
    assert deepest(model, [{"a": 1}, {}]) == {}  # a plan without depth runs everything


def test_client_round_at_depth_sends_trains_and_uploads_only_existing_layers(data: FederatedDataset) -> None:
    model = _model(data)
    arrays = get_arrays(model)
    plan = TrainPlan(
        train=("encoder.a.1", "encoder.b.1", "encoder.a.proj", "encoder.b.proj", "fusion", "head"),
        depth={"a": 2, "b": 2},
    )
    result = client_round(
        model,
        arrays,
        plan,
        data.client(0),
        {},
        [],
        round_=1,
        seed=0,
        modalities=data.modalities,
        num_classes=data.num_classes,
    )
    assert set(result.update) == set(plan.train)
    absent = {"encoder.a.2", "encoder.a.3", "encoder.b.2", "encoder.b.3"}
    assert set(result.cost.groups_up) == set(plan.train)  # the ledger names what crossed
    assert not absent & set(result.cost.groups_down)
    assert result.cost.bytes_down == nbytes({g: v for g, v in arrays.items() if g not in absent})
    # Frozen layer 0 is bit-identical to what was sent; the trained layer moved.
    after = get_arrays(model)
    assert all(
        np.array_equal(after["encoder.a.0"][k], arrays["encoder.a.0"][k]) for k in arrays["encoder.a.0"]
    )
    assert any(
        not np.array_equal(result.update["encoder.a.1"][k], arrays["encoder.a.1"][k])
        for k in arrays["encoder.a.1"]
    )


def test_a_deeper_model_costs_more_flops_and_memory(data: FederatedDataset) -> None:
    costs = {}
    for depth in (1, 4):
        model = _model(data)
        plan = TrainPlan(depth={"a": depth, "b": depth}, optimizer="adamw", lr=1e-3)
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
        )
        costs[depth] = result.cost
    assert costs[4].flops > 2 * costs[1].flops
    assert costs[4].peak_bytes > costs[1].peak_bytes


class Grow(Technique):
    """Depth = round number (1, 2, ...): a toy layer-wise schedule."""

    name = "grow"

    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        d = min(ctx.round, 4)
        return plan.replace(depth={"a": d, "b": d})


def test_engine_evaluates_at_the_rounds_depth_and_leaves_the_model_there(data: FederatedDataset) -> None:
    fed = Federation(_model(data), data, FedAvg([Grow()], clients_per_round=2), seed=0)
    history = fed.run(2, progress=False)
    assert fed.depth == {"a": 2, "b": 2}
    assert fed.model.encoders["a"].depth == 2
    assert all(math.isfinite(r["accuracy"]) for r in history.rounds)
    # No client ever received layers 2 and 3.
    full = nbytes(fed.global_arrays)
    assert all(r.bytes_down < full for r in history.ledger.records)


def test_depth_survives_a_checkpoint(tmp_path: object, data: FederatedDataset) -> None:
    fed = Federation(_model(data), data, FedAvg([Grow()], clients_per_round=2), seed=0)
    fed.run(3, progress=False, checkpoint_dir=tmp_path, checkpoint_every=3)
    again = Federation(_model(data), data, FedAvg([Grow()], clients_per_round=2), seed=0)
    again.load_checkpoint(tmp_path)  # type: ignore[arg-type]
    assert again.depth == {"a": 3, "b": 3}


def test_train_plan_depth_round_trips() -> None:
    plan = TrainPlan(depth={"a": 2})
    assert TrainPlan.from_dict(plan.to_dict()) == plan
