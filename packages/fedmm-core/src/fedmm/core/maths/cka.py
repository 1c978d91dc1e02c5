"""Linear centred kernel alignment (CKA) between representations, and FedMVP's CKA weights.

Linear CKA (Kornblith, Norouzi, Lee & Hinton, 2019, "Similarity of Neural Network Representations
Revisited", eq. 5) compares two representations ``X (n × d1)`` and ``Y (n × d2)`` of the *same* ``n``
examples::

    CKA(X, Y) = ‖Yᵀ X‖_F² / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F)        with X, Y column-centred.

It lies in ``[0, 1]``, equals 1 for ``X = Y``, and is invariant to orthogonal transforms and to
isotropic scaling of either representation (but not to arbitrary invertible linear maps). For
one-dimensional ``X`` and ``Y`` it is the squared Pearson correlation.

FedMVP weighs clients by how similar their
representations are to the others': with ``S_ij = CKA(R_i, R_j)`` on a shared probe set,
``a_i = Σ_j S_ij`` and ``w_i = a_i / Σ_k a_k`` (:func:`cka_aggregation_weights`); its code
L2-normalises the embedding rows before comparing them (``normalize_rows=True``).

Numerics: inputs are converted to float64, divided by their largest magnitude, centred, and divided
by their Frobenius norm before the products (CKA is scale invariant, so this changes nothing
mathematically but prevents overflow/underflow). The products are formed in feature space
(``d × d``) or in sample space (``n × n`` Gram matrices, ``‖YᵀX‖_F² = ⟨XXᵀ, YYᵀ⟩_F``), whichever
is cheaper.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fedmm.core.errors import DataError

__all__ = ["cka_aggregation_weights", "cka_matrix", "linear_cka"]

ArrayLike = np.ndarray | torch.Tensor


def _prepare(x: ArrayLike, name: str, normalize_rows: bool) -> np.ndarray:
    """float64, 2-D, finite; optionally unit-norm rows; rescaled; column-centred; unit Frobenius norm."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (n examples × d features), got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise DataError(f"{name} must hold real numbers, got dtype {a.dtype}")
    a = np.array(a, dtype=np.float64, copy=True)
    if a.shape[0] < 2 or a.shape[1] < 1:
        raise DataError(f"{name} has shape {a.shape}; CKA needs at least 2 examples and 1 feature")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name} contains NaN or Inf values")
    peak = np.max(np.abs(a))
    if peak > 0:
        a /= peak  # keeps the sums below finite even for huge or tiny magnitudes
    if normalize_rows:
        norms = np.linalg.norm(a, axis=1, keepdims=True)
        np.divide(a, norms, out=a, where=norms > 0)  # zero rows stay zero
    a -= a.mean(axis=0, keepdims=True)
    fro = np.linalg.norm(a)
    if fro > 0:
        a /= fro
    return a


def _cka_prepared(x: np.ndarray, y: np.ndarray) -> float:
    """CKA of two centred, Frobenius-normalised matrices with the same number of rows."""
    n, d1 = x.shape
    d2 = y.shape[1]
    if not np.any(x) or not np.any(y):
        return 0.0
    if n * n * (d1 + d2) < n * (d1 * d2 + d1 * d1 + d2 * d2):
        kx = x @ x.T
        ky = y @ y.T
        cross = float(np.vdot(kx, ky))
        nx = float(np.linalg.norm(kx))
        ny = float(np.linalg.norm(ky))
    else:
        cross = float(np.linalg.norm(y.T @ x) ** 2)
        nx = float(np.linalg.norm(x.T @ x))
        ny = float(np.linalg.norm(y.T @ y))
    denom = nx * ny
    if denom <= 0.0:
        return 0.0
    return float(min(max(cross / denom, 0.0), 1.0))


def linear_cka(x: ArrayLike, y: ArrayLike, normalize_rows: bool = False) -> float:
    """Linear CKA between two representations of the same examples (Kornblith et al., 2019).

    ``CKA = ‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F)`` on column-centred ``X``, ``Y``.

    Args:
        x: ``(n, d1)`` representation (numpy or torch).
        y: ``(n, d2)`` representation of the same ``n`` examples, in the same order.
        normalize_rows: first scale every row (example) to unit L2 norm, as FedMVP's code does;
            all-zero rows stay zero.

    Returns:
        A float in ``[0, 1]``. If either representation is constant across examples (zero after
        centring) CKA is 0/0; it is then defined as **0.0** (a constant representation carries no
        information about the examples, so it is taken as unrelated to the other).

    Raises:
        DataError: not 2-D, fewer than 2 examples, non-finite values, or different numbers of rows.
    """
    xs = _prepare(x, "x", normalize_rows)
    ys = _prepare(y, "y", normalize_rows)
    if xs.shape[0] != ys.shape[0]:
        raise DataError(
            f"x has {xs.shape[0]} examples (rows) but y has {ys.shape[0]}; CKA compares two representations "
            "of the same examples, so compute both on the same probe batch"
        )
    return _cka_prepared(xs, ys)


def cka_matrix(reps: Sequence[ArrayLike], normalize_rows: bool = False) -> np.ndarray:
    """Pairwise linear CKA matrix ``S_ij = CKA(R_i, R_j)`` of ``K`` representations.

    Every ``R_k`` must have the same number of rows (the same probe examples, same order); feature
    dimensions may differ. The result is ``(K, K)`` float64, exactly symmetric, with unit diagonal
    (set to 1 by definition, also for a constant representation).
    """
    if len(reps) == 0:
        raise DataError("cka_matrix needs at least one representation, got none")
    prepared = [_prepare(r, f"reps[{k}]", normalize_rows) for k, r in enumerate(reps)]
    n = prepared[0].shape[0]
    for k, r in enumerate(prepared):
        if r.shape[0] != n:
            raise DataError(
                f"reps[{k}] has {r.shape[0]} examples (rows) but reps[0] has {n}; "
                "all representations must be computed on the same probe examples"
            )
    k_reps = len(prepared)
    s = np.eye(k_reps, dtype=np.float64)
    for i in range(k_reps):
        for j in range(i + 1, k_reps):
            s[i, j] = s[j, i] = _cka_prepared(prepared[i], prepared[j])
    return s


def cka_aggregation_weights(
    reps: Sequence[ArrayLike],
    normalize_rows: bool = False,
    sample_counts: Sequence[float] | None = None,
) -> np.ndarray:
    """FedMVP's CKA-based aggregation weights: ``a_i = Σ_j S_ij``, ``w = a / Σ_k a_k``.

    ``S`` is :func:`cka_matrix` of the clients' representations of a shared probe set, so a client
    whose representation agrees with many others gets more weight. Because ``S_ii = 1`` and
    ``S_ij ≥ 0``, every ``a_i ≥ 1`` and the weights are positive and sum to one; identical
    representations give equal weights ``1/K``.

    ``sample_counts`` (``n_i``, one per representation): ``w_i ∝ a_i n_i`` instead, so the
    similarity re-weights FedAvg's sample shares and a client that trained on nothing gets no
    weight (the paper's code uses ``a_i`` alone, which hands an empty client ``1/K`` or more).

    Returns:
        ``(K,)`` float64 weights.
    """
    s = cka_matrix(reps, normalize_rows=normalize_rows)
    a = s.sum(axis=1)
    if sample_counts is not None:
        n = np.asarray(sample_counts, dtype=np.float64).reshape(-1)
        if n.shape[0] != a.shape[0]:
            raise DataError(
                f"sample_counts has {n.shape[0]} entries for {a.shape[0]} representations; give one "
                "count per client"
            )
        if not np.all(np.isfinite(n)) or np.any(n < 0):
            raise DataError(f"sample_counts must be finite and >= 0, got {n.tolist()}")
        if n.sum() <= 0:
            raise DataError("no client has a sample (sample_counts are all 0): nothing to weight")
        a = a * n
    return a / a.sum()
