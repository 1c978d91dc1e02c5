"""Per-modality classifiers fused at decision level: the model FedMFS trains and exchanges.

FedMFS (Yuan, Han, Chellapandi, Żak, Brinton, "FedMFS: Federated Multimodal Fusion Learning with
Selective Modality Communication", IEEE ICC 2024, arXiv 2310.07048) gives every modality its own *independent*
model mapping that modality straight to class log-probabilities; a client fuses them with a small
local ensemble. Each modality model (encoder + its own linear head) is one parameter group,
``encoder.<m>``, so it is the unit of upload.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fedmm.core.api import (
    Batch,
    ConfigError,
    ModalitySpec,
    ModelOutput,
    build_encoder,
    encoder_group,
    module_device,
    out_dim,
)


class UnimodalClassifier(nn.Module):
    """One modality model: a core encoder followed by its own Linear head to class logits."""

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(out_dim(encoder), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class ModalityEnsembleModel(nn.Module):
    """Independent modality models, fused by averaging their log-probabilities.

    ``forward(batch, active=None)`` gives a :class:`ModelOutput` whose ``logits`` are, per sample,
    the mean over its present (and active) modalities of each modality model's log-softmax — a
    decision-level fusion that core's ``evaluate`` can score. ``embeddings[m]`` holds modality
    ``m``'s own logits (zero where absent), which is what FedMFS trains with one NLL term per
    modality. An encoder whose modality is absent from the whole batch is not run.
    """

    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
        num_classes: int,
        *,
        encoders: Mapping[str, str] | None = None,
        encoder_options: Mapping[str, Mapping[str, object]] | None = None,
        embed_dim: int = 64,
    ) -> None:
        super().__init__()
        encoders = dict(encoders or {})
        unknown = (set(encoders) | set(encoder_options or {})) - {m.name for m in modalities}
        if unknown:
            raise ConfigError(f"encoders given for unknown modalities {sorted(unknown)}")
        self.modality_specs = tuple(modalities)
        self.modalities = tuple(m.name for m in modalities)
        self.num_classes = num_classes
        self.encoders = nn.ModuleDict(
            {
                m.name: UnimodalClassifier(
                    build_encoder(
                        m,
                        encoders.get(m.name, "auto"),
                        embed_dim,
                        **dict((encoder_options or {}).get(m.name, {})),
                    ),
                    num_classes,
                )
                for m in modalities
            }
        )
        self._groups: dict[str, tuple[str, ...]] | None = None

    def forward(self, batch: Batch, active: Iterable[str] | None = None) -> ModelOutput:
        # A batch built on the host (a technique's own pass over client data) meets the weights.
        batch = batch.to(module_device(self))
        present = batch.present_for(active)
        n = len(batch)
        embeddings: dict[str, torch.Tensor] = {}
        total = present.new_zeros((n, self.num_classes), dtype=torch.float32)
        for i, m in enumerate(self.modalities):
            mask = present[:, i]
            if batch.has_any(i, mask):
                logits = self.encoders[m](batch.features[m])
                w = mask.unsqueeze(1).to(logits.dtype)
                embeddings[m] = logits * w
                total = total + F.log_softmax(logits, dim=1) * w
            else:
                embeddings[m] = present.new_zeros((n, self.num_classes), dtype=torch.float32)
        count = present.sum(dim=1, keepdim=True).clamp_min(1).to(total.dtype)
        fused = total / count
        return ModelOutput(fused, embeddings, fused, present)

    def parameter_groups(self) -> dict[str, tuple[str, ...]]:
        """``encoder.<m>`` → the state_dict keys of modality ``m``'s model (encoder and head)."""
        if self._groups is None:
            groups: dict[str, list[str]] = {}
            for key in self.state_dict():
                top, _, rest = key.partition(".")
                if top != "encoders":  # pragma: no cover - all parameters live in self.encoders
                    raise KeyError(f"parameter {key!r} is outside the modality models")
                groups.setdefault(encoder_group(rest.partition(".")[0]), []).append(key)
            self._groups = {g: tuple(keys) for g, keys in groups.items()}
        return self._groups

    def parameter_counts(self) -> dict[str, int]:
        """Number of parameters of each modality model (its size |θ_m| in the priority)."""
        return {m: sum(p.numel() for p in self.encoders[m].parameters()) for m in self.modalities}


def modality_ensemble(
    modalities: Sequence[ModalitySpec],
    num_classes: int,
    *,
    encoders: Mapping[str, str] | None = None,
    encoder_options: Mapping[str, Mapping[str, object]] | None = None,
    embed_dim: int = 64,
) -> ModalityEnsembleModel:
    """Build a :class:`ModalityEnsembleModel` (``encoders`` maps a modality to a core encoder kind)."""
    return ModalityEnsembleModel(
        modalities, num_classes, encoders=encoders, encoder_options=encoder_options, embed_dim=embed_dim
    )


__all__ = ["ModalityEnsembleModel", "UnimodalClassifier", "modality_ensemble"]
