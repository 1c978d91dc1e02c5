"""Per-modality embeddings of a client's data and the class prototypes built from them.

Several techniques summarise a client's encoders by class prototypes (BMSFed's imbalance ratio and
modal-enhancement loss, FlexMod's encoder quality): one forward pass over the data, then the
per-class mean embedding of each modality over the labelled samples that have it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from fedmm.core.data.types import MISSING_LABEL, Batch
from fedmm.core.maths.prototypes import class_prototypes

__all__ = ["Embeddings", "collect_embeddings", "modality_prototypes"]


class Embeddings:
    """Embeddings ``z[m]`` ``(N, d_m)``, the presence mask ``(N, M)`` the model used, labels ``(N,)``."""

    def __init__(self, z: dict[str, np.ndarray], present: np.ndarray, labels: np.ndarray) -> None:
        self.z = z
        self.present = present
        self.labels = labels

    def labelled(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and labels of the labelled samples that have ``modality``."""
        j = list(self.z).index(modality)
        keep = self.present[:, j] & (self.labels != MISSING_LABEL)
        return self.z[modality][keep], self.labels[keep]


@torch.no_grad()
def collect_embeddings(model: nn.Module, batches: Iterable[Batch]) -> Embeddings:
    """Run ``model`` (in its current mode; call ``eval()`` first for inference) over ``batches``."""
    zs: dict[str, list[np.ndarray]] = {}
    present: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for batch in batches:
        out = model(batch)
        for m, z in out.embeddings.items():
            zs.setdefault(m, []).append(z.cpu().numpy())
        present.append(out.present.cpu().numpy())
        labels.append(batch.labels.numpy())
    if not labels:
        return Embeddings({}, np.zeros((0, 0), dtype=bool), np.zeros(0, dtype=np.int64))
    return Embeddings(
        {m: np.concatenate(v) for m, v in zs.items()}, np.concatenate(present), np.concatenate(labels)
    )


def modality_prototypes(
    embeddings: Embeddings, num_classes: int, modalities: Iterable[str] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{m: (prototypes (C, d), counts (C,))}`` for each modality some labelled sample has."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for m in modalities if modalities is not None else embeddings.z:
        z, y = embeddings.labelled(m)
        if y.size:
            out[m] = class_prototypes(z, y, num_classes)
    return out
