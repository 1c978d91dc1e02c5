"""FlexMod's allocation maths: hand-solved cases, its constraints, and β on unequal-cost encoders."""

from __future__ import annotations

import numpy as np
import pytest

from fedmm.schedule.flexmod import (
    InfeasibleBudgetError,
    allocate,
    combination_weights,
    encoder_credits,
    execution_order,
    integer_allocation,
    modality_combinations,
    modality_weights,
    utility,
)

MODS = ["a", "b"]
COMBOS = [("a", "b"), ("a",), ("b",)]


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


def test_weights_hand_computed() -> None:
    imp, need = {"a": 0.8, "b": 0.2}, {"a": 0.3, "b": 0.7}
    expected = [0.25 * 0.8 + 0.75 * 0.3, 0.25 * 0.2 + 0.75 * 0.7]
    assert modality_weights(MODS, imp, need, 0.25) == pytest.approx(expected)
    with pytest.raises(ValueError, match="beta"):
        modality_weights(MODS, imp, need, 1.5)


def test_credits_discount_the_modality_a_joint_step_barely_uses() -> None:
    credits = encoder_credits(COMBOS, MODS, {"a": 0.9, "b": 0.1})
    # Joint step: a gets min(1, 2·0.9/1.0) = 1, b gets 2·0.1 = 0.2; alone, each gets 1.
    assert credits == pytest.approx(np.array([[1.0, 1.0, 0.0], [0.2, 0.0, 1.0]]))
    balanced = encoder_credits(COMBOS, MODS, {"a": 0.5, "b": 0.5})
    assert balanced == pytest.approx(encoder_credits(COMBOS, MODS, None))
    assert balanced == pytest.approx(np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]]))
    assert combination_weights(np.array([0.3, 0.7]), balanced) == pytest.approx([1.0, 0.3, 0.7])


def test_allocation_matches_the_hand_solution() -> None:
    # One modality per combination (no joint step to share): max 2 log(1+τ0) + log(1+τ1), τ0 + τ1 <= 5
    # → KKT 2/(1+τ0) = 1/(1+τ1) → τ = (11/3, 4/3).
    credits = np.eye(2)
    tau = allocate([2.0, 1.0], credits, [1.0, 1.0], 5.0, tau_max=10, tau_min=0)
    assert tau == pytest.approx([11 / 3, 4 / 3], abs=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_allocation_is_optimal_within_its_constraints(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mods = ["a", "b", "c"]
    combos = modality_combinations(mods)
    imp = dict(zip(mods, rng.dirichlet(np.ones(3)).tolist(), strict=True))
    w = rng.dirichlet(np.ones(3))
    credits = encoder_credits(combos, mods, imp)
    c = rng.uniform(1e8, 5e9, len(combos))  # FLOP-sized costs
    c[0] = c.max() * 1.2
    budget = float(c[0] * 20)
    tau = allocate(w, credits, c, budget, tau_max=40, tau_min=5, floor=4)
    assert float(c @ tau) <= budget * (1 + 1e-9)
    assert np.all(tau >= -1e-9) and np.all(tau <= 40 + 1e-6) and tau[0] >= 5 - 1e-6
    assert np.all(credits @ tau >= 4 - 1e-4)
    # No feasible move along a random direction improves the objective (a local check of optimality).
    best = utility(w, credits, tau)
    for _ in range(200):
        other = np.clip(tau + rng.normal(0, 0.5, tau.size), 0, 40)
        other[0] = max(other[0], 5)
        if float(c @ other) <= budget and np.all(credits @ other >= 4):
            assert utility(w, credits, other) <= best + 1e-4
    steps = integer_allocation(tau, w, credits, c, budget, tau_max=40)
    assert steps.dtype.kind == "i" and np.all(steps <= 40) and np.all(steps >= np.floor(tau + 1e-9))
    assert 0.95 * budget <= float(c @ steps) <= budget


# Unequal-cost encoders: a is cheap, b dear (a joint step costs both).
COSTS = np.array([3.0, 1.0, 2.0])
ITERS = 20  # Entire Update's iterations: the budget pays for 20 joint steps.


def _allocation(beta: float) -> np.ndarray:
    imp, need = {"a": 0.8, "b": 0.2}, {"a": 0.2, "b": 0.8}
    w = modality_weights(MODS, imp, need, beta)
    credits = encoder_credits(COMBOS, MODS, imp)
    budget = float(COSTS[0] * ITERS)
    tau = allocate(w, credits, COSTS, budget, tau_max=2 * ITERS, tau_min=ITERS / 2, floor=ITERS / 4)
    return integer_allocation(tau, w, credits, COSTS, budget, tau_max=2 * ITERS)


def test_beta_decides_the_allocation_on_unequal_costs() -> None:
    by_importance, by_need = _allocation(1.0), _allocation(0.0)
    # β = 1 follows importance (a): many a-only steps; β = 0 follows training need (b): b-only steps.
    assert by_importance[1] >= by_need[1] + 10
    assert by_need[2] >= by_importance[2] + 5
    assert float(np.abs(by_importance - by_need).sum()) >= 20  # iterations moved, of ~40


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_every_weighted_encoder_gets_its_floor_and_the_budget_is_spent(beta: float) -> None:
    steps = _allocation(beta)
    credits = encoder_credits(COMBOS, MODS, {"a": 0.8, "b": 0.2})
    assert np.all(credits @ steps >= ITERS / 4 - 1e-9)
    assert steps[0] >= ITERS / 2
    budget = float(COSTS[0] * ITERS)
    assert 0.95 * budget <= float(COSTS @ steps) <= budget


def test_a_cheap_combination_cannot_take_the_budget() -> None:
    # a-only steps cost 1 % of a joint step: the cap and the others' floors bound them.
    costs = np.array([100.0, 1.0, 99.0])
    imp = {"a": 0.95, "b": 0.05}
    w = modality_weights(MODS, imp, {"a": 0.5, "b": 0.5}, 1.0)
    credits = encoder_credits(COMBOS, MODS, imp)
    budget = 100.0 * ITERS
    tau = allocate(w, credits, costs, budget, tau_max=2 * ITERS, tau_min=ITERS / 2, floor=ITERS / 4)
    assert tau[1] <= 2 * ITERS + 1e-6
    assert float(credits[1] @ tau) >= ITERS / 4 - 1e-4  # b keeps its floor
    assert float(costs[1] * tau[1]) <= 0.05 * budget


def test_an_unpayable_floor_is_lowered_to_what_the_budget_pays_for() -> None:
    credits = encoder_credits(COMBOS, MODS, {"a": 0.5, "b": 0.5})
    tau = allocate([0.5, 0.5], credits, COSTS, 6.0, tau_max=10, tau_min=1, floor=100)
    assert float(COSTS @ tau) <= 6.0 + 1e-9 and np.all(credits @ tau > 1.5)


def test_infeasible_budget_is_a_clear_error() -> None:
    with pytest.raises(InfeasibleBudgetError, match="cannot pay for tau_min = 3 iterations"):
        allocate([1.0, 1.0], np.eye(2), [10.0, 1.0], 25.0, tau_max=5, tau_min=3)


def test_execution_order_descends_in_cardinality() -> None:
    order = execution_order(COMBOS, np.array([0.1, 0.2, 0.9]))
    assert [COMBOS[i] for i in order] == [("a", "b"), ("b",), ("a",)]  # ties broken by weight
