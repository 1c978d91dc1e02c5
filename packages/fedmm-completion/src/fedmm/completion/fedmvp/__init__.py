"""FedMVP (Che, Wang, Liu, Ma, ECML-PKDD 2024, arXiv 2406.11048).

The technique (:class:`~fedmm.completion.fedmvp.technique.FedMVP`: completion in ``prepare``, MCM
and RAM losses, CKA aggregation), the retrieval completer
(:class:`~fedmm.completion.fedmvp.completion.PoolCompleter`), the cross-modal generator the server
pre-trains on its public split and its completer (:mod:`fedmm.completion.fedmvp.generators`), the
frozen foundation models
(:mod:`fedmm.completion.fedmvp.foundation`: CLIP features, BLIP captioner, Stable Diffusion), the
model (frozen extractors + learnable joint encoder) and the benchmark
(:mod:`fedmm.completion.fedmvp.bench`). Where it departs from the paper, and what its benchmark
measures: ``docs/methods/fedmvp.md``.

Which claims hold (protocol 3, held-out seeds 10–14, ``docs/results/fedmvp-quick.heldout.json``):
the generative path does not beat zero-filling by the targeted 5 points on hapt, nor the baseline
trained on the same public pairs; retrieval of real public pairs helps on av-digits, generation
does not.
"""

from fedmm.completion.fedmvp.completion import PoolCompleter
from fedmm.completion.fedmvp.generators import CrossModalGenerator, GenerativeCompleter
from fedmm.completion.fedmvp.losses import mcm_loss, nt_xent, ram_loss
from fedmm.completion.fedmvp.model import FedMVPModel, pretrain_extractors
from fedmm.completion.fedmvp.technique import FedMVP

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
