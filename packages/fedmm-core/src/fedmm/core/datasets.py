"""``from fedmm.core import datasets``: load, federate and list datasets."""

from fedmm.core.data.partition import (
    dirichlet,
    iid,
    label_noise,
    missing_labels,
    missing_modalities,
    modality_availability,
    natural,
)
from fedmm.core.data.registry import DatasetInfo, available, build, federate, load, load_central
from fedmm.core.data.types import (
    MISSING_LABEL,
    Batch,
    CentralDataset,
    ClientData,
    FederatedDataset,
    ModalitySpec,
    Partition,
    SampleSet,
)

__all__ = [
    "MISSING_LABEL",
    "Batch",
    "CentralDataset",
    "ClientData",
    "DatasetInfo",
    "FederatedDataset",
    "ModalitySpec",
    "Partition",
    "SampleSet",
    "available",
    "build",
    "dirichlet",
    "federate",
    "iid",
    "label_noise",
    "load",
    "load_central",
    "missing_labels",
    "missing_modalities",
    "modality_availability",
    "natural",
]
