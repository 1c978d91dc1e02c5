"""Techniques declare what they need from the model and what they own; a combination that cannot
work is refused when the strategy or the federation is built, naming both techniques and why."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from fedmm.core import FedAvg, Federation, models
from fedmm.core.data.types import FederatedDataset
from fedmm.core.errors import ConfigError
from fedmm.core.protocol import BuiltModel, Combination, ModelNeeds, RoundContext, Technique, TrainPlan


class TrainsFusion(Technique):
    """Trains encoder, fusion and head groups (as BMSFed's weak-modality clients do)."""

    name: ClassVar[str] = "trains_fusion"
    needs: ClassVar[ModelNeeds] = ModelNeeds(
        groups=("encoder.{m}", "fusion", "head"), why="its clients train encoder.<m>, fusion and head"
    )


class Ensemble(Technique):
    """Builds a model whose only groups are one per modality (as FedMFS's ensemble)."""

    name: ClassVar[str] = "ensemble"
    builds: ClassVar[BuiltModel | None] = BuiltModel("a per-modality ensemble", groups=("encoder.{m}",))
    built = 0

    def create_model(self, data: FederatedDataset, options: Mapping[str, Any]) -> nn.Module | None:
        Ensemble.built += 1
        return _ensemble(data)


class MaybeEnsemble(Ensemble):
    """Builds the ensemble only when asked to (an argument decides, as FedMFS's ``model``)."""

    name: ClassVar[str] = "maybe_ensemble"

    def __init__(self, build: bool) -> None:
        self.build = build

    def builds_model(self) -> BuiltModel | None:
        return self.builds if self.build else None

    def create_model(self, data: FederatedDataset, options: Mapping[str, Any]) -> nn.Module | None:
        return _ensemble(data) if self.build else None


class OtherBuilder(Technique):
    name: ClassVar[str] = "other_builder"
    builds: ClassVar[BuiltModel | None] = BuiltModel(
        "a joint encoder", groups=("encoder.{m}", "fusion", "head")
    )

    def create_model(self, data: FederatedDataset, options: Mapping[str, Any]) -> nn.Module | None:
        return models.late_fusion(data.modalities, data.num_classes, encoders={"a": "mlp", "b": "mlp"})


class Layered(Technique):
    name: ClassVar[str] = "layered"
    needs: ClassVar[ModelNeeds] = ModelNeeds(
        layered_encoders=True, why="it trains them layer by layer", hint='use encoder kind "transformer"'
    )


class Schedule(Technique):
    """Owns the plan's combinations (as FlexMod), keeping within what earlier techniques chose."""

    name: ClassVar[str] = "schedule"
    owns: ClassVar[frozenset[str]] = frozenset({"combinations"})

    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        return plan.replace(combinations=(Combination(None, 2),))


class OtherSchedule(Schedule):
    name: ClassVar[str] = "other_schedule"


class PicksModality(Technique):
    """Replaces some clients' train groups and combinations (as BMSFed's weak-modality picks)."""

    name: ClassVar[str] = "picks_modality"
    overwrites: ClassVar[frozenset[str]] = frozenset({"train", "combinations"})


class NarrowsTrain(Technique):
    """Narrows the train groups earlier techniques chose (as LayerWise)."""

    name: ClassVar[str] = "narrows_train"
    writes: ClassVar[frozenset[str]] = frozenset({"train"})


def _ensemble(data: FederatedDataset) -> nn.Module:
    """A model with one group per modality, ``encoder.<m>``, and nothing else."""

    class Ens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoders = nn.ModuleDict({m.name: nn.Linear(2, 2) for m in data.modalities})

        def parameter_groups(self) -> dict[str, tuple[str, ...]]:
            return {f"encoder.{m}": (f"encoders.{m}.weight", f"encoders.{m}.bias") for m in self.encoders}

    return Ens()


def _late_fusion(data: FederatedDataset) -> nn.Module:
    torch.manual_seed(0)
    return models.late_fusion(data.modalities, data.num_classes, encoders={"a": "mlp", "b": "mlp"})


def test_a_technique_needing_a_group_the_built_model_lacks_is_refused_before_it_is_built(
    small_data: FederatedDataset,
) -> None:
    strategy = FedAvg([TrainsFusion(), Ensemble()])  # nothing about the model is known yet
    Ensemble.built = 0
    message = (
        "techniques 'trains_fusion' and 'ensemble' cannot be combined: trains_fusion needs the 'fusion' "
        "parameter group (its clients train encoder.<m>, fusion and head), but ensemble builds its own "
        "model (a per-modality ensemble), which has no 'fusion' group"
    )
    with pytest.raises(ConfigError) as err:
        strategy.create_model(small_data, {})
    assert str(err.value) == message
    assert Ensemble.built == 0  # refused from the declaration, before any work
    # Built another way (e.g. by hand), the same model is refused when the federation is built.
    with pytest.raises(ConfigError) as err:
        Federation(_ensemble(small_data), small_data, strategy)
    assert str(err.value) == message


def test_the_same_pair_runs_on_a_model_that_has_the_group(small_data: FederatedDataset) -> None:
    # The builder's model is not used: the late-fusion model has every group the other needs.
    fed = Federation(_late_fusion(small_data), small_data, FedAvg([TrainsFusion(), Ensemble()]))
    assert "fusion" in fed.groups
    # A builder that, with these arguments, builds nothing is neither refused nor asked for a model.
    strategy = FedAvg([TrainsFusion(), MaybeEnsemble(build=False), OtherBuilder()])
    model = strategy.create_model(small_data, {})
    assert model is not None and "fusion" in dict(model.named_children())
    Federation(model, small_data, strategy)


def test_a_model_lacking_a_needed_group_is_refused_with_its_groups(small_data: FederatedDataset) -> None:
    with pytest.raises(ConfigError) as err:
        Federation(_ensemble(small_data), small_data, FedAvg([TrainsFusion()]))
    assert str(err.value) == (
        "technique 'trains_fusion' cannot run on this model: it needs the 'fusion' parameter group (its "
        "clients train encoder.<m>, fusion and head), but the model has no 'fusion' group; its groups "
        "are encoder.a, encoder.b"
    )


def test_layered_encoders_are_checked_against_the_builder_and_the_model(small_data: FederatedDataset) -> None:
    with pytest.raises(ConfigError) as err:
        FedAvg([Ensemble(), Layered()]).create_model(small_data, {})
    assert str(err.value) == (
        "techniques 'ensemble' and 'layered' cannot be combined: layered needs layered encoders (groups "
        "encoder.<m>.<i>; it trains them layer by layer), but ensemble builds its own model (a "
        "per-modality ensemble), which has none"
    )
    with pytest.raises(ConfigError) as err:
        Federation(_late_fusion(small_data), small_data, FedAvg([Layered()]))
    assert str(err.value) == (
        "technique 'layered' cannot run on this model: it needs layered encoders (groups encoder.<m>.<i>; "
        'it trains them layer by layer), but the model has none; use encoder kind "transformer"'
    )
    torch.manual_seed(0)
    towers = models.late_fusion(
        small_data.modalities,
        small_data.num_classes,
        encoders={"a": "transformer", "b": "mlp"},
        encoder_options={"a": {"layers": 2, "heads": 2, "tokens": 4}},
    )
    Federation(towers, small_data, FedAvg([Layered()]))


def test_two_builders_are_refused_unless_one_builds_nothing() -> None:
    with pytest.raises(ConfigError) as err:
        FedAvg([Ensemble(), OtherBuilder()])
    assert str(err.value) == (
        "techniques 'ensemble' and 'other_builder' cannot be combined: both build the model (ensemble: "
        "a per-modality ensemble; other_builder: a joint encoder), and a strategy uses one model"
    )
    FedAvg([MaybeEnsemble(build=False), OtherBuilder()])


def test_two_owners_of_the_plans_combinations_are_refused() -> None:
    with pytest.raises(ConfigError) as err:
        FedAvg([Schedule(), OtherSchedule()])
    assert str(err.value) == (
        "techniques 'schedule' and 'other_schedule' cannot be combined: both own the plan's "
        "'combinations' (each schedules a client's local steps over modality combinations), and a "
        "strategy can have only one owner"
    )


def test_a_technique_overwriting_what_an_earlier_one_planned_is_refused_in_that_order() -> None:
    with pytest.raises(ConfigError) as err:
        FedAvg([Schedule(), PicksModality()])
    assert str(err.value) == (
        "techniques 'schedule' and 'picks_modality' cannot be combined in this order: picks_modality "
        "replaces the plan's 'combinations' for some clients, discarding what schedule planned there; "
        "list picks_modality before schedule"
    )
    with pytest.raises(ConfigError, match="list picks_modality before narrows_train"):
        FedAvg([NarrowsTrain(), PicksModality()])
    FedAvg([PicksModality(), Schedule(), NarrowsTrain()])  # later ones keep within its choice


class ChecksFederation(Technique):
    """Refuses, when it meets the federation, data with fewer modalities than it asks for (as
    FedMFS's ``gamma``); records what it saw."""

    name: ClassVar[str] = "checks_federation"
    seen: ClassVar[list[tuple[int, tuple[str, ...]]]] = []

    def __init__(self, wants: int) -> None:
        self.wants = wants

    def check_federation(self, model: nn.Module, data: FederatedDataset) -> None:
        names = tuple(m.name for m in data.modalities)
        ChecksFederation.seen.append((sum(p.numel() for p in model.parameters()), names))
        if self.wants > len(names):
            raise ConfigError(f"checks_federation: wants {self.wants} modalities, the data has {len(names)}")


def test_a_technique_checks_the_federation_before_round_1(small_data: FederatedDataset) -> None:
    model = _late_fusion(small_data)
    ChecksFederation.seen.clear()
    fed = Federation(model, small_data, FedAvg([ChecksFederation(2)]))
    assert ChecksFederation.seen == [(sum(p.numel() for p in model.parameters()), ("a", "b"))]
    assert fed.round == 0
    # A model built by hand gets the same check: refused when the federation is built.
    with pytest.raises(ConfigError, match="wants 3 modalities, the data has 2"):
        Federation(model, small_data, FedAvg([ChecksFederation(3)]))
