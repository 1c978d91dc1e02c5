"""BMSFed client × modality selection: facility location solved by stochastic greedy.

Reference: Fan, Xu, Wang, Huo, Chen & Guo, BMSFed (balanced modality selection, ECCV 2024,
arXiv 2401.00403; v1 "Client-wise Modality Selection for Balanced Multi-modal FL"), spec §3.3; the
objective is DivFL's (Balakrishnan et al., ICLR 2022) and the solver is stochastic greedy
(Mirzasoleiman et al., AAAI 2015, "Lazier than lazy greedy").

Facility location on a client distance matrix ``D`` (``N × N``, ``D[k, i]`` = distance between the
update vectors of clients ``k`` and ``i``)::

    G(S) = Σ_{k ∈ V} min_{i ∈ S} D[k, i]           (G(∅) = N · big, big ≥ max D)

Smaller is better: every client is well represented by some selected client. ``big − G`` is
monotone submodular, so greedy reaches ≥ (1 − 1/e) of the optimal reduction and stochastic greedy
≥ (1 − 1/e − ε) in expectation.

BMSFed builds two sets at once: ``S_M`` (clients that train all their modalities, objective
``G_M`` on ``D_M``) and ``S_I`` (clients that train only the weak modality ``I``, objective ``G_I``
on ``D_I``). At each of the ``K`` picks a random subset ``R`` of the remaining clients is drawn,
``k1* = argmin_R G_M(S_M ∪ {k})``, ``k2* = argmin_R G_I(S_I ∪ {k})``, and the conflict rule puts
``k2*`` into ``S_I`` when its imbalance ratio passes the threshold ``χ`` (``ρ > χ`` when ``I`` is the
second modality, ``ρ < 1/χ`` when it is the first) and ``k1* ≠ k2*``; otherwise ``k1*`` joins
``S_M``. A client that holds only ``I`` has no ρ and passes whatever ``χ`` is (finite): see
:func:`stochastic_greedy_bmsfed`. Running-minimum vectors make each pick ``O(N · |R|)``.

All functions are pure (numpy in, numpy/Python out); randomness comes only from the ``rng`` given.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from fedmm.core.api import ConfigError

__all__ = [
    "Selection",
    "big_constant",
    "exhaustive_minimum",
    "facility_location",
    "greedy_facility_location",
    "pairwise_distances",
    "sample_size",
    "stochastic_greedy_bmsfed",
]


def pairwise_distances(vectors: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix ``D[k, i] = ‖v_k − v_i‖₂`` of the rows of ``vectors`` (zero diagonal)."""
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2:
        raise ConfigError(f"vectors must be a 2-D array (one row per client), got shape {v.shape}")
    sq = np.einsum("ij,ij->i", v, v)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (v @ v.T)
    d = np.sqrt(np.clip(d2, 0.0, None))
    np.fill_diagonal(d, 0.0)
    return d


def _check_matrix(d: np.ndarray, name: str = "D") -> np.ndarray:
    a = np.asarray(d, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ConfigError(f"{name} must be a square N×N distance matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ConfigError(f"{name} must hold finite non-negative distances")
    return a


def big_constant(d: np.ndarray) -> float:
    """The value of ``min_{i∈∅}``: any constant ≥ max D gives the same argmins; max D + 1 keeps G finite."""
    return float(np.max(d, initial=0.0)) + 1.0


def facility_location(d: np.ndarray, selected: list[int] | tuple[int, ...] | np.ndarray) -> float:
    """``G(S) = Σ_k min_{i∈S} D[k, i]`` (DivFL's objective; ``G(∅) = N · big_constant(D)``)."""
    d = _check_matrix(d)
    s = np.asarray(selected, dtype=np.int64)
    if s.size == 0:
        return d.shape[0] * big_constant(d)
    return float(np.min(d[:, s], axis=1).sum())


def exhaustive_minimum(d: np.ndarray, k: int) -> tuple[float, tuple[int, ...]]:
    """The optimal ``min_{|S| = k} G(S)`` by enumerating all subsets (tests on tiny instances only)."""
    d = _check_matrix(d)
    n = d.shape[0]
    if not 0 < k <= n:
        raise ConfigError(f"k must lie in 1..{n} (got {k})")
    if math.comb(n, k) > 200_000:
        raise ConfigError(f"C({n}, {k}) subsets is too many for exhaustive search")
    best = math.inf
    best_set: tuple[int, ...] = ()
    for s in itertools.combinations(range(n), k):
        g = float(np.min(d[:, list(s)], axis=1).sum())
        if g < best:
            best, best_set = g, s
    return best, best_set


def sample_size(num_clients: int, k: int, size: int | None) -> int:
    """``|R|``: ``size`` if given, else the spec's ``max(K, ⌊0.1·N⌋)``."""
    return size if size is not None else max(k, num_clients // 10)


def _best(d: np.ndarray, running_min: np.ndarray, pool: np.ndarray) -> tuple[int, float]:
    # G(S ∪ {k}) for each k in pool, from the running minimum over S: O(N · |pool|).
    values = np.minimum(running_min[:, None], d[:, pool]).sum(axis=0)
    j = int(np.argmin(values))  # ties: the first in pool order
    return int(pool[j]), float(values[j])


def greedy_facility_location(
    d: np.ndarray,
    k: int,
    rng: np.random.Generator | None = None,
    *,
    size: int | None = None,
    candidates: np.ndarray | None = None,
) -> list[int]:
    """DivFL stochastic greedy on one matrix (``rng=None`` or ``size ≥ N``: exact greedy, R = all)."""
    sel = stochastic_greedy_bmsfed(
        d, d, np.full(d.shape[0], np.nan), k, rng, chi=math.inf, size=size, candidates=candidates
    )
    return sel.multimodal


@dataclass
class Selection:
    """The outcome of one BMSFed selection: ``S_M`` and ``S_I`` in pick order, and the objective values."""

    multimodal: list[int] = field(default_factory=list)
    unimodal: list[int] = field(default_factory=list)
    g_multimodal: list[float] = field(default_factory=list)  # G_M(S_M) after each pick
    g_unimodal: list[float] = field(default_factory=list)  # G_I(S_I) after each pick

    @property
    def clients(self) -> list[int]:
        return sorted(self.multimodal + self.unimodal)


def stochastic_greedy_bmsfed(
    d_multi: np.ndarray,
    d_weak: np.ndarray,
    rho: np.ndarray,
    k: int,
    rng: np.random.Generator | None,
    *,
    chi: float,
    weak_is_second: bool = True,
    size: int | None = None,
    candidates: np.ndarray | None = None,
    coincide_to_multimodal: bool = True,
    weak_only: np.ndarray | None = None,
) -> Selection:
    """BMSFed's selection (spec §3.3): ``K`` picks split into ``S_M`` and ``S_I``.

    Args:
        d_multi: ``D_M`` (N×N), distances of the clients' all-modality update vectors.
        d_weak: ``D_I`` (N×N), distances of their weak-modality-encoder update vectors.
        rho: ``(N,)`` imbalance ratios ``ρ_k = acc_first / acc_second``; NaN (unknown, or a client
            without both modalities) never passes the threshold (but see ``weak_only``).
        k: the number of picks ``K`` (clamped to the number of candidates).
        rng: draws the random subsets ``R``; ``None`` means exact greedy (R = all remaining).
        chi: the threshold ``χ ≥ 1``; ``inf`` never picks ``S_I`` (plain DivFL stochastic greedy).
        weak_is_second: the weak modality ``I`` is the second one (``ρ > χ`` passes) or the first
            (``ρ < 1/χ`` passes).
        size: ``|R|`` (default ``max(K, ⌊0.1·N⌋)``); ``≥ N`` gives exact greedy.
        candidates: the clients that may be picked (default all ``N``); the objective still covers all.
        coincide_to_multimodal: when ``k1* = k2*`` the client joins ``S_M`` (the slides' rule).
        weak_only: ``(N,)`` bool, the clients that hold only the weak modality ``I``. They pass the
            conflict rule whatever their ρ (NaN: one modality gives no ratio), unless ``χ = ∞``.
            Why: ``χ`` guards the cost of an ``S_I`` pick — a client that could train both
            modalities gives up its strong-modality and joint update to train ``I`` alone, worth it
            only where ``I`` is clearly behind on that client. A client holding only ``I`` trains
            ``I`` alone in either set, so there is nothing to give up and the threshold has nothing
            to guard; its update is purely a weak-modality update, which is what ``G_I`` measures
            (in ``D_M`` its vector is zero outside ``I``). Its ρ stays NaN (one modality says
            nothing about the balance of two), so it never enters the mean ρ̄ that decides ``I``.

    Returns:
        A :class:`Selection` with disjoint ``S_M``, ``S_I`` and ``|S_M| + |S_I| = min(K, |candidates|)``.
    """
    dm = _check_matrix(d_multi, "d_multi")
    di = _check_matrix(d_weak, "d_weak")
    n = dm.shape[0]
    if di.shape != dm.shape:
        raise ConfigError(f"d_multi {dm.shape} and d_weak {di.shape} must have the same shape")
    r = np.asarray(rho, dtype=np.float64)
    if r.shape != (n,):
        raise ConfigError(f"rho must have shape ({n},), got {r.shape}")
    if not chi >= 1.0:  # also rejects NaN
        raise ConfigError(f"chi must be >= 1 (got {chi})")
    if k < 1:
        raise ConfigError(f"k must be >= 1 (got {k})")
    remaining = np.arange(n, dtype=np.int64) if candidates is None else np.asarray(candidates, np.int64)
    if remaining.size and (remaining.min() < 0 or remaining.max() >= n):
        raise ConfigError(f"candidates must be client indices in 0..{n - 1}")
    remaining = np.unique(remaining)
    picks = min(k, remaining.size)
    m_min = np.full(n, big_constant(dm))
    i_min = np.full(n, big_constant(di))
    g_m0, g_i0 = float(m_min.sum()), float(i_min.sum())
    out = Selection()
    with np.errstate(invalid="ignore"):
        passes = r > chi if weak_is_second else r < 1.0 / chi
    passes = passes & np.isfinite(r)
    if weak_only is not None:
        only = np.asarray(weak_only, dtype=bool)
        if only.shape != (n,):
            raise ConfigError(f"weak_only must have shape ({n},), got {only.shape}")
        if math.isfinite(chi):  # χ = ∞ is plain DivFL: no S_I at all
            passes = passes | only
    for _ in range(picks):
        m = sample_size(n, k, size)
        if rng is None or m >= remaining.size:
            pool = remaining
        else:
            pool = np.sort(rng.choice(remaining, size=m, replace=False))
        k1, _ = _best(dm, m_min, pool)
        k2, _ = _best(di, i_min, pool)
        if bool(passes[k2]) and not (coincide_to_multimodal and k1 == k2):
            out.unimodal.append(k2)
            i_min = np.minimum(i_min, di[:, k2])
            chosen = k2
        else:
            out.multimodal.append(k1)
            m_min = np.minimum(m_min, dm[:, k1])
            chosen = k1
        out.g_multimodal.append(float(m_min.sum()) if out.multimodal else g_m0)
        out.g_unimodal.append(float(i_min.sum()) if out.unimodal else g_i0)
        remaining = remaining[remaining != chosen]
    return out
