"""fedmm.completion — FedMVP (Che, Wang, Liu, Ma, ECML-PKDD 2024, arXiv 2406.11048).

The method lives in :mod:`fedmm.completion.fedmvp` (the technique, the completers, the frozen
foundation models, the model and the benchmark); its names are re-exported here. Where it departs
from the paper, and what its benchmark measures: ``docs/methods/fedmvp.md``.
"""

from fedmm.completion.fedmvp import (
    CrossModalGenerator,
    FedMVP,
    FedMVPModel,
    GenerativeCompleter,
    PoolCompleter,
    mcm_loss,
    nt_xent,
    pretrain_extractors,
    ram_loss,
)

__all__ = [
    "CrossModalGenerator",
    "FedMVP",
    "FedMVPModel",
    "GenerativeCompleter",
    "PoolCompleter",
    "mcm_loss",
    "nt_xent",
    "pretrain_extractors",
    "ram_loss",
]
