"""fedmm.completion — FedMVP (Che, Wang, Liu, Ma, ECML-PKDD 2024, arXiv 2406.11048).

The technique (:class:`~fedmm.completion.technique.FedMVP`: completion in ``prepare``, MCM and RAM
losses, CKA aggregation), the retrieval completer
(:class:`~fedmm.completion.completion.PoolCompleter`), the frozen foundation models
(:mod:`fedmm.completion.foundation`: CLIP features, BLIP captioner, Stable Diffusion) and the model
(frozen extractors + learnable joint encoder). Where it departs from the paper, and what its
benchmark measures: ``docs/methods/fedmvp.md``.
"""

from fedmm.completion.completion import PoolCompleter
from fedmm.completion.losses import mcm_loss, nt_xent, ram_loss
from fedmm.completion.model import FedMVPModel, pretrain_extractors
from fedmm.completion.technique import FedMVP

__all__ = ["FedMVP", "FedMVPModel", "PoolCompleter", "mcm_loss", "nt_xent", "pretrain_extractors", "ram_loss"]
