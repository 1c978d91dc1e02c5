"""fedmm.core — federated multimodal learning: data model, round protocol, FedAvg, ledger, shared maths,
in-process engine and CLI.

>>> from fedmm.core import Federation, FedAvg, datasets, models
>>> data = datasets.load("synthetic", clients=20, partition="dirichlet", alpha=0.5)
>>> fed = Federation(models.late_fusion(data.modalities, data.num_classes), data, FedAvg(clients_per_round=5))
>>> history = fed.run(rounds=5)
"""

from fedmm.core import datasets, models
from fedmm.core.arrays import GroupedArrays
from fedmm.core.engine import Engine, InProcessEngine, TrainOutcome, TrainRequest
from fedmm.core.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DataFileError,
    FedmmError,
    MissingDependencyError,
    RunFailedError,
    UpdateError,
)
from fedmm.core.federation import Federation, History
from fedmm.core.ledger import ClientCost, Ledger, ServerCost
from fedmm.core.protocol import (
    ClientContext,
    ClientResult,
    Combination,
    FedAvg,
    ResultsContext,
    RoundContext,
    Strategy,
    Technique,
    TrainPlan,
    fedavg,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ClientContext",
    "ClientCost",
    "ClientResult",
    "Combination",
    "ConfigError",
    "DataError",
    "DataFileError",
    "Engine",
    "FedAvg",
    "Federation",
    "FedmmError",
    "GroupedArrays",
    "History",
    "InProcessEngine",
    "Ledger",
    "MissingDependencyError",
    "ResultsContext",
    "RoundContext",
    "RunFailedError",
    "ServerCost",
    "Strategy",
    "Technique",
    "TrainOutcome",
    "TrainPlan",
    "TrainRequest",
    "UpdateError",
    "datasets",
    "fedavg",
    "models",
]
