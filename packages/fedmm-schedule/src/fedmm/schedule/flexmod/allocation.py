"""FlexMod's allocation of local iterations to modality combinations (pure functions).

Reference: Bian, Wang, Xu, "Prioritizing Modalities: Flexible Importance Scheduling in Federated
Multimodal Learning" (FlexMod, arXiv 2408.06549); method notes ``docs/methods/flexmod.md``.

For each client and round, with β from the agent:

* combination factor ``a_S = β·Σ_{m∈S} φ̂_m + (1−β)·Σ_{m∈S} u_m`` (importance vs. training need);
* iterations ``τ`` from the convex program

      maximise   Σ_S a_S · log(1 + τ_S)
      subject to Σ_S c_S τ_S ≤ B,   0 ≤ τ_S ≤ τ_max,   τ_full ≥ τ_min

  (concave objective, linear constraints; solved with cvxpy), where ``c_S`` is the measured cost
  of one iteration of ``S`` and ``B`` the client's budget in the same unit;
* integers: round down, then give leftover budget to the combinations with the largest
  ``a_S / c_S`` that still fit;
* order: descending cardinality, ties by ``a_S`` (largest first).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from fedmm.core.api import ConfigError

__all__ = [
    "InfeasibleBudgetError",
    "allocate",
    "combination_factors",
    "execution_order",
    "integer_allocation",
    "modality_combinations",
    "water_filling",
]

Combo = tuple[str, ...]


class InfeasibleBudgetError(ConfigError):
    """The budget cannot pay for the minimum iterations of the full combination."""


def modality_combinations(modalities: Sequence[str]) -> list[Combo]:
    """Every non-empty subset of ``modalities``, largest first (then in modality order)."""
    names = list(modalities)
    out: list[Combo] = []
    for k in range(len(names), 0, -1):
        out.extend(itertools.combinations(names, k))
    return out


def combination_factors(
    combos: Sequence[Combo], importance: Mapping[str, float], need: Mapping[str, float], beta: float
) -> np.ndarray:
    """``a_S = β·Σ_{m∈S} φ̂_m + (1−β)·Σ_{m∈S} u_m`` for each combination (β in [0, 1])."""
    if not (0.0 <= beta <= 1.0) or math.isnan(beta):
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    return np.array(
        [beta * sum(importance[m] for m in s) + (1 - beta) * sum(need[m] for m in s) for s in combos],
        dtype=np.float64,
    )


def _check(factors: np.ndarray, costs: np.ndarray, budget: float, tau_max: float, tau_min: float) -> None:
    if factors.shape != costs.shape or factors.ndim != 1 or factors.size == 0:
        raise ValueError(f"factors {factors.shape} and costs {costs.shape} must be equal non-empty vectors")
    if np.any(factors < 0) or not np.all(np.isfinite(factors)):
        raise ValueError(f"factors must be finite and >= 0, got {factors}")
    if np.any(costs <= 0) or not np.all(np.isfinite(costs)):
        raise ValueError(f"costs must be finite and > 0, got {costs}")
    if not (tau_max > 0 and 0 <= tau_min <= tau_max):
        raise ValueError(f"need 0 <= tau_min <= tau_max and tau_max > 0, got {tau_min}, {tau_max}")
    if costs[0] * tau_min > budget * (1 + 1e-9):
        raise InfeasibleBudgetError(
            f"a budget of {budget:.4g} cannot pay for tau_min = {tau_min:g} iterations of the full "
            f"combination at {costs[0]:.4g} each ({costs[0] * tau_min:.4g}); "
            "raise the budget or lower tau_min"
        )


def allocate(
    factors: Sequence[float] | np.ndarray,
    costs: Sequence[float] | np.ndarray,
    budget: float,
    *,
    tau_max: float,
    tau_min: float = 1.0,
) -> np.ndarray:
    """The convex program's real-valued iterations ``τ`` (index 0 = the full combination).

    Solved with cvxpy (Clarabel); a combination with ``a_S = 0`` gets nothing beyond its bound.
    Raises :class:`InfeasibleBudgetError` when ``c_full · τ_min > B``.
    """
    import cvxpy as cp

    a = np.asarray(factors, dtype=np.float64)
    c = np.asarray(costs, dtype=np.float64)
    _check(a, c, budget, tau_max, tau_min)
    # Scale costs and budget to O(1): FLOP counts of 1e9 upset solver tolerances.
    scale = float(c.max())
    c_s, b_s = c / scale, budget / scale
    tau = cp.Variable(a.size)
    objective = cp.Maximize(cp.sum(cp.multiply(a, cp.log1p(tau))))
    constraints = [c_s @ tau <= b_s, tau >= 0, tau <= tau_max, tau[0] >= tau_min]
    problem = cp.Problem(objective, constraints)
    try:
        problem.solve(solver=cp.CLARABEL)
    except cp.error.SolverError:
        problem.solve(solver=cp.SCS)
    if tau.value is None or problem.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"the allocation program did not solve (status {problem.status})")
    out = np.clip(np.asarray(tau.value, dtype=np.float64), 0.0, tau_max)
    # Solver tolerance may overshoot the budget by ~1e-8 relative: scale back onto it.
    spent = float(c @ out)
    if spent > budget:
        out *= budget / spent
    out[0] = max(out[0], min(tau_min, budget / c[0]))
    return out


def water_filling(
    factors: Sequence[float] | np.ndarray,
    costs: Sequence[float] | np.ndarray,
    budget: float,
    *,
    tau_max: float,
    tau_min: float = 0.0,
    iterations: int = 200,
) -> np.ndarray:
    """The same program's closed form: ``τ_S = clip(a_S/(λ c_S) − 1, lo_S, τ_max)`` with λ by bisection.

    ``lo = τ_min`` for the full combination (index 0), 0 otherwise. Used to check :func:`allocate`.
    """
    a = np.asarray(factors, dtype=np.float64)
    c = np.asarray(costs, dtype=np.float64)
    _check(a, c, budget, tau_max, tau_min)
    lo = np.zeros_like(a)
    lo[0] = tau_min

    def tau_at(lam: float) -> np.ndarray:
        return np.clip(a / (lam * c) - 1.0, lo, tau_max)

    if float(c @ tau_at(1e-12)) <= budget:  # the budget does not bind
        return tau_at(1e-12)
    low, high = 1e-12, float(np.max(a / c)) + 1.0  # at `high` every τ sits at its lower bound
    for _ in range(iterations):
        mid = math.sqrt(low * high)
        if float(c @ tau_at(mid)) > budget:
            low = mid
        else:
            high = mid
    return tau_at(high)


def integer_allocation(
    tau: np.ndarray, factors: np.ndarray, costs: np.ndarray, budget: float, *, tau_max: int
) -> np.ndarray:
    """Round ``τ`` down, then add iterations where ``a_S / c_S`` is largest while the budget allows."""
    out = np.floor(np.asarray(tau, dtype=np.float64) + 1e-9).astype(np.int64)
    c = np.asarray(costs, dtype=np.float64)
    a = np.asarray(factors, dtype=np.float64)
    left = budget - float(c @ out)
    for i in np.argsort(-(a / c), kind="stable"):
        if a[i] <= 0:
            continue
        extra = int(min(tau_max - out[i], left // c[i])) if left >= c[i] else 0
        if extra > 0:
            out[i] += extra
            left -= extra * c[i]
    return out


def execution_order(combos: Sequence[Combo], factors: np.ndarray) -> list[int]:
    """Indices of ``combos`` in execution order: larger combinations first, ties by ``a_S`` descending."""
    return sorted(range(len(combos)), key=lambda i: (-len(combos[i]), -float(factors[i]), i))
