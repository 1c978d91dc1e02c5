"""FedMFS priority and top-γ selection as pure functions (Yuan et al., ICC 2024, arXiv 2310.07048, §3.2).

Per client ``k`` and modality ``m`` it owns::

    ϕ̂_m = (ϕ_m − min ϕ) / (max ϕ − min ϕ + ε)          (min–max over the client's modalities)
    ŝ_m = (|θ_m| − min |θ|) / (max |θ| − min |θ| + ε)
    P_m = α_s · ϕ̂_m + α_c · (1 − ŝ_m)

and the client uploads the γ modalities with the largest ``P_m`` (ties: lower modality index first).
A modality the client lacks is never normalised, ranked or uploaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedmm.core.api import ArgumentError, integer, minmax_normalize, number

EPS = 1e-10


def normalise(values: np.ndarray, available: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Min–max scaling over the ``available`` entries (0 elsewhere), via core's ``minmax_normalize``."""
    values = np.asarray(values, dtype=np.float64)
    available = np.asarray(available, dtype=bool)
    out = np.zeros(values.shape[0], dtype=np.float64)
    idx = np.flatnonzero(available)
    scaled = minmax_normalize({str(i): float(values[i]) for i in idx}, eps=eps)
    for i in idx:
        out[i] = scaled[str(i)]
    return out


def priority(
    shapley: np.ndarray,
    sizes: np.ndarray,
    available: np.ndarray,
    alpha_s: float = 0.5,
    alpha_c: float = 0.5,
) -> np.ndarray:
    """``P_m = α_s ϕ̂_m + α_c (1 − ŝ_m)`` for the available modalities; ``-inf`` for the others."""
    available = np.asarray(available, dtype=bool)
    p = alpha_s * normalise(shapley, available) + alpha_c * (1.0 - normalise(sizes, available))
    return np.where(available, p, -np.inf)


def top_gamma(
    scores: np.ndarray, available: np.ndarray, gamma: int, rng: np.random.Generator | None = None
) -> list[int]:
    """Indices of the ``min(γ, |available|)`` largest scores among the available modalities.

    Equal scores keep the modality order (the lower index wins, as the paper's stable sort), or,
    with ``rng``, are ordered uniformly at random (one permutation drawn per call).
    """
    available = np.asarray(available, dtype=bool)
    idx = [int(i) for i in np.flatnonzero(available)]
    rank = rng.permutation(scores.shape[0]) if rng is not None else np.arange(scores.shape[0])
    idx.sort(key=lambda i: (-float(scores[i]), int(rank[i])))
    return sorted(idx[: max(0, int(gamma))])


def random_gamma(available: np.ndarray, gamma: int, rng: np.random.Generator) -> list[int]:
    """The random-selection baseline: ``min(γ, |available|)`` available modalities drawn uniformly."""
    idx = np.flatnonzero(np.asarray(available, dtype=bool))
    k = min(int(gamma), idx.shape[0])
    return sorted(int(i) for i in rng.choice(idx, size=k, replace=False)) if k else []


# When can the Shapley values change a client's choice? For the client's modalities, the size
# term c_m = α_c (1 − ŝ_m) is fixed by the model sizes; alone it picks T, the γ smallest models
# (ties: lower index). The Shapley term α_s ϕ̂_m adds between 0 and α_s, and ϕ̂ (min–max over the
# client's modalities) always has a 0 and a 1, so for any i in T and j outside it the Shapley values
# can be ϕ̂_j = 1, ϕ̂_i = 0: j gains α_s on i, and no other ϕ̂ gains more (P is linear in ϕ̂). The
# closest pair is the boundary one, the γ-th and (γ+1)-th smallest models, c_i − c_j =
# α_c (ŝ_(γ+1) − ŝ_(γ)) = α_c · gap. So the Shapley values can change the choice iff
# α_s > α_c · gap. At α_s = α_c · gap (two models of different sizes, gap = 1, and α_s = α_c: the
# defaults) the Shapley term can at most tie the size term; the ε of the normalisation breaks that
# tie for the smaller model whenever the sizes' range (in parameters) exceeds the Shapley values'
# range (Σ |SHAP| over at most `shap_samples` points and the classes; ≤ 1 for exact Shapley), which
# holds for any two real models, so equality counts as "cannot". A client owning γ modalities or
# fewer uploads them all: nothing to change.


def size_gap(sizes: np.ndarray, available: np.ndarray, gamma: int) -> float | None:
    """``ŝ`` of the client's (γ+1)-th smallest model minus ``ŝ`` of its γ-th smallest (min–max
    over the ``available`` modalities; 0 where the sizes tie there or are all equal), or ``None``
    when the client has no choice (it owns γ modalities or fewer)."""
    s = np.sort(np.asarray(sizes, dtype=np.float64)[np.asarray(available, dtype=bool)])
    if gamma < 1 or gamma >= s.shape[0]:
        return None
    span = float(s[-1] - s[0])
    return 0.0 if span <= 0 else float(s[gamma] - s[gamma - 1]) / span


def shapley_can_change_choice(
    sizes: np.ndarray, available: np.ndarray, gamma: int, alpha_s: float, alpha_c: float
) -> bool:
    """Whether some Shapley values would make this client upload other modalities than the size
    term alone picks: ``α_s > α_c · size_gap`` (the derivation is in the comment above)."""
    gap = size_gap(sizes, available, gamma)
    # The relative tolerance keeps an exact tie (e.g. α_s = α_c, gap = 1) a tie in floating point.
    return gap is not None and alpha_s > alpha_c * gap * (1 + 1e-9)


def check_parameters(
    alpha_s: float,
    alpha_c: float,
    gamma: int,
    modalities: Sequence[str] | None = None,
    *,
    owner: str = "FedMFS",
) -> None:
    """Raise :class:`~fedmm.core.errors.ArgumentError` naming the invalid FedMFS parameter
    (``owner``: the technique the message names)."""
    for name, value in (("alpha_s", alpha_s), ("alpha_c", alpha_c)):
        number(owner, name, value, low=0)  # each weighs a term of the priority
    if alpha_s == 0 and alpha_c == 0:
        raise ArgumentError(
            owner, "alpha_s", "and alpha_c are both 0, so the priority cannot rank modalities; make one > 0"
        )
    integer(owner, "gamma", gamma, low=1)  # modality models each client uploads per round
    if modalities is not None and gamma > len(modalities):
        raise ArgumentError(
            owner,
            "gamma",
            f"= {gamma} exceeds the number of modalities ({len(modalities)}: {', '.join(modalities)}); "
            f"use 1 <= gamma <= {len(modalities)}",
        )


__all__ = [
    "EPS",
    "check_parameters",
    "normalise",
    "priority",
    "random_gamma",
    "shapley_can_change_choice",
    "size_gap",
    "top_gamma",
]
