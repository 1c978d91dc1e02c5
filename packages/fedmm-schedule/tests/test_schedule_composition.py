"""The schedules own the plan's combinations but keep within a restriction an earlier technique
set (BMSFed's weak-modality picks): listed after it they schedule those modalities only."""

from __future__ import annotations

import pytest
import torch

from fedmm.core import FedAvg, Federation, TrainPlan, datasets
from fedmm.core.data.types import FederatedDataset
from fedmm.core.errors import ConfigError
from fedmm.core.models import late_fusion
from fedmm.core.protocol import Combination, Technique
from fedmm.schedule import EntireUpdate, FlexMod, PartialUpdate

WEAK_ONLY = TrainPlan(train=("encoder.a", "fusion", "head"), combinations=(Combination(("a",)),))


@pytest.fixture(scope="module")
def fed() -> Federation:
    data: FederatedDataset = datasets.load(
        "synthetic",
        clients=3,
        partition="iid",
        num_samples=300,
        test_samples=60,
        validation_fraction=0.2,
        seed=0,
    )
    torch.manual_seed(0)
    model = late_fusion(
        data.modalities, data.num_classes, embed_dim=8, hidden=8, encoders={"a": "mlp", "b": "mlp"}
    )
    return Federation(model, data, FedAvg([FlexMod(beta=0.5)]), seed=0)


@pytest.mark.parametrize("schedule", [EntireUpdate, PartialUpdate, FlexMod], ids=lambda c: c.name)
def test_a_schedule_keeps_within_an_earlier_restriction(fed: Federation, schedule: type[Technique]) -> None:
    ctx = fed.context(1)
    tech = schedule()
    for client in range(3):
        free = tech.configure(ctx, client, TrainPlan())
        assert {m for c in free.combinations for m in c.modalities or ()} <= {"a", "b"}
        narrowed = tech.configure(ctx, client, WEAK_ONLY)
        assert [c.modalities for c in narrowed.combinations] == [("a",)], client
        assert (narrowed.combinations[0].steps or 0) >= 1
        assert narrowed.train == WEAK_ONLY.train


def test_flexmod_allocates_within_the_restriction_after_its_first_round(fed: Federation) -> None:
    flexmod = fed.strategy.techniques[0]
    fed.run(1, progress=False)  # now it has signals and allocates over combinations
    plan = flexmod.configure(fed.context(2), 0, WEAK_ONLY)
    assert [c.modalities for c in plan.combinations] == [("a",)]


def test_two_schedules_in_one_strategy_are_refused() -> None:
    with pytest.raises(ConfigError) as err:
        FedAvg([FlexMod(), EntireUpdate()])
    assert str(err.value) == (
        "techniques 'flexmod' and 'entire_update' cannot be combined: both own the plan's 'combinations' "
        "(each schedules a client's local steps over modality combinations), and a strategy can have "
        "only one owner"
    )
