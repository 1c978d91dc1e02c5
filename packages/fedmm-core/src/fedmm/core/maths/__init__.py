"""Shared maths of multimodal FL: Shapley values, class prototypes, CKA, contrastive loss and recall."""

from fedmm.core.maths.cka import cka_aggregation_weights, cka_matrix, linear_cka
from fedmm.core.maths.contrastive import clip_loss, retrieval_recall
from fedmm.core.maths.prototypes import (
    class_prototypes,
    merge_prototypes,
    nearest_prototype_accuracy,
    prototype_quality,
)
from fedmm.core.maths.shapley import (
    minmax_normalize,
    normalize_nonnegative,
    shapley_exact,
    shapley_monte_carlo,
    shapley_values,
)

__all__ = [
    "cka_aggregation_weights",
    "cka_matrix",
    "class_prototypes",
    "clip_loss",
    "linear_cka",
    "merge_prototypes",
    "minmax_normalize",
    "nearest_prototype_accuracy",
    "normalize_nonnegative",
    "prototype_quality",
    "retrieval_recall",
    "shapley_exact",
    "shapley_monte_carlo",
    "shapley_values",
]
