"""Models: per-modality encoders, fusion, head, addressed by parameter groups."""

from fedmm.core.models.encoders import (
    CNNEncoder,
    Conv1dEncoder,
    LSTMEncoder,
    MLPEncoder,
    TransformerStackEncoder,
    build_encoder,
)
from fedmm.core.models.model import (
    AttentionFusion,
    ConcatFusion,
    ModelOutput,
    MultimodalModel,
    expand_groups,
    late_fusion,
)

__all__ = [
    "AttentionFusion",
    "CNNEncoder",
    "ConcatFusion",
    "Conv1dEncoder",
    "LSTMEncoder",
    "MLPEncoder",
    "ModelOutput",
    "MultimodalModel",
    "TransformerStackEncoder",
    "build_encoder",
    "expand_groups",
    "late_fusion",
]
