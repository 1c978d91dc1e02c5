"""Per-stage and per-module learning rates (``lr_per_stage``, ``head_lr``): the paper's recipe
trains each stage's encoder layers at the stage's rate and the heads at their own."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch

from fedmm.core import FedAvg, Federation, TrainPlan, datasets
from fedmm.core.data.types import FederatedDataset
from fedmm.core.errors import ConfigError
from fedmm.core.models import MultimodalModel, late_fusion
from fedmm.layerwise import LayerWise

LAYERS = 4
STAGE_LRS = (1e-4, 2e-4, 3e-4, 4e-4)
HEAD_LR = 5e-3
HEADS = {"encoder.a.proj", "encoder.b.proj", "fusion", "head"}


@pytest.fixture
def data() -> FederatedDataset:
    return datasets.load("synthetic", clients=2, partition="iid", num_samples=80, test_samples=20, seed=0)


def _model(data: FederatedDataset) -> MultimodalModel:
    torch.manual_seed(0)
    opts = {"layers": LAYERS, "heads": 2, "tokens": 4, "projection": 16}
    return late_fusion(
        data.modalities,
        data.num_classes,
        embed_dim=16,
        hidden=16,
        encoders={m.name: "transformer" for m in data.modalities},
        encoder_options={m.name: opts for m in data.modalities},
    )


def _plan(data: FederatedDataset, round_: int, **kw: Any) -> TrainPlan:
    tech = LayerWise(rounds_per_stage=2, **kw)
    fed = Federation(_model(data), data, FedAvg([tech], optimizer="adamw", lr=1e-3), seed=0)
    return fed.strategy.configure(fed.context(round_), 0)


def _parts(*parts: str) -> set[str]:
    return {f"encoder.{m}.{p}" for m in ("a", "b") for p in parts}


def test_an_lw_client_trains_its_stage_block_at_the_stages_rate(data: FederatedDataset) -> None:
    plan = _plan(data, 5, mode="lw", lr_per_stage=list(STAGE_LRS), head_lr=HEAD_LR)  # round 5: stage 3
    assert plan.lr == 1e-3  # the strategy's rate, for any group not named
    assert plan.lr_by_group == {
        **dict.fromkeys(_parts("2", "norm"), 3e-4),
        **dict.fromkeys(HEADS, HEAD_LR),
    }
    assert set(plan.lr_by_group) == set(plan.train)
    stage1 = _plan(data, 1, mode="lw", lr_per_stage=list(STAGE_LRS), head_lr=HEAD_LR)
    assert stage1.lr_by_group == {
        **dict.fromkeys(_parts("embed", "0", "norm"), 1e-4),
        **dict.fromkeys(HEADS, HEAD_LR),
    }


def test_a_prog_client_trains_every_grown_layer_at_the_stages_rate(data: FederatedDataset) -> None:
    plan = _plan(data, 3, mode="prog", lr_per_stage=list(STAGE_LRS), head_lr=HEAD_LR)  # stage 2
    assert plan.lr_by_group == {
        **dict.fromkeys(_parts("embed", "0", "1", "norm"), 2e-4),
        **dict.fromkeys(HEADS, HEAD_LR),
    }


def test_e2e_is_one_stage(data: FederatedDataset) -> None:
    plan = _plan(data, 3, mode="e2e", lr_per_stage=[1e-4], head_lr=HEAD_LR)
    assert plan.lr_by_group == {
        **dict.fromkeys(_parts("embed", "0", "1", "2", "3", "norm"), 1e-4),
        **dict.fromkeys(HEADS, HEAD_LR),
    }
    with pytest.raises(ConfigError, match=r"layerwise: lr_per_stage .*one stage"):
        LayerWise(mode="e2e", lr_per_stage=list(STAGE_LRS))


def test_by_default_one_rate_and_each_argument_alone(data: FederatedDataset) -> None:
    assert _plan(data, 5, mode="lw").lr_by_group == {}
    assert _plan(data, 5, mode="lw", head_lr=HEAD_LR).lr_by_group == dict.fromkeys(HEADS, HEAD_LR)
    assert _plan(data, 5, mode="lw", lr_per_stage=list(STAGE_LRS)).lr_by_group == dict.fromkeys(
        _parts("2", "norm"), 3e-4
    )


def test_the_rates_reach_the_clients_optimiser(data: FederatedDataset) -> None:
    tech = LayerWise(mode="lw", rounds_per_stage=1, lr_per_stage=[1e-3, 2e-3, 3e-3, 4e-3], head_lr=1e-2)
    fed = Federation(_model(data), data, FedAvg([tech], optimizer="adamw", lr=1e-3), seed=0)
    history = fed.run(2, progress=False)
    assert all(not r.get("dropped") for r in history.rounds)
    assert all(math.isfinite(r["train_loss"]) for r in history.rounds)


def test_the_rates_round_trip_through_config() -> None:
    tech = LayerWise(mode="prog", rounds_per_stage=[0, 2, 3], lr_per_stage=[1e-7, 1e-5, 3e-5], head_lr=1e-4)
    cfg = tech.config()
    assert cfg["lr_per_stage"] == [1e-7, 1e-5, 3e-5] and cfg["head_lr"] == 1e-4
    assert LayerWise(**json.loads(json.dumps(cfg))).config() == cfg
    from fedmm.core.config import build_technique, parse_config

    raw = {"data": {"name": "synthetic"}, "techniques": [{"name": "layerwise", **cfg}]}
    built = build_technique(parse_config(raw).techniques[0])
    assert isinstance(built, LayerWise) and built.config() == cfg
    assert LayerWise().config()["lr_per_stage"] is None and LayerWise().config()["head_lr"] is None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"rounds_per_stage": [1, 1, 1, 1], "lr_per_stage": [1e-3]},
            "layerwise: lr_per_stage gives 1 learning rate for 4 stages",
        ),
        ({"lr_per_stage": []}, "layerwise: lr_per_stage must give one learning rate per stage"),
        ({"lr_per_stage": [1e-3, 0.0]}, "layerwise: lr_per_stage must be a list of finite numbers > 0"),
        ({"lr_per_stage": [math.nan]}, "layerwise: lr_per_stage must be a list of finite numbers > 0"),
        ({"lr_per_stage": 1e-3}, "layerwise: lr_per_stage must be a list of finite numbers > 0"),
        ({"head_lr": -1.0}, "layerwise: head_lr must be a finite number > 0"),
        ({"head_lr": math.inf}, "layerwise: head_lr must be a finite number > 0"),
    ],
)
def test_bad_rates_are_refused_naming_the_argument(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        LayerWise(**arguments)
    assert message in str(info.value)


def test_a_list_that_does_not_fit_the_grown_schedule_is_refused(data: FederatedDataset) -> None:
    # An int rounds_per_stage: the stages are known from the model (4 layers, 1 per stage).
    with pytest.raises(ConfigError, match=r"lr_per_stage gives 2 learning rates, but .* 4 stages"):
        _plan(data, 1, mode="lw", lr_per_stage=[1e-3, 1e-3])
