"""fedmm.layerwise — LW-FedMML, Prog-FedMML and end-to-end FedMML (Tun et al., arXiv 2407.15426).

Layer-wise training grows each transformer tower by a block of layers per stage and trains only
the newest block (LW) or every grown block (Prog), to cut client memory, FLOPs and traffic. The
method lives in :mod:`fedmm.layerwise.fedmml`; its names are re-exported here.
"""

from fedmm.layerwise.fedmml import MODES, LayerWise, StageSchedule, layer_counts

__all__ = ["MODES", "LayerWise", "StageSchedule", "layer_counts"]
