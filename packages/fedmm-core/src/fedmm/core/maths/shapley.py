"""Shapley values of modalities: players are modality names, a coalition is a set of modalities.

A *value function* ``v`` maps a coalition ``T`` (a ``frozenset`` of player names) to a number, e.g.
the validation accuracy (or negative loss) of a multimodal model that sees only the modalities in
``T`` (the others masked / zero-filled). The Shapley value of player ``m`` (Shapley, 1953) is the
average marginal contribution of ``m`` over all orders in which the players can join::

    φ_m = Σ_{T ⊆ P∖{m}}  |T|! (M − |T| − 1)! / M!  ·  [ v(T ∪ {m}) − v(T) ]

with ``M = |P|``. It is the unique attribution that is *efficient* (``Σ_m φ_m = v(P) − v(∅)``),
*symmetric* (interchangeable players get equal values), gives *dummy* players (``v(T ∪ {m}) = v(T)``
for all ``T``) zero, and is additive over games. Modality-level Shapley values are used to weight or
select modalities in multimodal federated learning (e.g. FlexMod-style modality importance,
normalised per client with :func:`minmax_normalize` or :func:`normalize_nonnegative`); SHAP
(Lundberg & Lee, 2017) computes the same quantity over input features.

Three ways to compute them:

* :func:`shapley_exact` — the subset formula above, ``2^M`` value evaluations (each coalition once).
* :func:`shapley_monte_carlo` — permutation sampling (Castro, Gómez & Tejada, 2009), optionally
  antithetic (each sampled order is followed by its reverse), with a coalition cache.
* :func:`shapley_values` with ``method="shap"`` — the same exact values through the ``shap`` library
  (``shap.explainers.Exact`` on a function of a binary coalition mask), as an independent check.

Normalisations used to turn Shapley values into weights: :func:`normalize_nonnegative` and
:func:`minmax_normalize`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np

from fedmm.core.errors import ConfigError, DataError, MissingDependencyError

__all__ = [
    "AUTO_EXACT_MAX_PLAYERS",
    "EXACT_MAX_PLAYERS",
    "ValueFunction",
    "minmax_normalize",
    "normalize_nonnegative",
    "shapley_exact",
    "shapley_monte_carlo",
    "shapley_values",
]

ValueFunction = Callable[[frozenset[str]], float]
"""A characteristic function: coalition (set of player names) → value."""

EXACT_MAX_PLAYERS = 16
"""Largest number of players the exact methods accept (``2^16 = 65 536`` coalitions)."""

AUTO_EXACT_MAX_PLAYERS = 8
"""``method="auto"`` computes exact values up to this many players and Monte-Carlo beyond."""

ShapleyMethod = Literal["auto", "exact", "shap", "monte_carlo"]


def _check_players(players: Sequence[str]) -> tuple[str, ...]:
    if isinstance(players, str):
        raise ConfigError(
            f"players must be a sequence of player names, got the single string {players!r}; "
            f"pass e.g. [{players!r}]"
        )
    names = tuple(players)
    for p in names:
        if not isinstance(p, str):
            raise ConfigError(f"player names must be strings, got {p!r} of type {type(p).__name__}")
    if len(set(names)) != len(names):
        dupes = sorted({p for p in names if names.count(p) > 1})
        raise ConfigError(f"players must be distinct; duplicated: {dupes}")
    return names


class _CachedGame:
    """Wraps a value function so that each coalition (as a bitmask over ``players``) is evaluated once."""

    def __init__(self, value: ValueFunction, players: tuple[str, ...]) -> None:
        self._value = value
        self._players = players
        self._cache: dict[int, float] = {}

    @property
    def evaluations(self) -> int:
        return len(self._cache)

    def coalition(self, mask: int) -> frozenset[str]:
        return frozenset(p for j, p in enumerate(self._players) if mask >> j & 1)

    def __call__(self, mask: int) -> float:
        cached = self._cache.get(mask)
        if cached is not None:
            return cached
        coalition = self.coalition(mask)
        raw = self._value(coalition)
        try:
            v = float(raw)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"the value function returned {raw!r} for coalition {sorted(coalition)}; "
                "it must return a real number (e.g. a float accuracy)"
            ) from exc
        if not math.isfinite(v):
            raise DataError(
                f"the value function returned {v} for coalition {sorted(coalition)}; values must be finite "
                "(check the evaluation of the model restricted to these modalities)"
            )
        self._cache[mask] = v
        return v


def _check_exact_size(m: int, method: str) -> None:
    if m > EXACT_MAX_PLAYERS:
        raise ConfigError(
            f"{method} Shapley values need 2^{m} = {2**m} coalition evaluations for {m} players; the "
            f"limit is {EXACT_MAX_PLAYERS} players. Use Monte-Carlo sampling instead: "
            "shapley_monte_carlo(value, players, permutations=...) or "
            "shapley_values(..., method='monte_carlo')"
        )


def _exact_weights(m: int) -> np.ndarray:
    """``w[s] = s! (m − s − 1)! / m! = 1 / (m · C(m − 1, s))`` for ``s = 0 … m − 1``."""
    return np.array([1.0 / (m * math.comb(m - 1, s)) for s in range(m)], dtype=np.float64)


def shapley_exact(value: ValueFunction, players: Sequence[str]) -> dict[str, float]:
    """Exact Shapley values by the subset formula (Shapley, 1953).

    ``φ_m = Σ_{T ⊆ P∖{m}} |T|!(M−|T|−1)!/M! · [v(T∪{m}) − v(T)]``. Every one of the ``2^M``
    coalitions (including ``∅`` and ``P``) is evaluated exactly once, in increasing bitmask order
    (player ``j`` of ``players`` is bit ``j``); the sum is then computed in float64.

    Args:
        value: the characteristic function, called with a ``frozenset`` of player names; must
            return a finite real number.
        players: distinct player (modality) names; their order fixes the evaluation order only.

    Returns:
        ``{player: φ_player}`` in the order of ``players``; ``{}`` for no players.

    Raises:
        ConfigError: duplicated / non-string players, or more than :data:`EXACT_MAX_PLAYERS`
            players (use :func:`shapley_monte_carlo`).
        DataError: the value function returned a non-finite or non-numeric value.
    """
    names = _check_players(players)
    m = len(names)
    if m == 0:
        return {}
    _check_exact_size(m, "exact")
    game = _CachedGame(value, names)
    n_coal = 1 << m
    v = np.array([game(mask) for mask in range(n_coal)], dtype=np.float64)
    masks = np.arange(n_coal, dtype=np.int64)
    sizes = np.zeros(n_coal, dtype=np.int64)
    for j in range(m):
        sizes += (masks >> j) & 1
    w = _exact_weights(m)
    phi: dict[str, float] = {}
    for j, name in enumerate(names):
        bit = 1 << j
        without = masks[(masks & bit) == 0]
        phi[name] = float(np.sum(w[sizes[without]] * (v[without | bit] - v[without])))
    return phi


def shapley_monte_carlo(
    value: ValueFunction,
    players: Sequence[str],
    permutations: int = 200,
    rng: np.random.Generator | int = 0,
    *,
    antithetic: bool = True,
) -> dict[str, float]:
    """Monte-Carlo Shapley values by permutation sampling (Castro, Gómez & Tejada, 2009).

    For each sampled order ``π`` of the players, the marginal contribution
    ``v(Pre_π(m) ∪ {m}) − v(Pre_π(m))`` of each player ``m`` given its predecessors is recorded; the
    estimate is the mean over the sampled orders. It is unbiased, and *efficient for every sample*:
    the contributions along one order telescope to ``v(P) − v(∅)``, so ``Σ_m φ̂_m = v(P) − v(∅)``
    exactly.

    With ``antithetic=True`` each sampled order is followed by its reverse (antithetic sampling,
    which lowers the variance, e.g. Mitchell et al., 2022, "Sampling permutations for Shapley value
    estimation"); ``permutations`` is still the total number of orders used (for an odd number the
    last reverse is dropped). Coalition values are cached, so at most ``min(2^M, permutations·(M−1)+2)``
    distinct evaluations happen.

    Args:
        value: the characteristic function (see :func:`shapley_exact`).
        players: distinct player names.
        permutations: number of orders to average over, ≥ 1.
        rng: a ``numpy.random.Generator`` or an integer seed (the same seed gives the same result).
        antithetic: pair each sampled order with its reverse.

    Returns:
        ``{player: φ̂_player}`` in the order of ``players``; ``{}`` for no players.
    """
    names = _check_players(players)
    if isinstance(permutations, bool) or not isinstance(permutations, int | np.integer) or permutations < 1:
        raise ConfigError(f"permutations must be a positive integer, got {permutations!r}")
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    m = len(names)
    if m == 0:
        return {}
    game = _CachedGame(value, names)
    totals = np.zeros(m, dtype=np.float64)
    empty_value = game(0)
    done = 0
    while done < int(permutations):
        order = generator.permutation(m)
        orders = [order, order[::-1]] if antithetic else [order]
        for perm in orders:
            if done >= int(permutations):
                break
            mask = 0
            prev = empty_value
            for j in perm:
                mask |= 1 << int(j)
                cur = game(mask)
                totals[j] += cur - prev
                prev = cur
            done += 1
    estimate = totals / done
    return {name: float(estimate[j]) for j, name in enumerate(names)}


def _shapley_shap(value: ValueFunction, players: Sequence[str]) -> dict[str, float]:
    """Exact Shapley values through ``shap.explainers.Exact``.

    The game is encoded as a model of a binary coalition mask ``z ∈ {0,1}^M`` (``z_j = 1`` ⇔ player
    ``j`` present). Explaining the all-ones point against a single all-zeros background sample with
    an independent masker makes "masked" mean "absent", so SHAP's values are the Shapley values of
    ``v`` and SHAP's base value is ``v(∅)``.
    """
    names = _check_players(players)
    m = len(names)
    if m == 0:
        return {}
    _check_exact_size(m, "shap-backend exact")
    try:
        with warnings.catch_warnings():  # shap's import emits matplotlib deprecation noise
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            import shap  # slow import (numba); only when this backend is asked for
    except ImportError as exc:  # pragma: no cover - shap is a declared dependency
        raise MissingDependencyError(
            "method='shap' needs the shap package: install it with `uv pip install shap` "
            "(or use method='exact', which gives the same values)"
        ) from exc

    game = _CachedGame(value, names)

    def model(z: np.ndarray) -> np.ndarray:
        z = np.asarray(z)
        out = np.empty(z.shape[0], dtype=np.float64)
        for i, row in enumerate(z):
            mask = 0
            for j in range(m):
                if row[j] > 0.5:
                    mask |= 1 << j
            out[i] = game(mask)
        return out

    masker = shap.maskers.Independent(np.zeros((1, m), dtype=np.float64), max_samples=1)
    explainer = shap.explainers.Exact(model, masker)
    explanation = explainer(np.ones((1, m), dtype=np.float64), max_evals=max(1 << m, 2), silent=True)
    values = np.asarray(explanation.values, dtype=np.float64).reshape(-1)
    if values.shape[0] != m:  # pragma: no cover - defensive: shap changed its output layout
        raise DataError(f"shap returned {values.shape[0]} values for {m} players")
    return {name: float(values[j]) for j, name in enumerate(names)}


def shapley_values(
    value: ValueFunction,
    players: Sequence[str],
    method: ShapleyMethod = "auto",
    *,
    permutations: int = 200,
    rng: np.random.Generator | int = 0,
    antithetic: bool = True,
) -> dict[str, float]:
    """Shapley values of ``players`` under ``value`` with the chosen method.

    Args:
        value: the characteristic function (see :func:`shapley_exact`).
        players: distinct player names.
        method: ``"exact"`` (:func:`shapley_exact`), ``"shap"`` (same exact values through the
            ``shap`` library; slow to import, meant for cross-checking), ``"monte_carlo"``
            (:func:`shapley_monte_carlo`), or ``"auto"``: exact up to
            :data:`AUTO_EXACT_MAX_PLAYERS` players, Monte-Carlo beyond.
        permutations, rng, antithetic: Monte-Carlo settings (ignored by the exact methods).

    Returns:
        ``{player: φ_player}`` in the order of ``players``.
    """
    if method == "auto":
        method = "exact" if len(players) <= AUTO_EXACT_MAX_PLAYERS else "monte_carlo"
    if method == "exact":
        return shapley_exact(value, players)
    if method == "shap":
        return _shapley_shap(value, players)
    if method == "monte_carlo":
        return shapley_monte_carlo(value, players, permutations, rng, antithetic=antithetic)
    raise ConfigError(
        f"unknown Shapley method {method!r}; choose one of 'auto', 'exact', 'shap', 'monte_carlo'"
    )


def _check_phi(phi: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in phi.items():
        try:
            f = float(v)
        except (TypeError, ValueError) as exc:
            raise DataError(f"Shapley value of {k!r} is {v!r}, not a number") from exc
        if not math.isfinite(f):
            raise DataError(f"Shapley value of {k!r} is {f}; values must be finite")
        out[k] = f
    return out


def normalize_nonnegative(
    phi: Mapping[str, float], *, fallback: Literal["uniform", "zeros"] = "uniform"
) -> dict[str, float]:
    """Turn Shapley values into non-negative weights that sum to one: ``max(φ_m, 0) / Σ_k max(φ_k, 0)``.

    Negative contributions (a modality that hurts the value) get weight 0. When no player has a
    positive value (all ``φ ≤ 0``) the ratio is undefined; ``fallback`` decides:

    * ``"uniform"`` (default): every player gets the equal share ``1 / M`` (no evidence to prefer
      any modality, and the weights still sum to one);
    * ``"zeros"``: every player gets ``0``.

    Returns ``{}`` for an empty mapping; keys keep their order.
    """
    values = _check_phi(phi)
    if not values:
        return {}
    if fallback not in ("uniform", "zeros"):
        raise ConfigError(f"fallback must be 'uniform' or 'zeros', got {fallback!r}")
    clipped = {k: max(v, 0.0) for k, v in values.items()}
    total = math.fsum(clipped.values())
    if total <= 0.0:
        share = 1.0 / len(values) if fallback == "uniform" else 0.0
        return dict.fromkeys(values, share)
    return {k: v / total for k, v in clipped.items()}


def minmax_normalize(phi: Mapping[str, float], eps: float = 1e-10) -> dict[str, float]:
    """Per-client min–max scaling of Shapley values: ``(φ_m − min φ) / (max φ − min φ + ε)``.

    Applied to one client's modality values it maps them to ``[0, 1)``: the smallest becomes 0, the
    largest ``(max−min)/(max−min+ε)`` ≈ 1. ``ε`` (default ``1e-10``) avoids a division by zero:
    when all values are equal they all become 0.
    Returns ``{}`` for an empty mapping.
    """
    values = _check_phi(phi)
    if not values:
        return {}
    if not (math.isfinite(eps) and eps > 0):
        raise ConfigError(f"eps must be a positive finite number, got {eps!r}")
    lo = min(values.values())
    hi = max(values.values())
    span = hi - lo + eps
    return {k: (v - lo) / span for k, v in values.items()}
