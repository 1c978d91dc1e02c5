"""fedmm.completion — FedMVP (Che, Wang, Liu, Ma, ECML-PKDD 2024, arXiv 2406.11048), in progress.

Built so far: wrappers of the frozen foundation models (:mod:`fedmm.completion.foundation`), the
retrieval completer (:class:`~fedmm.completion.completion.PoolCompleter`), the MCM / RAM losses,
the model (frozen extractors + learnable joint encoder) and the technique with CKA aggregation;
its benchmark does not reach the issue's +5 points over zero-filling yet (issue 8 stays open).
"""

from fedmm.completion.completion import PoolCompleter
from fedmm.completion.losses import mcm_loss, nt_xent, ram_loss
from fedmm.completion.model import FedMVPModel, pretrain_extractors
from fedmm.completion.technique import FedMVP

__all__ = ["FedMVP", "FedMVPModel", "PoolCompleter", "mcm_loss", "nt_xent", "pretrain_extractors", "ram_loss"]
