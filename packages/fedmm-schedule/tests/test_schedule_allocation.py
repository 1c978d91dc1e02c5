"""FlexMod's allocation maths against hand-solved cases."""

from __future__ import annotations

import numpy as np
import pytest

from fedmm.schedule.flexmod import (
    InfeasibleBudgetError,
    allocate,
    combination_factors,
    execution_order,
    integer_allocation,
    modality_combinations,
    water_filling,
)


def test_combinations_largest_first() -> None:
    assert modality_combinations(["a", "b", "c"]) == [
        ("a", "b", "c"),
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
        ("a",),
        ("b",),
        ("c",),
    ]


def test_factors_hand_computed() -> None:
    combos = [("a", "b"), ("a",), ("b",)]
    imp, need = {"a": 0.8, "b": 0.2}, {"a": 0.3, "b": 0.7}
    got = combination_factors(combos, imp, need, 0.25)
    # a_S = 0.25 Σφ̂ + 0.75 Σu
    assert got == pytest.approx([0.25 * 1.0 + 0.75 * 1.0, 0.25 * 0.8 + 0.75 * 0.3, 0.25 * 0.2 + 0.75 * 0.7])
    with pytest.raises(ValueError, match="beta"):
        combination_factors(combos, imp, need, 1.5)


def test_allocation_matches_the_hand_solution() -> None:
    # max 2 log(1+τ0) + log(1+τ1), τ0 + τ1 <= 5: KKT gives 2/(1+τ0) = 1/(1+τ1) → τ = (11/3, 4/3).
    tau = allocate([2.0, 1.0], [1.0, 1.0], 5.0, tau_max=10, tau_min=0)
    assert tau == pytest.approx([11 / 3, 4 / 3], abs=1e-4)
    assert water_filling([2.0, 1.0], [1.0, 1.0], 5.0, tau_max=10) == pytest.approx([11 / 3, 4 / 3], abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_allocation_satisfies_its_constraints_and_equals_the_closed_form(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.0, 2.0, 7)
    c = rng.uniform(1e8, 5e9, 7)  # FLOP-sized costs
    budget = float(c[0] * 6 + rng.uniform(0, 1) * c.sum())
    tau = allocate(a, c, budget, tau_max=12, tau_min=2)
    assert float(c @ tau) <= budget * (1 + 1e-9)
    assert np.all(tau >= 0) and np.all(tau <= 12) and tau[0] >= 2 - 1e-6
    closed = water_filling(a, c, budget, tau_max=12, tau_min=2)
    assert tau == pytest.approx(closed, abs=1e-2)
    steps = integer_allocation(tau, a, c, budget, tau_max=12)
    assert float(c @ steps) <= budget and np.all(steps <= 12) and steps.dtype.kind == "i"
    assert np.all(steps >= np.floor(tau + 1e-9))


def test_beta_extremes_follow_importance_or_need() -> None:
    combos = [("a", "b"), ("a",), ("b",)]
    imp, need = {"a": 0.9, "b": 0.1}, {"a": 0.2, "b": 0.8}
    costs = np.array([3.0, 1.0, 2.0])
    only_imp = allocate(combination_factors(combos, imp, need, 1.0), costs, 20.0, tau_max=20)
    only_need = allocate(combination_factors(combos, imp, need, 0.0), costs, 20.0, tau_max=20)
    assert only_imp[1] > only_imp[2]  # β = 1: importance only, modality a's combination wins
    assert only_need[2] > only_need[1]  # β = 0: training need only, modality b's combination wins
    # β = 1 equals allocating on importance sums alone.
    pure = allocate([1.0, 0.9, 0.1], costs, 20.0, tau_max=20)
    assert only_imp == pytest.approx(pure, abs=1e-4)


def test_infeasible_budget_is_a_clear_error() -> None:
    with pytest.raises(InfeasibleBudgetError, match="cannot pay for tau_min = 3 iterations"):
        allocate([1.0, 1.0], [10.0, 1.0], 25.0, tau_max=5, tau_min=3)


def test_execution_order_descends_in_cardinality() -> None:
    combos = [("a", "b"), ("a",), ("b",)]
    order = execution_order(combos, np.array([0.1, 0.2, 0.9]))
    assert [combos[i] for i in order] == [("a", "b"), ("b",), ("a",)]  # ties broken by a_S
