"""FedMML layer-wise training (Tun et al., arXiv 2407.15426): :class:`LayerWise` with modes ``lw``
(LW-FedMML), ``prog`` (Prog-FedMML) and ``e2e`` (end-to-end FedMML), its stage schedule, the
Hugging Face text tower (:mod:`fedmm.layerwise.fedmml.hf`, needs ``transformers``) and the
benchmark (:mod:`fedmm.layerwise.fedmml.bench`).
"""

from fedmm.layerwise.fedmml.schedule import StageSchedule
from fedmm.layerwise.fedmml.technique import MODES, LayerWise, layer_counts

__all__ = ["MODES", "LayerWise", "StageSchedule", "layer_counts"]
