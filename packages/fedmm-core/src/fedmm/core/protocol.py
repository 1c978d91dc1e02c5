"""The round protocol: train plans, techniques (hooks) and strategies.

One round, as hooks (a technique implements any subset)::

    server  select_clients(ctx, candidates) -> candidates        narrows, in list order
    server  configure(ctx, client_id, plan) -> plan              refines the plan, in list order
    client  prepare(cctx, data) -> data                          e.g. complete missing modalities
    client  loss_terms(cctx, batch, outputs) -> {name: tensor}   extra loss terms, summed
    client  report(cctx, model, data) -> {name: value}           prototypes, Shapley values, ratios
    client  upload(cctx, report, groups) -> groups               narrows the groups sent up
    server  aggregate(ctx, results) -> arrays | None             owned: at most one technique
    server  after_round(ctx, metrics)                            e.g. an RL step, a stage advance

Client hooks must not change the technique object: everything a client keeps across rounds goes
into ``cctx.state`` (a small mapping of named arrays the engine keeps per client), so the same
client function runs in-process, in a worker or in Flower's ClientApp and gives the same numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch

from fedmm.core.arrays import GroupedArrays, weighted_mean
from fedmm.core.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from fedmm.core.data.types import Batch, ClientData, FederatedDataset, ModalitySpec, SampleSet
    from fedmm.core.ledger import ClientCost
    from fedmm.core.models.model import ModelOutput

Optimizer = Literal["sgd", "adam", "adamw"]


@dataclass(frozen=True)
class Combination:
    """Train with only ``modalities`` active (None = all the client has) for ``steps`` minibatch
    steps (None = ``local_epochs`` passes over the data)."""

    modalities: tuple[str, ...] | None = None
    steps: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"modalities": None if self.modalities is None else list(self.modalities), "steps": self.steps}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Combination:
        mods = d.get("modalities")
        return cls(None if mods is None else tuple(mods), d.get("steps"))


@dataclass(frozen=True)
class TrainPlan:
    """What one client does this round. Plain data: it crosses to Flower as a config record.

    Group fields hold patterns resolved against the model's groups (``encoder.audio``,
    ``encoder.text`` = all its layers, ``encoder.*``, ``*`` = all).

    - ``download``: groups sent to the client (counted in the ledger). Others come from the
      client's own kept copy if it has one (see ``keep``), else they are sent too.
    - ``train``: groups trained; all others are frozen (no grads, no optimizer state).
    - ``upload``: candidate groups to send back (default: the trained ones); ``upload`` hooks narrow it.
    - ``keep``: groups the client keeps between rounds (e.g. a frozen prefix), so they need no download.
    - ``combinations``: modality combinations in execution order with their step counts.
    - ``depth``: modality → how many layers of its layered encoder run (layer-wise training;
      empty = all). Deeper layer groups do not exist for the client this round: they are not
      sent, trained or uploaded. The server evaluates at the deepest depth of the round's plans.
    - ``extra``: a technique's own fields (JSON-able values or numpy arrays; arrays, such as
      global prototypes, cross to the client and count as downloaded bytes).
    """

    download: tuple[str, ...] = ("*",)
    train: tuple[str, ...] = ("*",)
    upload: tuple[str, ...] | None = None
    keep: tuple[str, ...] = ()
    combinations: tuple[Combination, ...] = ()
    depth: Mapping[str, int] = field(default_factory=dict)
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    optimizer: Optimizer = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    loss_weights: Mapping[str, float] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> TrainPlan:
        return dataclasses.replace(self, **changes)

    def with_extra(self, **items: Any) -> TrainPlan:
        return dataclasses.replace(self, extra={**self.extra, **items})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["combinations"] = [c.to_dict() for c in self.combinations]
        d["loss_weights"] = dict(self.loss_weights)
        d["depth"] = dict(self.depth)
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainPlan:
        d = dict(d)
        d["combinations"] = tuple(Combination.from_dict(c) for c in d.get("combinations", ()))
        for key in ("download", "train", "keep"):
            if key in d:
                d[key] = tuple(d[key])
        if d.get("upload") is not None:
            d["upload"] = tuple(d["upload"])
        return cls(**d)


@dataclass
class ClientResult:
    """What one client returns: its update, report, metrics, new state and measured cost."""

    client_id: int
    num_samples: int
    update: GroupedArrays
    report: dict[str, Any]
    metrics: dict[str, float]
    state: dict[str, np.ndarray]
    cost: ClientCost


@dataclass
class ClientContext:
    """What a client hook sees. ``state`` is the client's persistent named arrays (mutable)."""

    client_id: int
    round: int
    plan: TrainPlan
    state: dict[str, np.ndarray]
    modalities: tuple[ModalitySpec, ...]
    num_classes: int
    generator: torch.Generator
    model: nn.Module | None = None


@dataclass
class RoundContext:
    """What a server hook sees this round."""

    round: int
    global_arrays: GroupedArrays
    groups: dict[str, tuple[str, ...]]
    num_clients: int
    client_sizes: np.ndarray
    modalities: tuple[ModalitySpec, ...]
    num_classes: int
    rng: np.random.Generator
    validation: SampleSet | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    # Reports of the latest round each client took part in, for clients that reported anything.
    reports: dict[int, dict[str, Any]] = field(default_factory=dict)
    # Set once the round's clients are back (for aggregate and after_round): the surviving
    # results, and the global arrays they started from (update vector = previous - result).
    results: list[ClientResult] = field(default_factory=list)
    previous_arrays: GroupedArrays = field(default_factory=dict)
    model_factory: Any = (
        None  # callable(arrays) -> nn.Module with those weights loaded, for server evaluation
    )

    def global_model(self) -> nn.Module:
        """A model holding the current global weights (for server-side evaluation)."""
        if self.model_factory is None:
            raise RuntimeError("this engine gives techniques no server-side model")
        return self.model_factory(self.global_arrays)


def _overrides(obj: object, name: str) -> bool:
    return getattr(type(obj), name) is not getattr(Technique, name)


class Technique:
    """Base class of a federated technique: override the hooks you need.

    Set ``owns`` to the steps no other technique may share (``aggregate`` is always owned by
    whoever overrides it). Server-side state must round-trip through ``state_dict`` /
    ``load_state_dict`` (numpy arrays and JSON-able values) so checkpoints are complete.
    """

    name: ClassVar[str] = "technique"
    owns: ClassVar[frozenset[str]] = frozenset()

    # -- set-up ------------------------------------------------------------------------------
    def create_model(self, data: FederatedDataset, options: Mapping[str, Any]) -> nn.Module | None:
        """The model this technique needs (owned: at most one technique per strategy), or None
        for the default late-fusion model. ``options`` are the ``[model]`` config fields
        (``encoders``, ``encoder_options``, ``embed_dim``, ...)."""
        return None

    # -- server ------------------------------------------------------------------------------
    def select_clients(self, ctx: RoundContext, candidates: np.ndarray) -> np.ndarray:
        return candidates

    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        return plan

    def aggregate(self, ctx: RoundContext, results: Sequence[ClientResult]) -> GroupedArrays | None:
        return None

    def after_round(self, ctx: RoundContext, metrics: dict[str, Any]) -> None:
        return None

    # -- client ------------------------------------------------------------------------------
    def prepare(self, cctx: ClientContext, data: ClientData) -> ClientData:
        return data

    def loss_terms(
        self, cctx: ClientContext, batch: Batch, outputs: ModelOutput
    ) -> Mapping[str, torch.Tensor]:
        return {}

    def report(self, cctx: ClientContext, model: nn.Module, data: ClientData) -> Mapping[str, Any]:
        return {}

    def upload(
        self, cctx: ClientContext, report: Mapping[str, Any], groups: tuple[str, ...]
    ) -> tuple[str, ...]:
        return groups

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None

    def config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-able, so a ClientApp can rebuild the technique."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config()})"


OWNABLE_STEPS = ("aggregate", "select_clients", "create_model")
# Steps whose mere implementation makes a technique their owner.
_OWNED_BY_OVERRIDE = ("aggregate", "create_model")


class Strategy:
    """Runs a list of techniques in order around a default round (uniform client sampling,
    sample-weighted per-group FedAvg). Fails at construction if two techniques own one step."""

    def __init__(
        self,
        techniques: Sequence[Technique] = (),
        *,
        clients_per_round: int | None = None,
        fraction: float | None = None,
        min_clients: int = 1,
        local_epochs: int = 1,
        batch_size: int = 32,
        lr: float = 0.05,
        optimizer: Optimizer = "sgd",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        self.techniques = list(techniques)
        for t in self.techniques:
            if not isinstance(t, Technique):
                raise ConfigError(f"{t!r} is not a fedmm Technique")
        for step in OWNABLE_STEPS:
            owners = [
                t
                for t in self.techniques
                if step in t.owns or (step in _OWNED_BY_OVERRIDE and _overrides(t, step))
            ]
            if len(owners) > 1:
                names = " and ".join(type(t).__name__ for t in owners)
                raise ConfigError(f"{names} both own the '{step}' step; a strategy can have only one")
        if clients_per_round is not None and clients_per_round < 1:
            raise ConfigError(f"clients_per_round must be >= 1 (got {clients_per_round})")
        if fraction is not None and not 0 < fraction <= 1:
            raise ConfigError(f"fraction must lie in (0, 1] (got {fraction})")
        if min_clients < 1:
            raise ConfigError(f"min_clients must be >= 1 (got {min_clients})")
        self.clients_per_round = clients_per_round
        self.fraction = fraction
        self.min_clients = min_clients
        self.base_plan = TrainPlan(
            local_epochs=local_epochs,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            momentum=momentum,
            weight_decay=weight_decay,
        )
        if local_epochs < 1 or batch_size < 1 or lr <= 0:
            raise ConfigError("local_epochs and batch_size must be >= 1 and lr > 0")

    def sample_size(self, num_clients: int) -> int:
        if self.clients_per_round is not None:
            return min(self.clients_per_round, num_clients)
        if self.fraction is not None:
            return max(1, round(self.fraction * num_clients))
        return num_clients

    # -- server steps ------------------------------------------------------------------------
    def select_clients(self, ctx: RoundContext) -> np.ndarray:
        """Narrow all clients through the selecting techniques, then sample ``clients_per_round``.

        A technique that *owns* ``select_clients`` (declares it in ``owns``) decides alone: its
        choice is final and is not sampled down (e.g. BMSFed asks every client in round 1).
        """
        k = self.sample_size(ctx.num_clients)
        selectors = [t for t in self.techniques if _overrides(t, "select_clients")]
        if not selectors:
            if k >= ctx.num_clients:
                return np.arange(ctx.num_clients, dtype=np.int64)
            return np.sort(ctx.rng.choice(ctx.num_clients, size=k, replace=False)).astype(np.int64)
        candidates = np.arange(ctx.num_clients, dtype=np.int64)
        owner = None
        for t in selectors:
            candidates = np.asarray(t.select_clients(ctx, candidates), dtype=np.int64)
            if "select_clients" in t.owns:
                owner = t
        if owner is None and candidates.shape[0] > k:
            candidates = np.sort(ctx.rng.choice(candidates, size=k, replace=False))
        return candidates

    def configure(self, ctx: RoundContext, client_id: int) -> TrainPlan:
        plan = self.base_plan
        for t in self.techniques:
            plan = t.configure(ctx, client_id, plan)
        return plan

    def aggregate(self, ctx: RoundContext, results: Sequence[ClientResult]) -> GroupedArrays:
        for t in self.techniques:
            if _overrides(t, "aggregate"):
                out = t.aggregate(ctx, results)
                if out is not None:
                    return out
        return fedavg(ctx.global_arrays, results)

    def after_round(self, ctx: RoundContext, metrics: dict[str, Any]) -> None:
        for t in self.techniques:
            t.after_round(ctx, metrics)

    def create_model(self, data: FederatedDataset, options: Mapping[str, Any]) -> nn.Module | None:
        """The model of the technique that owns ``create_model``, or None (use the default)."""
        for t in self.techniques:
            if _overrides(t, "create_model"):
                return t.create_model(data, options)
        return None

    # -- client steps ------------------------------------------------------------------------
    def client_hooks(self, name: str) -> list[Technique]:
        return [t for t in self.techniques if _overrides(t, name)]

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {f"{i}:{t.name}": t.state_dict() for i, t in enumerate(self.techniques)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for i, t in enumerate(self.techniques):
            key = f"{i}:{t.name}"
            if key in state:
                t.load_state_dict(state[key])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(techniques={self.techniques!r})"


def fedavg(
    global_arrays: GroupedArrays, results: Sequence[ClientResult], weights: Sequence[float] | None = None
) -> GroupedArrays:
    """Sample-weighted FedAvg per parameter group (McMahan et al., 2017).

    Correct when clients upload different subsets of groups: each group is averaged over its
    uploaders only; a group nobody uploaded is unchanged.
    """
    w = [float(r.num_samples) for r in results] if weights is None else list(weights)
    return weighted_mean([r.update for r in results], w, global_arrays)


class FedAvg(Strategy):
    """Federated averaging with techniques: ``FedAvg(techniques=[...], clients_per_round=10)``."""


__all__ = [
    "ClientContext",
    "ClientResult",
    "Combination",
    "FedAvg",
    "RoundContext",
    "Strategy",
    "Technique",
    "TrainPlan",
    "fedavg",
]
