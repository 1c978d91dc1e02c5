"""FedMVP's two representation losses (spec §3.2; Che, Wang, Liu, Ma, arXiv 2406.11048).

* **MCM** (multimodal contrastive matching): for each modality ``m``, NT-Xent (SimCLR) over the
  ``2B`` embeddings ``{z_i} ∪ {u_{m,i}}`` — the joint embedding ``z_i`` and the unimodal embedding
  ``u_{m,i}`` of sample ``i`` are positives, every other embedding of the ``2B`` a negative, both
  directions as anchors: ``ℓ_a = −log[exp(s_a·s_p(a)/τ) / Σ_{b≠a} exp(s_a·s_b/τ)]`` on unit vectors.
  ``L_MCM = α · Σ_m mean_a ℓ_a``.
* **RAM** (representation-aligned margin): pull the joint embedding toward a unimodal one only
  when that modality alone classifies the batch better: with ``ℓ_m = CE(W_c u_m, y)``, add
  ``‖Z − U_m‖_F`` if ``ℓ_m < L_CE``; ``L_RAM = β_r · Σ_m (gated terms) / B``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

__all__ = ["mcm_loss", "nt_xent", "ram_loss"]


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent over ``[a; b]`` (``2B`` rows) with row ``i`` of ``a`` and of ``b`` as positives.

    Mean over all ``2B`` anchors. Needs ``B ≥ 1`` (with ``B = 1`` the only other row is the positive,
    so the loss is 0).
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(
            f"nt_xent needs two (B, d) tensors of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = a.shape[0]
    s = F.normalize(torch.cat([a, b]), dim=1)
    logits = s @ s.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=s.device), float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n, device=s.device), torch.arange(0, n, device=s.device)])
    return F.cross_entropy(logits, positive)


def mcm_loss(
    joint: torch.Tensor, unimodal: Mapping[str, torch.Tensor], temperature: float = 0.1, alpha: float = 0.01
) -> torch.Tensor:
    """``α · Σ_m NT-Xent(z, u_m)`` over the modalities given (each ``(B, d)`` like ``joint``)."""
    if not unimodal:
        return joint.new_zeros(())
    return alpha * torch.stack([nt_xent(joint, u, temperature) for u in unimodal.values()]).sum()


def ram_loss(
    joint: torch.Tensor,
    unimodal: Mapping[str, torch.Tensor],
    unimodal_ce: Mapping[str, torch.Tensor],
    joint_ce: torch.Tensor,
    beta: float = 0.5,
) -> torch.Tensor:
    """``β_r · Σ_m [ℓ_m < L_CE] · ‖Z − U_m‖_F / B`` (the gate compares detached batch losses)."""
    terms = [
        torch.linalg.norm(joint - unimodal[m])
        for m in unimodal
        if float(unimodal_ce[m].detach()) < float(joint_ce.detach())
    ]
    if not terms:
        return joint.new_zeros(())
    return beta * torch.stack(terms).sum() / joint.shape[0]
