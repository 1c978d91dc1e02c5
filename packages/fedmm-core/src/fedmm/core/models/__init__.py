"""Models: per-modality encoders, fusion, head, addressed by parameter groups."""

from fedmm.core.groups import expand_groups
from fedmm.core.models.encoders import (
    CNNEncoder,
    Conv1dEncoder,
    LSTMEncoder,
    MLPEncoder,
    TransformerStackEncoder,
    build_encoder,
)
from fedmm.core.models.har import ConvGRUEncoder, TokenAttentionFusion, fedmultimodal_har
from fedmm.core.models.model import (
    AttentionFusion,
    ConcatFusion,
    EmbeddingClassifier,
    LayeredEncoder,
    ModelOutput,
    MultimodalModel,
    absent_groups,
    deepest,
    late_fusion,
    layered_encoders,
    set_depth,
)

__all__ = [
    "AttentionFusion",
    "CNNEncoder",
    "ConcatFusion",
    "Conv1dEncoder",
    "ConvGRUEncoder",
    "EmbeddingClassifier",
    "LSTMEncoder",
    "LayeredEncoder",
    "MLPEncoder",
    "ModelOutput",
    "MultimodalModel",
    "TokenAttentionFusion",
    "TransformerStackEncoder",
    "absent_groups",
    "build_encoder",
    "deepest",
    "expand_groups",
    "fedmultimodal_har",
    "late_fusion",
    "layered_encoders",
    "set_depth",
]
