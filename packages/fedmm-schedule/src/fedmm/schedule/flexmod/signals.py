"""FlexMod's two server-side signals per modality encoder (spec §3.1–3.3).

* **Quality** ``q_m``: mean pairwise cosine similarity of the global class prototypes of encoder
  ``m`` (core's :func:`~fedmm.core.maths.prototypes.prototype_quality`); lower = better separated.
  The *training need* is ``u_m = max(q_m, 0) / Σ max(q, 0)`` (uniform when every ``q ≤ 0``).
* **Importance** ``φ̂_m``: the Shapley value of modality ``m`` for the global model's validation
  accuracy, where a coalition ``T`` is evaluated with the other modalities masked (zero embedding,
  the same masking the model sees when it trains a combination); ``φ̂ = max(φ, 0) / Σ max(φ, 0)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from torch import nn

from fedmm.core.api import SampleSet, predict, prototype_quality, shapley_values

__all__ = ["coalition_accuracy", "importance", "normalise_positive", "quality", "training_need"]


def normalise_positive(values: Mapping[str, float]) -> dict[str, float]:
    """``max(v, 0) / Σ max(v, 0)``; uniform when nothing is positive."""
    pos = {k: max(float(v), 0.0) if np.isfinite(v) else 0.0 for k, v in values.items()}
    total = sum(pos.values())
    if total <= 0:
        return {k: 1.0 / len(pos) for k in pos} if pos else {}
    return {k: v / total for k, v in pos.items()}


def quality(prototypes: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """``q_m`` for each modality from its global ``(prototypes, counts)``."""
    return {m: prototype_quality(p, c) for m, (p, c) in prototypes.items()}


def training_need(q: Mapping[str, float]) -> dict[str, float]:
    """``u_m = max(q_m, 0) / Σ max(q, 0)``: poorly separated prototypes need more training."""
    return normalise_positive(q)


def coalition_accuracy(model: nn.Module, samples: SampleSet, coalition: Sequence[str]) -> float:
    """Accuracy of ``model`` on ``samples`` with only ``coalition``'s modalities active."""
    logits, labels = predict(model, samples, active=tuple(coalition))
    if labels.size == 0:
        return float("nan")
    return float(np.mean(logits.argmax(axis=1) == labels))


def importance(
    model: nn.Module, samples: SampleSet, modalities: Sequence[str]
) -> tuple[dict[str, float], dict[str, float], float]:
    """``(φ, φ̂, v(all))``: raw and normalised Shapley values and the full model's accuracy."""
    cache: dict[frozenset[str], float] = {}

    def value(coalition: frozenset[str]) -> float:
        if coalition not in cache:
            cache[coalition] = coalition_accuracy(model, samples, [m for m in modalities if m in coalition])
        return cache[coalition]

    phi = shapley_values(value, list(modalities))
    return phi, normalise_positive(phi), value(frozenset(modalities))
