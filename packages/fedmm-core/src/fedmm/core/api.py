"""The technique-author API: everything a technique package may import from fedmm-core.

A technique package (fedmm-select, fedmm-schedule, ...) imports core only from this module
(its benchmarks may also use the experiment harness, datasets and engines). What is here is
stable and documented; everything else in core may change without notice. A test
(``integration_tests/test_technique_api.py``) enforces that technique modules import nothing
else from core and no underscore name from anywhere.

Groups of names (see ``docs/architecture.md``, "The technique-author API"):

- **The round protocol**: :class:`Technique` and its hooks' types (:class:`TrainPlan`,
  :class:`Combination`, :class:`RoundContext` for ``select_clients``/``configure``,
  :class:`ResultsContext` for ``aggregate``/``after_round``, :class:`ClientContext` for the client
  hooks, :class:`ClientResult`), and the declarations checked before any round runs
  (:class:`ModelNeeds`, :class:`BuiltModel`).
- **Arguments and errors**: :class:`TechniqueArguments` (a technique's arguments, declared once
  as a pydantic model: validation, ``config()``, schema and docs tables), ``python_only`` fields,
  :class:`ArgumentProblem` for checks across fields, the other argument checks that raise
  :class:`ArgumentError` naming the argument; the error types.
- **Data**: :class:`Batch`, :class:`ClientData`, :class:`SampleSet`, :class:`FederatedDataset`,
  :class:`ModalitySpec`, ``MISSING_LABEL``.
- **Parameter groups**: build, parse and match group names (:mod:`fedmm.core.groups`) instead of
  splitting strings.
- **Models**: the typed protocols a technique may rely on (:class:`ModelOutput` of every forward
  pass, :class:`EmbeddingClassifier`, :class:`LayeredEncoder`), core's late-fusion model and
  encoders for a technique that builds its own.
- **Embeddings and prototypes**: per-class embeddings of a model on data, and their merge
  across clients (count-weighted, keeping last round's value for a class nobody reported).
- **Measured cost**: :func:`measure_train_step` (the FLOPs the ledger charges a client for one
  step), :func:`measure_step` for any other block, and the ledger's records.
- **Devices**: :func:`module_device` (where a model's weights are: what a hook allocates or
  moves a host tensor to) and :func:`resolve_device`.
- **Shared maths**: Shapley values, CKA weights, the CLIP loss.
- **Running a federation** (for a technique's environments and examples, e.g. FlexMod's gymnasium
  env): :class:`Federation`, :class:`FedAvg`, :class:`Strategy`, :class:`History`, and
  :func:`federate` / :func:`make_synthetic` to build a federated dataset.
"""

from __future__ import annotations

from fedmm.core.arguments import (
    ArgumentProblem,
    TechniqueArguments,
    choice,
    did_you_mean,
    flag,
    integer,
    known_keys,
    number,
    optional_integer,
    optional_number,
    optional_text,
    python_only,
)
from fedmm.core.arrays import GroupedArrays, contiguous, get_arrays, model_groups, set_arrays, weighted_mean
from fedmm.core.client import measure_train_step
from fedmm.core.console import bar
from fedmm.core.data.captions import WordTokenizer
from fedmm.core.data.registry import federate
from fedmm.core.data.synthetic import make_synthetic
from fedmm.core.data.types import (
    MISSING_LABEL,
    Batch,
    CentralDataset,
    ClientData,
    FederatedDataset,
    ModalitySpec,
    SampleSet,
)
from fedmm.core.devices import module_device, resolve_device
from fedmm.core.embeddings import collect_embeddings, modality_prototypes
from fedmm.core.errors import ArgumentError, ConfigError, DataError, FedmmError
from fedmm.core.evaluate import predict
from fedmm.core.federation import Federation, History
from fedmm.core.groups import (
    encoder_group,
    expand_groups,
    expand_modalities,
    matches,
    modality_of,
    of_modality,
    part_of,
)
from fedmm.core.ledger import ClientCost, Ledger, ServerCost
from fedmm.core.maths.cka import cka_aggregation_weights
from fedmm.core.maths.contrastive import clip_loss
from fedmm.core.maths.prototypes import (
    class_prototypes,
    merge_prototypes,
    nearest_prototype_accuracy,
    prototype_quality,
    update_prototypes,
)
from fedmm.core.maths.shapley import minmax_normalize, shapley_values
from fedmm.core.measure import StepMeasurement, measure_step
from fedmm.core.models.encoders import CNNEncoder, Conv1dEncoder, build_encoder
from fedmm.core.models.model import (
    EmbeddingClassifier,
    LayeredEncoder,
    ModelOutput,
    MultimodalModel,
    late_fusion,
    layered_encoders,
    out_dim,
)
from fedmm.core.protocol import (
    BuiltModel,
    ClientContext,
    ClientResult,
    Combination,
    FedAvg,
    ModelFactory,
    ModelNeeds,
    ResultsContext,
    RoundContext,
    Strategy,
    Technique,
    TrainPlan,
)

__all__ = [
    "MISSING_LABEL",
    "ArgumentError",
    "ArgumentProblem",
    "Batch",
    "BuiltModel",
    "CNNEncoder",
    "CentralDataset",
    "ClientContext",
    "ClientCost",
    "ClientData",
    "ClientResult",
    "Combination",
    "ConfigError",
    "Conv1dEncoder",
    "DataError",
    "EmbeddingClassifier",
    "FedAvg",
    "FederatedDataset",
    "Federation",
    "FedmmError",
    "GroupedArrays",
    "History",
    "LayeredEncoder",
    "Ledger",
    "ModalitySpec",
    "ModelFactory",
    "ModelNeeds",
    "ModelOutput",
    "MultimodalModel",
    "ResultsContext",
    "RoundContext",
    "SampleSet",
    "ServerCost",
    "StepMeasurement",
    "Strategy",
    "Technique",
    "TechniqueArguments",
    "TrainPlan",
    "WordTokenizer",
    "bar",
    "build_encoder",
    "choice",
    "cka_aggregation_weights",
    "class_prototypes",
    "clip_loss",
    "collect_embeddings",
    "contiguous",
    "did_you_mean",
    "encoder_group",
    "expand_groups",
    "expand_modalities",
    "federate",
    "flag",
    "get_arrays",
    "integer",
    "known_keys",
    "late_fusion",
    "layered_encoders",
    "make_synthetic",
    "matches",
    "measure_step",
    "measure_train_step",
    "merge_prototypes",
    "minmax_normalize",
    "modality_of",
    "modality_prototypes",
    "model_groups",
    "module_device",
    "nearest_prototype_accuracy",
    "number",
    "of_modality",
    "optional_integer",
    "optional_number",
    "optional_text",
    "out_dim",
    "part_of",
    "predict",
    "prototype_quality",
    "python_only",
    "resolve_device",
    "set_arrays",
    "shapley_values",
    "update_prototypes",
    "weighted_mean",
]
