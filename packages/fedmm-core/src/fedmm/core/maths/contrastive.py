"""Contrastive maths for paired modalities: the CLIP loss and cross-modal retrieval recall.

Rows ``i`` of ``a`` and ``b`` are the two modalities of sample ``i`` (the positives); every other
row of the batch is a negative.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["clip_loss", "retrieval_recall"]


def clip_loss(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP; Radford et al., 2021): ``½[CE(S, I) + CE(Sᵀ, I)]``, ``S = â b̂ᵀ / τ``.

    ``â``, ``b̂`` are the L2-normalised rows. With ``n`` rows and ``S`` constant the loss is
    ``log n``. Needs at least two rows (one row has no negative).
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(
            f"clip_loss needs two (n, d) tensors of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"clip_loss temperature must be > 0, got {temperature}")
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def retrieval_recall(a: np.ndarray, b: np.ndarray, k: int = 1) -> tuple[float, float]:
    """Recall@k of cross-modal retrieval by cosine similarity: ``(a→b, b→a)``.

    ``a→b``: the fraction of rows ``i`` of ``a`` whose partner ``b[i]`` is among the ``k`` rows of
    ``b`` most similar to ``a[i]`` (ties broken toward the lower index). Chance is ``k / n``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(
            f"retrieval_recall needs two non-empty (n, d) arrays of one shape, got {a.shape}, {b.shape}"
        )
    if k < 1:
        raise ValueError(f"retrieval_recall k must be >= 1, got {k}")
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    sim = an @ bn.T

    def recall(s: np.ndarray) -> float:
        # Rank of the partner = how many candidates score strictly higher (ties: lower index first).
        own = np.diag(s)[:, None]
        idx = np.arange(s.shape[0])
        higher = (s > own) | ((s == own) & (idx[None, :] < idx[:, None]))
        return float(np.mean(higher.sum(axis=1) < k))

    return recall(sim), recall(sim.T)
