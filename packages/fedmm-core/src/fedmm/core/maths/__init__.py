"""Shared maths of multimodal federated learning: Shapley values, class prototypes and CKA."""

from fedmm.core.maths.cka import cka_aggregation_weights, cka_matrix, linear_cka
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
    "linear_cka",
    "merge_prototypes",
    "minmax_normalize",
    "nearest_prototype_accuracy",
    "normalize_nonnegative",
    "prototype_quality",
    "shapley_exact",
    "shapley_monte_carlo",
    "shapley_values",
]
