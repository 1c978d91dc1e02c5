"""FlexMod's allocation of local iterations to modality combinations (pure functions).

Reference: Bian, Wang, Xu, "Prioritizing Modalities: Flexible Importance Scheduling in Federated
Multimodal Learning" (FlexMod, arXiv 2408.06549); method notes ``docs/methods/flexmod.md``
("The allocation", with why it has this form).

For each client and round, with β from the agent (or fixed):

* modality weights ``w_m = β·φ̂_m + (1−β)·u_m`` (importance vs. training need; each sums to 1);
* the *effective training* of encoder ``m``: ``n_m = Σ_S κ_{m,S}·τ_S``, where ``τ_S`` are the
  iterations of combination ``S`` and ``κ_{m,S}`` how much of a step of ``S`` reaches encoder
  ``m``: 1 for a step that trains ``m`` alone, and ``min(1, |S|·φ̂_m / Σ_{k∈S} φ̂_k)`` in a joint
  step, where a modality the fused model relies on little gets little of the learning signal
  (modality imbalance); balanced modalities get 1 each;
* iterations ``τ`` from the convex program

      maximise   Σ_m w_m · log(1 + n_m)
      subject to Σ_S c_S τ_S ≤ B,   0 ≤ τ_S ≤ τ_max,   τ_full ≥ τ_min,
                 n_m ≥ floor for every m with w_m > 0

  (concave objective, linear constraints; solved with cvxpy), where ``c_S`` is the measured cost
  of one iteration of ``S`` and ``B`` the client's budget in the same unit. Among equally good
  allocations the one with more joint steps is taken (a vanishing bonus on ``τ_full``);
* integers: round down, then add iterations by the largest marginal utility per cost while the
  budget allows;
* order: descending cardinality, ties by ``Σ_{m∈S} w_m`` (largest first).
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
    "combination_weights",
    "encoder_credits",
    "execution_order",
    "integer_allocation",
    "modality_combinations",
    "modality_weights",
    "utility",
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


def modality_weights(
    modalities: Sequence[str], importance: Mapping[str, float], need: Mapping[str, float], beta: float
) -> np.ndarray:
    """``w_m = β·φ̂_m + (1−β)·u_m`` for each modality (β in [0, 1])."""
    if not (0.0 <= beta <= 1.0) or math.isnan(beta):
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    return np.array([beta * importance[m] + (1 - beta) * need[m] for m in modalities], dtype=np.float64)


def encoder_credits(
    combos: Sequence[Combo], modalities: Sequence[str], importance: Mapping[str, float] | None = None
) -> np.ndarray:
    """``κ`` (modalities × combinations): the share of a step of ``S`` that trains encoder ``m``.

    ``κ = 1`` for a modality trained alone and, in a joint step, ``min(1, |S|·φ̂_m / Σ_{k∈S} φ̂_k)``;
    with ``importance`` None (or summing to 0 over ``S``) every modality of ``S`` gets 1."""
    credits = np.zeros((len(modalities), len(combos)), dtype=np.float64)
    index = {m: i for i, m in enumerate(modalities)}
    for j, combo in enumerate(combos):
        total = 0.0 if importance is None else sum(max(importance[m], 0.0) for m in combo)
        for m in combo:
            if len(combo) == 1 or importance is None or total <= 0:
                credits[index[m], j] = 1.0
            else:
                credits[index[m], j] = min(1.0, len(combo) * max(importance[m], 0.0) / total)
    return credits


def combination_weights(weights: np.ndarray, credits: np.ndarray) -> np.ndarray:
    """``Σ_{m∈S} w_m`` per combination (the execution order's tie-break)."""
    return np.asarray(weights, dtype=np.float64) @ (np.asarray(credits) > 0)


def utility(weights: np.ndarray, credits: np.ndarray, tau: np.ndarray) -> float:
    """The program's objective ``Σ_m w_m log(1 + n_m)`` at ``τ``."""
    return float(np.asarray(weights) @ np.log1p(np.asarray(credits) @ np.asarray(tau, dtype=np.float64)))


def _check(
    weights: np.ndarray, credits: np.ndarray, costs: np.ndarray, budget: float, tau_max: float, tau_min: float
) -> None:
    if costs.ndim != 1 or costs.size == 0 or credits.shape != (weights.size, costs.size):
        raise ValueError(
            f"weights {weights.shape}, credits {credits.shape} and costs {costs.shape} do not match "
            "(credits is modalities × combinations)"
        )
    if np.any(weights < 0) or not np.all(np.isfinite(weights)):
        raise ValueError(f"weights must be finite and >= 0, got {weights}")
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
    weights: Sequence[float] | np.ndarray,
    credits: np.ndarray,
    costs: Sequence[float] | np.ndarray,
    budget: float,
    *,
    tau_max: float,
    tau_min: float = 1.0,
    floor: float = 0.0,
) -> np.ndarray:
    """The convex program's real-valued iterations ``τ`` (index 0 = the full combination).

    ``floor`` is the effective training every modality with ``w_m > 0`` gets at least; where the
    budget cannot pay for it (with ``τ_min`` and the caps), the largest floor it can pay for is
    used instead. Raises :class:`InfeasibleBudgetError` when ``c_full · τ_min > B``.
    """
    w = np.asarray(weights, dtype=np.float64)
    k = np.asarray(credits, dtype=np.float64)
    c = np.asarray(costs, dtype=np.float64)
    _check(w, k, c, budget, tau_max, tau_min)
    if not np.any(w > 0):
        w = np.ones_like(w)
    # Scale costs and budget to O(1): FLOP counts of 1e9 upset solver tolerances.
    scale = float(c.max())
    c_s, b_s = c / scale, budget / scale
    lo = np.zeros_like(c)
    lo[0] = tau_min
    best = _floor_reachable(w, k, c_s, b_s, lo, tau_max)
    tau = _solve(w, k, c_s, b_s, lo, tau_max, min(floor, best))
    out = np.clip(tau, 0.0, tau_max)
    # Solver tolerance may overshoot the budget by ~1e-8 relative: scale back onto it.
    spent = float(c @ out)
    if spent > budget:
        out *= budget / spent
    out[0] = max(out[0], min(tau_min, budget / c[0]))
    return out


def _solve(
    w: np.ndarray, k: np.ndarray, c: np.ndarray, b: float, lo: np.ndarray, tau_max: float, floor: float
) -> np.ndarray:
    import cvxpy as cp

    tau = cp.Variable(c.size)
    n = k @ tau
    # A vanishing bonus per joint step picks, among equally good allocations, the most joint one.
    bonus = 1e-6 * float(w.sum()) * tau[0] / max(tau_max, 1.0)
    objective = cp.Maximize(cp.sum(cp.multiply(w, cp.log1p(n))) + bonus)
    constraints = [c @ tau <= b, tau >= lo, tau <= tau_max]
    floors = [i for i in range(w.size) if w[i] > 0]
    if floor > 0 and floors:
        constraints.append(n[floors] >= floor)
    problem = cp.Problem(objective, constraints)
    try:
        problem.solve(solver=cp.CLARABEL)
    except cp.error.SolverError:
        problem.solve(solver=cp.SCS)
    if tau.value is None or problem.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"the allocation program did not solve (status {problem.status})")
    return np.asarray(tau.value, dtype=np.float64)


def _floor_reachable(
    w: np.ndarray, k: np.ndarray, c: np.ndarray, b: float, lo: np.ndarray, tau_max: float
) -> float:
    """The largest floor every weighted modality can get at once within the budget (an LP)."""
    import cvxpy as cp

    floors = [i for i in range(w.size) if w[i] > 0]
    if not floors:
        return 0.0
    tau = cp.Variable(c.size)
    t = cp.Variable()
    problem = cp.Problem(cp.Maximize(t), [c @ tau <= b, tau >= lo, tau <= tau_max, (k @ tau)[floors] >= t])
    problem.solve(solver=cp.CLARABEL)
    if problem.value is None or not math.isfinite(float(problem.value)):
        return 0.0
    return max(0.0, float(problem.value) * (1 - 1e-6))


def integer_allocation(
    tau: np.ndarray,
    weights: np.ndarray,
    credits: np.ndarray,
    costs: np.ndarray,
    budget: float,
    *,
    tau_max: int,
) -> np.ndarray:
    """Round ``τ`` down, then add single iterations where the marginal utility per cost,
    ``Σ_m w_m κ_{m,S} / (1 + n_m) / c_S``, is largest, while the budget allows."""
    out = np.floor(np.asarray(tau, dtype=np.float64) + 1e-9).astype(np.int64)
    c = np.asarray(costs, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    k = np.asarray(credits, dtype=np.float64)
    left = budget - float(c @ out)
    while True:
        n = k @ out
        gain = (w / (1.0 + n)) @ k / c
        fits = (c <= left + 1e-9 * budget) & (out < tau_max) & (gain > 0)
        if not np.any(fits):
            return out
        i = int(np.argmax(np.where(fits, gain, -np.inf)))
        out[i] += 1
        left -= c[i]


def execution_order(combos: Sequence[Combo], factors: np.ndarray) -> list[int]:
    """Indices of ``combos`` in execution order: larger combinations first, ties by ``factors`` descending."""
    return sorted(range(len(combos)), key=lambda i: (-len(combos[i]), -float(factors[i]), i))
