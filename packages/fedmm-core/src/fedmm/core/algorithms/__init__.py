"""Standard federated optimisation algorithms, on the round's hooks so they compose with techniques.

* Server optimizers (:mod:`~fedmm.core.algorithms.server_optimizers`): :class:`FedAvgM`,
  :class:`FedAdam`, :class:`FedYogi`, :class:`FedAdagrad` — ``FedAvg(...,
  server_optimizer=FedAdam())`` or ``[strategy] server_optimizer = "fedadam"``. They step the global
  model from whatever the round's aggregation produced.
* Techniques: :class:`FedProx` (:mod:`~fedmm.core.algorithms.fedprox`, the proximal term),
  :class:`Scaffold` (:mod:`~fedmm.core.algorithms.scaffold`, control variates) and
  :class:`FedNova` (:mod:`~fedmm.core.algorithms.fednova`, normalised averaging) —
  ``[[techniques]] name = "fedprox"`` / ``"scaffold"`` / ``"fednova"``.
"""

from fedmm.core.algorithms.fednova import FedNova
from fedmm.core.algorithms.fedprox import FedProx
from fedmm.core.algorithms.scaffold import Scaffold
from fedmm.core.algorithms.server_optimizers import (
    SERVER_OPTIMIZERS,
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedYogi,
    ServerOptimizer,
    server_optimizer,
)

__all__ = [
    "SERVER_OPTIMIZERS",
    "FedAdagrad",
    "FedAdam",
    "FedAvgM",
    "FedNova",
    "FedProx",
    "FedYogi",
    "Scaffold",
    "ServerOptimizer",
    "server_optimizer",
]
