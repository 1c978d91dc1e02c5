"""BMSFed's client-side quantities: the modal-enhancement (ME) loss and the imbalance ratios.

Reference: Fan et al., BMSFed (ECCV 2024, arXiv 2401.00403), spec §3.1–3.2.

* ME loss of modality ``m``: cross-entropy over negative Euclidean distances to the global class
  prototypes, ``L_ME = −mean_i log softmax(−‖z_i − c_j‖)_{y_i}`` — it pulls a sample's embedding
  toward its class prototype and away from the others.
* Batch imbalance ratio ``ρ_batch = s_A / s_V`` with ``s_m = Σ_i softmax(−d(z_i^m, c^{G,m}))_{y_i}``:
  ``> 1`` means the first modality already fits the prototypes better, so the second is enhanced.
* Client imbalance ratio ``ρ_k = acc_A / (acc_V + ε)`` from nearest-local-prototype accuracies.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "EPS",
    "client_imbalance_ratio",
    "modal_enhancement_loss",
    "prototype_distances",
    "prototype_scores",
    "prototype_temperature",
]

EPS = 1e-8
"""Added to the denominator of the imbalance ratios (spec §3.2, ours)."""


def prototype_distances(z: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` Euclidean distances ``‖z_i − c_j‖₂``.

    Written out (not ``torch.cdist``) with a tiny floor under the square root, so the gradient
    stays finite when an embedding sits exactly on a prototype.
    """
    diff = z.unsqueeze(1) - prototypes.to(z.dtype).unsqueeze(0)
    return torch.sqrt((diff * diff).sum(-1).clamp_min(1e-12))


def modal_enhancement_loss(
    z: torch.Tensor, y: torch.Tensor, prototypes: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``L_ME = −mean_i log[exp(−d(z_i, c_{y_i})/τ) / Σ_j exp(−d(z_i, c_j)/τ)]`` = ``cross_entropy(−d/τ, y)``.

    ``τ = 1`` is the paper's loss. See :func:`prototype_temperature` for the scale-free ``τ`` the
    technique uses by default.

    Args:
        z: ``(B, d)`` embeddings of one modality.
        y: ``(B,)`` class indices in ``0 … C−1``.
        prototypes: ``(C, d)`` global class prototypes of that modality.
        temperature: ``τ > 0`` dividing the distances.
    """
    return F.cross_entropy(-prototype_distances(z, prototypes) / temperature, y)


def prototype_scores(
    z: torch.Tensor, y: torch.Tensor, prototypes: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``s = Σ_i softmax(−d(z_i, c)/τ)_{y_i}``: how well a batch's embeddings fit their class prototypes."""
    p = torch.softmax(-prototype_distances(z, prototypes) / temperature, dim=1)
    return p.gather(1, y.unsqueeze(1)).sum()


def prototype_temperature(prototypes: torch.Tensor) -> float:
    """``τ`` = the mean pairwise distance between the prototypes (1 if fewer than two, or all equal).

    Why: with raw distances (τ = 1) the ME loss keeps rewarding embeddings that move *beyond*
    their prototype, away from the others, so each round's prototypes come back larger; at our
    learning rates (SGD 0.05, momentum 0.9; the paper uses 1e-3) the embedding scale grew
    exponentially and training diverged within ~15 rounds on av-digits. Dividing by the prototypes'
    own spread makes the loss invariant to the embedding scale.
    """
    c = prototypes.shape[0]
    if c < 2:
        return 1.0
    d = prototype_distances(prototypes, prototypes)
    mean = float(d.sum() - d.diagonal().sum()) / (c * (c - 1))
    return mean if math.isfinite(mean) and mean > 1e-6 else 1.0


def client_imbalance_ratio(acc_first: float, acc_second: float, eps: float = EPS) -> float:
    """``ρ_k = acc_A / (acc_V + ε)`` (> 1: the first modality dominates); NaN if either is unknown."""
    if not (math.isfinite(acc_first) and math.isfinite(acc_second)):
        return math.nan
    return float(acc_first / (acc_second + eps))
