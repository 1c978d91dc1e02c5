"""FedMFS's checks before round 1 (γ against M, a priority the Shapley values cannot move) and its
plain-mean aggregation option."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence

import numpy as np
import pytest

from fedmm.core.arrays import GroupedArrays
from fedmm.core.config import parse_config
from fedmm.core.data.registry import federate
from fedmm.core.data.synthetic import make_synthetic
from fedmm.core.data.types import FederatedDataset
from fedmm.core.errors import ConfigError
from fedmm.core.federation import Federation
from fedmm.core.ledger import ClientCost
from fedmm.core.protocol import (
    ClientResult,
    FedAvg,
    ResultsContext,
    RoundContext,
    Technique,
    check_techniques,
)
from fedmm.core.runner import build_federation
from fedmm.select.baselines.random_upload import RandomUpload
from fedmm.select.fedmfs import FedMFS, FedMFSWarning, modality_ensemble, priority, top_gamma
from fedmm.select.fedmfs.priority import shapley_can_change_choice, size_gap

# -- the condition, as a pure function ------------------------------------------------------------


def test_select_fedmfs_size_gap_and_condition_hand_computed() -> None:
    two = np.array([100.0, 1000.0])
    both = np.ones(2, dtype=bool)
    # Two models of different sizes: ŝ = [0, 1], gap 1; α_s = α_c can at most tie, so size decides.
    assert size_gap(two, both, 1) == 1.0
    assert not shapley_can_change_choice(two, both, 1, 0.5, 0.5)
    assert not shapley_can_change_choice(two, both, 1, 0.3, 0.7)
    assert shapley_can_change_choice(two, both, 1, 0.6, 0.4)
    # Equal sizes: gap 0, any α_s > 0 lets the Shapley values decide; α_s = 0 never.
    assert size_gap(np.array([50.0, 50.0]), both, 1) == 0.0
    assert shapley_can_change_choice(np.array([50.0, 50.0]), both, 1, 0.01, 0.99)
    assert not shapley_can_change_choice(np.array([50.0, 50.0]), both, 1, 0.0, 1.0)
    # Three: ŝ = [0, 1/3, 1]; γ = 1 boundary 0 → 1/3, γ = 2 boundary 1/3 → 1.
    three = np.array([100.0, 200.0, 400.0])
    all3 = np.ones(3, dtype=bool)
    assert size_gap(three, all3, 1) == pytest.approx(1 / 3)
    assert size_gap(three, all3, 2) == pytest.approx(2 / 3)
    assert not shapley_can_change_choice(three, all3, 1, 0.1, 0.5)  # 0.1 <= 0.5/3
    assert shapley_can_change_choice(three, all3, 1, 0.2, 0.5)  # 0.2 > 0.5/3
    assert not shapley_can_change_choice(three, all3, 2, 0.3, 0.5)  # 0.3 <= 0.5·2/3
    assert shapley_can_change_choice(three, all3, 2, 0.34, 0.5)
    # No choice (γ >= the modalities the client owns): nothing can change it.
    assert size_gap(three, all3, 3) is None
    assert not shapley_can_change_choice(three, all3, 3, 1.0, 0.0)
    # Normalised over the client's own modalities: without the middle one, ŝ = [0, ·, 1].
    owned = np.array([True, False, True])
    assert size_gap(three, owned, 1) == 1.0
    assert not shapley_can_change_choice(three, owned, 1, 0.5, 0.5)


def test_select_fedmfs_condition_matches_every_extreme_shapley_vector() -> None:
    # The priority is linear in ϕ̂, so the Shapley values that move the choice most are 0/1
    # vectors; the condition must say "can change" exactly when one of them does. Shapley
    # values of order 1 against parameter counts of order 100+ (as in practice).
    rng = np.random.default_rng(0)
    cases = [(np.array([100.0, 1000.0]), 1, 0.5, 0.5), (np.array([100.0, 100.0, 400.0]), 1, 0.2, 0.8)]
    for _ in range(300):
        k = int(rng.integers(2, 6))
        sizes = rng.choice([100.0, 200.0, 350.0, 800.0, 1500.0], size=k)
        a_s, a_c = (float(x) for x in rng.choice([0.0, 0.1, 0.25, 0.5, 0.75, 1.0], size=2))
        if a_s == a_c == 0:
            continue
        cases.append((sizes, int(rng.integers(1, k + 1)), a_s, a_c))
    for sizes, gamma, a_s, a_c in cases:
        avail = np.ones(sizes.shape[0], dtype=bool)
        size_only = top_gamma(priority(np.zeros_like(sizes), sizes, avail, a_s, a_c), avail, gamma)
        moved = any(
            top_gamma(priority(np.array(v, dtype=np.float64), sizes, avail, a_s, a_c), avail, gamma)
            != size_only
            for v in itertools.product((0.0, 1.0), repeat=sizes.shape[0])
        )
        assert shapley_can_change_choice(sizes, avail, gamma, a_s, a_c) == moved, (sizes, gamma, a_s, a_c)


# -- the warning, when the technique meets the federation -------------------------------------------


def _data(dims: tuple[int, int] = (4, 96), unimodal_fraction: float = 0.0) -> FederatedDataset:
    central = make_synthetic(
        200, num_classes=3, modalities=[("small", dims[0], 1.0), ("large", dims[1], 0.0)], seed=1
    )
    return federate(central, clients=3, unimodal_fraction=unimodal_fraction, seed=0)


def _federation(data: FederatedDataset, technique: Technique) -> Federation:
    model = modality_ensemble(data.modalities, data.num_classes)
    return Federation(model, data, FedAvg([technique]), seed=0)


def _fedmfs_warnings(data: FederatedDataset, technique: Technique) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _federation(data, technique)
    return [w for w in caught if issubclass(w.category, FedMFSWarning)]


def test_select_fedmfs_warns_when_the_shapley_values_cannot_change_the_choice() -> None:
    data = _data()
    # Two models of different sizes, α_s = α_c (the defaults): the smaller always goes up.
    with pytest.warns(FedMFSWarning, match=r"the Shapley values cannot change which modality models") as rec:
        _federation(data, FedMFS(gamma=1))
    message = str(rec[0].message)
    assert "alpha_s = 0.5" in message and "alpha_c = 0.5" in message and "gamma = 1" in message
    assert "raise alpha_s above 0.5" in message
    # Clients holding one modality have no choice; the others still decide by size alone.
    assert len(_fedmfs_warnings(_data(unimodal_fraction=0.5), FedMFS(gamma=1))) == 1


@pytest.mark.parametrize(
    ("dims", "technique"),
    [
        ((4, 96), FedMFS(gamma=1, alpha_s=0.6, alpha_c=0.4)),  # Shapley can outweigh the size term
        ((8, 8), FedMFS(gamma=1)),  # equal sizes: the Shapley values decide
        ((4, 96), FedMFS(gamma=1, alpha_s=0.0, alpha_c=1.0)),  # size alone, asked for
        ((4, 96), FedMFS(gamma=2)),  # γ = M: every model goes up, nothing is chosen
        ((4, 96), RandomUpload(gamma=1)),  # no priority
    ],
)
def test_select_fedmfs_no_warning_where_the_shapley_values_can_matter(
    dims: tuple[int, int], technique: Technique
) -> None:
    assert _fedmfs_warnings(_data(dims), technique) == []


# -- γ > M, refused before round 1 ----------------------------------------------------------------


@pytest.mark.parametrize("technique", [FedMFS(gamma=3), RandomUpload(gamma=3)])
def test_select_fedmfs_gamma_above_modalities_refused_when_the_federation_is_built(
    technique: Technique,
) -> None:
    # A model built by hand: create_model never runs, so the federation's check is the first.
    with pytest.raises(
        ConfigError,
        match=r"gamma = 3 exceeds the number of modalities \(2: small, large\); use 1 <= gamma <= 2",
    ):
        _federation(_data(), technique)


def test_select_fedmfs_gamma_above_modalities_refused_from_toml_with_core_model() -> None:
    # model = "late_fusion": FedMFS builds nothing, so only the federation's check sees M.
    cfg = parse_config(
        {
            "run": {"rounds": 1},
            "data": {"name": "synthetic", "clients": 2, "options": {"num_samples": 60, "num_classes": 3}},
            "techniques": [{"name": "fedmfs", "gamma": 3, "model": "late_fusion"}],
        }
    )
    with pytest.raises(ConfigError, match=r"FedMFS: gamma = 3 exceeds the number of modalities \(2: a, b\)"):
        build_federation(cfg, progress=False)


# -- plain-mean aggregation ----------------------------------------------------------------------


def _results_context() -> ResultsContext:
    previous = {
        "encoder.a": {"w": np.array([0.0, 0.0], dtype=np.float32)},
        "encoder.b": {"w": np.array([10.0], dtype=np.float32)},
        "encoder.c": {"w": np.array([7.0], dtype=np.float32)},
    }
    uploads = [
        (1, {"encoder.a": {"w": np.array([1.0, 2.0], dtype=np.float32)}}),
        (
            3,
            {
                "encoder.a": {"w": np.array([3.0, 6.0], dtype=np.float32)},
                "encoder.b": {"w": np.array([2.0], dtype=np.float32)},
            },
        ),
        (6, {"encoder.b": {"w": np.array([8.0], dtype=np.float32)}}),
    ]
    results = [
        ClientResult(cid, n, update, {}, {}, {}, ClientCost()) for cid, (n, update) in enumerate(uploads)
    ]
    ctx = RoundContext(
        round=1,
        global_arrays=previous,
        groups={g: ("w",) for g in previous},
        num_clients=3,
        client_sizes=np.array([1, 3, 6]),
        modalities=(),
        num_classes=2,
        rng=np.random.default_rng(0),
    )
    return ctx.with_results(results)


def test_select_fedmfs_plain_mean_aggregation_hand_computed() -> None:
    ctx = _results_context()
    mean = FedAvg([FedMFS(aggregation="mean")]).aggregate(ctx, ctx.results)
    # Each group over its uploaders, every uploader weighing 1: a = ([1,2]+[3,6])/2, b = (2+8)/2.
    np.testing.assert_allclose(mean["encoder.a"]["w"], [2.0, 4.0])
    np.testing.assert_allclose(mean["encoder.b"]["w"], [5.0])
    np.testing.assert_array_equal(mean["encoder.c"]["w"], [7.0])  # nobody uploaded it
    assert mean["encoder.a"]["w"].dtype == np.float32
    # The default stays core's sample-weighted FedAvg: a = (1·[1,2] + 3·[3,6])/4, b = (3·2 + 6·8)/9.
    weighted = FedAvg([FedMFS()]).aggregate(ctx, ctx.results)
    np.testing.assert_allclose(weighted["encoder.a"]["w"], [2.5, 5.0])
    np.testing.assert_allclose(weighted["encoder.b"]["w"], [6.0])
    # The random baseline shares the option, so its arm can aggregate like FedMFS's.
    rand = FedAvg([RandomUpload(aggregation="mean")]).aggregate(ctx, ctx.results)
    np.testing.assert_allclose(rand["encoder.b"]["w"], [5.0])


class _OwnAggregate(Technique):
    name = "own_aggregate"

    def aggregate(self, ctx: ResultsContext, results: Sequence[ClientResult]) -> GroupedArrays | None:
        return None


def test_select_fedmfs_plain_mean_owns_the_aggregate_step_only_when_chosen() -> None:
    assert "aggregate" in FedMFS(aggregation="mean").owned()
    assert "aggregate" not in FedMFS().owned()
    check_techniques([FedMFS(), _OwnAggregate()])  # weighted: core's FedAvg, nothing owned
    with pytest.raises(ConfigError, match="both own the 'aggregate' step"):
        check_techniques([FedMFS(aggregation="mean"), _OwnAggregate()])
    assert FedMFS(aggregation="mean").config()["aggregation"] == "mean"
    with pytest.raises(ConfigError, match="aggregation must be one of 'weighted', 'mean'"):
        FedMFS(aggregation="median")
