"""FedMFS: selective modality upload (Yuan et al., ICC 2024, arXiv 2310.07048).

Each client trains one independent model per modality, fuses them locally with a small ensemble,
and uploads only the γ modality models with the highest priority ``α_s ϕ̂ + α_c (1 − ŝ)``
(Shapley impact on the local ensemble vs. model size).
"""

from fedmm.select.fedmfs.evaluation import (
    modality_predictions,
    personalised_accuracies,
    personalised_accuracy,
)
from fedmm.select.fedmfs.model import ModalityEnsembleModel, UnimodalClassifier, modality_ensemble
from fedmm.select.fedmfs.priority import normalise, priority, random_gamma, top_gamma
from fedmm.select.fedmfs.technique import FedMFS, FedMFSWarning

__all__ = [
    "FedMFS",
    "FedMFSWarning",
    "ModalityEnsembleModel",
    "UnimodalClassifier",
    "modality_ensemble",
    "modality_predictions",
    "normalise",
    "personalised_accuracies",
    "personalised_accuracy",
    "priority",
    "random_gamma",
    "top_gamma",
]
