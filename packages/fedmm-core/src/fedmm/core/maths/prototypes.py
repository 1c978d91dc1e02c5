"""Class prototypes (per-class mean embeddings) and measures of their quality.

A *prototype* of class ``c`` is the mean embedding of the samples labelled ``c`` (Snell, Swersky &
Zemel, 2017, "Prototypical networks"). Prototype-based federated learning (e.g. FedProto, Tan et
al., 2022) has each client send its local prototypes with their sample counts; the server merges
them by a count-weighted mean. Multimodal FL methods use the prototypes to judge how informative a
modality's encoder is:

* FlexMod scores a modality by the *quality* of its class prototypes — how well separated they are,
  measured by the mean pairwise cosine similarity between class prototypes
  (:func:`prototype_quality`; lower means better separated);
* BMSFed judges modality balance from the accuracy of a nearest-prototype classifier on each
  modality's embeddings (:func:`nearest_prototype_accuracy`); the ratio of two modalities'
  accuracies serves as an imbalance ratio.

All functions accept numpy arrays or torch tensors (detached and copied to the CPU) and return
numpy ``float64`` arrays / Python floats. Labels equal to ``-1`` (:data:`UNLABELLED`) mean
"unlabelled" and are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.spatial.distance import cdist

from fedmm.core.errors import DataError

__all__ = [
    "UNLABELLED",
    "class_prototypes",
    "merge_prototypes",
    "nearest_prototype_accuracy",
    "prototype_quality",
    "update_prototypes",
]

UNLABELLED = -1
"""Label value of a sample without a label; such samples are ignored."""

ArrayLike = np.ndarray | torch.Tensor


def _to_numpy(x: ArrayLike | Sequence[float], name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise DataError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}") from exc


def _as_matrix(x: ArrayLike, name: str) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.ndim != 2:
        raise DataError(
            f"{name} must be a 2-D array (rows = samples or classes, columns = features); got shape {a.shape}"
        )
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise DataError(f"{name} must hold real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if not np.all(np.isfinite(a)):
        raise DataError(
            f"{name} contains NaN or Inf values; fix the encoder output before computing prototypes"
        )
    return a


def _as_labels(labels: ArrayLike, n: int, num_classes: int | None, name: str = "labels") -> np.ndarray:
    a = _to_numpy(labels, name)
    if a.ndim != 1:
        raise DataError(f"{name} must be a 1-D array of class indices, got shape {a.shape}")
    if a.shape[0] != n:
        raise DataError(f"{name} has {a.shape[0]} entries but there are {n} embeddings; they must match")
    integral = np.issubdtype(a.dtype, np.integer) or (
        np.issubdtype(a.dtype, np.floating) and bool(np.all(np.equal(np.mod(a, 1), 0)))
    )
    if a.size and not integral:
        raise DataError(f"{name} must be integer class indices (or -1 for unlabelled), got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size:
        bad = (a < UNLABELLED) | ((a >= num_classes) if num_classes is not None else False)
        if np.any(bad):
            first = int(a[np.argmax(bad)])
            hi = f"{num_classes - 1}" if num_classes is not None else "num_classes-1"
            raise DataError(f"{name} contains {first}; labels must be in 0..{hi} or -1 for unlabelled")
    return a


def _as_counts(counts: ArrayLike | Sequence[int] | None, c: int, name: str = "counts") -> np.ndarray | None:
    if counts is None:
        return None
    a = _to_numpy(counts, name)
    if a.ndim != 1 or a.shape[0] != c:
        raise DataError(f"{name} must have shape ({c},) (one count per class), got {a.shape}")
    if a.size and not np.all(np.isfinite(a.astype(np.float64))):
        raise DataError(f"{name} contains NaN or Inf")
    if np.any(a < 0):
        raise DataError(f"{name} must be non-negative sample counts, got min {a.min()}")
    return a.astype(np.int64)


def class_prototypes(
    embeddings: ArrayLike, labels: ArrayLike, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class mean embeddings: ``p_c = (1/n_c) Σ_{i: y_i = c} z_i``.

    Args:
        embeddings: ``(N, d)`` sample embeddings (numpy or torch; converted to float64).
        labels: ``(N,)`` integer class indices in ``0 … num_classes−1``; ``-1`` = unlabelled (ignored).
        num_classes: ``C``, the number of classes (rows of the result).

    Returns:
        ``(prototypes, counts)``: ``prototypes`` is ``(C, d)`` float64, ``counts`` is ``(C,)`` int64
        (labelled samples per class). A class without samples gets a zero row and count 0.

    Raises:
        DataError: wrong shapes, non-finite embeddings, or labels outside ``-1 … C−1``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise DataError(f"num_classes must be a positive integer, got {num_classes!r}")
    c = int(num_classes)
    z = _as_matrix(embeddings, "embeddings")
    y = _as_labels(labels, z.shape[0], c)
    keep = y != UNLABELLED
    y = y[keep]
    z = z[keep]
    counts = np.bincount(y, minlength=c).astype(np.int64)
    sums = np.zeros((c, z.shape[1]), dtype=np.float64)
    np.add.at(sums, y, z)
    protos = np.zeros_like(sums)
    present = counts > 0
    protos[present] = sums[present] / counts[present, None]
    return protos, counts


def merge_prototypes(
    protos: Sequence[ArrayLike], counts: Sequence[ArrayLike | Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Count-weighted mean of client prototypes (server-side aggregation, as in FedProto).

    ``P_c = Σ_k n_{k,c} p_{k,c} / Σ_k n_{k,c}`` and ``N_c = Σ_k n_{k,c}``; a class that no client
    has (``N_c = 0``) gets a zero row and count 0. When every client's prototypes are exact class
    means, ``P_c`` equals the class mean over the union of the clients' samples.

    Args:
        protos: one ``(C, d)`` array per client.
        counts: one ``(C,)`` non-negative count array per client.

    Returns:
        ``(global_prototypes (C, d) float64, global_counts (C,) int64)``.
    """
    if len(protos) == 0:
        raise DataError("merge_prototypes needs at least one client's prototypes, got none")
    if len(protos) != len(counts):
        raise DataError(
            f"got {len(protos)} prototype arrays but {len(counts)} count arrays; pass one of each per client"
        )
    mats = [_as_matrix(p, f"protos[{k}]") for k, p in enumerate(protos)]
    shape = mats[0].shape
    for k, p in enumerate(mats):
        if p.shape != shape:
            raise DataError(f"protos[{k}] has shape {p.shape} but protos[0] has {shape}; all must be (C, d)")
    cnts: list[np.ndarray] = []
    for k, n in enumerate(counts):
        a = _as_counts(n, shape[0], f"counts[{k}]")
        assert a is not None
        cnts.append(a)
    total = np.sum(np.stack(cnts), axis=0).astype(np.int64)
    weighted = np.zeros(shape, dtype=np.float64)
    for p, n in zip(mats, cnts, strict=True):
        weighted += n[:, None].astype(np.float64) * p
    merged = np.zeros(shape, dtype=np.float64)
    present = total > 0
    merged[present] = weighted[present] / total[present, None]
    return merged, total


def update_prototypes(
    previous: tuple[np.ndarray, np.ndarray] | None,
    protos: Sequence[ArrayLike],
    counts: Sequence[ArrayLike | Sequence[int]],
) -> tuple[np.ndarray, np.ndarray]:
    """This round's global prototypes: the clients' merge (:func:`merge_prototypes`), where a class
    nobody reported this round keeps its ``previous`` prototype and count (a server keeps what it
    knew rather than forgetting a class for one round). ``previous`` is ``(prototypes, counts)``
    of the last round, or None in the first.
    """
    merged, merged_counts = merge_prototypes(protos, counts)
    if previous is not None:
        old, old_counts = previous
        missing = merged_counts == 0
        merged[missing] = np.asarray(old)[missing]
        merged_counts = np.where(missing, np.asarray(old_counts), merged_counts)
    return merged, merged_counts


def prototype_quality(prototypes: ArrayLike, counts: ArrayLike | Sequence[int] | None = None) -> float:
    """Mean pairwise cosine similarity of the class prototypes (FlexMod's prototype quality).

    ``q = 2 / (C'(C'−1)) · Σ_{i<j} cos(P_i, P_j)`` over the ``C'`` *present* classes (``counts > 0``;
    every row when ``counts`` is None). It lies in ``[−1, 1]``: orthogonal prototypes give 0,
    prototypes pointing the same way give 1, ``C'`` prototypes spread symmetrically around the origin
    give ``−1/(C'−1)`` (e.g. 3 at 120° in the plane give −0.5). *Lower is better separated.*

    Zero-norm rows: the cosine with a zero vector is undefined; it is taken as **0** (the zero vector
    is treated as orthogonal to everything), so no NaN appears and such a class pulls ``q`` toward 0.

    Returns:
        ``q`` as a float, or **NaN** when fewer than two classes are present: with no pair of
        classes there is nothing to compare, and NaN (rather than an exception) lets callers skip
        such clients with ``np.nanmean``. (A client holding a single class is common under non-IID
        partitions.)
    """
    p = _as_matrix(prototypes, "prototypes")
    cnt = _as_counts(counts, p.shape[0])
    if cnt is not None:
        p = p[cnt > 0]
    k = p.shape[0]
    if k < 2:
        return math.nan
    norms = np.linalg.norm(p, axis=1)
    nonzero = norms > 0.0
    unit = np.zeros_like(p)
    unit[nonzero] = p[nonzero] / norms[nonzero, None]
    sim = unit @ unit.T
    iu = np.triu_indices(k, 1)
    q = float(np.mean(np.clip(sim[iu], -1.0, 1.0)))
    return q


def nearest_prototype_accuracy(
    embeddings: ArrayLike,
    labels: ArrayLike,
    prototypes: ArrayLike,
    counts: ArrayLike | Sequence[int] | None = None,
) -> float:
    """Accuracy of the nearest-prototype (Euclidean) classifier: ``ŷ_i = argmin_c ‖z_i − P_c‖₂``.

    Used by BMSFed as a per-modality measure of how discriminative that modality's embeddings are
    (the ratio of two modalities' accuracies gives their imbalance ratio).

    Only *present* classes (``counts > 0``; every row when ``counts`` is None) are candidates;
    a sample whose class has no prototype can therefore never be classified correctly and counts as
    an error. Samples labelled ``-1`` are ignored. Ties go to the lowest class index.

    Returns:
        The fraction of labelled samples classified correctly, or NaN when there is no labelled
        sample or no present prototype (accuracy undefined).
    """
    z = _as_matrix(embeddings, "embeddings")
    p = _as_matrix(prototypes, "prototypes")
    if z.shape[1] != p.shape[1]:
        raise DataError(
            f"embeddings have {z.shape[1]} features but prototypes have {p.shape[1]}; "
            "they must come from the same encoder"
        )
    y = _as_labels(labels, z.shape[0], p.shape[0])
    cnt = _as_counts(counts, p.shape[0])
    classes = np.arange(p.shape[0]) if cnt is None else np.flatnonzero(cnt > 0)
    keep = y != UNLABELLED
    if not np.any(keep) or classes.size == 0:
        return math.nan
    d = cdist(z[keep], p[classes], metric="euclidean")
    pred = classes[np.argmin(d, axis=1)]
    return float(np.mean(pred == y[keep]))
