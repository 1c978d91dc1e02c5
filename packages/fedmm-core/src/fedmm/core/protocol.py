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
import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch

from fedmm.core.arguments import TechniqueArguments
from fedmm.core.arrays import GroupedArrays, weighted_mean
from fedmm.core.errors import ConfigError
from fedmm.core.groups import expand_modalities, matches

if TYPE_CHECKING:
    from torch import nn

    from fedmm.core.algorithms.server_optimizers import ServerOptimizer
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
    - ``upload``: candidate groups to send back (default: the trained groups, less the encoders of
      modalities that took no step this round, so an encoder is averaged over the clients that
      trained it); ``upload`` hooks narrow it.
    - ``keep``: groups the client keeps between rounds (e.g. a frozen prefix), so they need no download.
    - ``combinations``: modality combinations in execution order with their step counts.
    - ``depth``: modality → how many layers of its layered encoder run (empty = all): a client
      trains a shallower model (layer-wise growth, lighter models for weak clients). Deeper
      layer groups do not exist for the client this round: they are not sent, trained or
      uploaded. The server evaluates at the deepest depth of the round's plans.
    - ``max_grad_norm``: clip each step's gradients to this L2 norm (None: no clipping).
    - ``lr_by_group``: group pattern → learning rate of the trainable groups it names (e.g.
      ``{"encoder.*": 1e-4, "head": 3e-3}``); where several patterns name a group the last one
      listed gives its rate, and trainable groups no pattern names use ``lr``. Each pattern must
      name some group of the client's model at the plan's depth. Empty: one ``lr`` for all.
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
    max_grad_norm: float | None = None
    lr_by_group: Mapping[str, float] = field(default_factory=dict)
    loss_weights: Mapping[str, float] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_by_group", _checked_lrs(self.lr_by_group))

    def replace(self, **changes: Any) -> TrainPlan:
        return dataclasses.replace(self, **changes)

    def with_extra(self, **items: Any) -> TrainPlan:
        return dataclasses.replace(self, extra={**self.extra, **items})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["combinations"] = [c.to_dict() for c in self.combinations]
        d["loss_weights"] = dict(self.loss_weights)
        d["depth"] = dict(self.depth)
        d["lr_by_group"] = dict(self.lr_by_group)
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


def _checked_lrs(lrs: Mapping[str, float]) -> dict[str, float]:
    """``lr_by_group`` as a dict in its order; a bad pattern or rate raises a ConfigError naming it."""
    if not isinstance(lrs, Mapping):
        raise ConfigError(f"lr_by_group maps group patterns to learning rates, got {lrs!r}")
    out: dict[str, float] = {}
    for pattern, lr in lrs.items():
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"lr_by_group: {pattern!r} is not a parameter-group pattern")
        if (
            isinstance(lr, bool)
            or not isinstance(lr, int | float | np.floating | np.integer)
            or not math.isfinite(lr)
            or lr <= 0
        ):
            raise ConfigError(f"lr_by_group[{pattern!r}] must be a finite learning rate > 0, got {lr!r}")
        out[pattern] = float(lr)
    return out


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
    """What a client hook sees. ``state`` is the client's persistent named arrays: the one thing a
    client hook may change (everything else a client keeps across rounds must go there)."""

    client_id: int
    round: int
    plan: TrainPlan
    state: dict[str, np.ndarray]
    modalities: tuple[ModalitySpec, ...]
    num_classes: int
    generator: torch.Generator
    model: nn.Module | None = None


# Builds a model holding given global arrays (server-side evaluation); see RoundContext.global_model.
ModelFactory = Callable[[GroupedArrays], "nn.Module"]


@dataclass(frozen=True)
class RoundContext:
    """What the server hooks ``select_clients`` and ``configure`` see: the round before any client
    trains. Frozen, and its mappings are read-only views: a hook reads the round from it and
    answers through its return value (what each phase may read and write:
    :mod:`fedmm.core.round`).

    ``history`` holds the metrics of the rounds done (read-only); ``reports`` the reports of the
    latest round each client took part in, for clients that reported anything.
    """

    round: int
    global_arrays: GroupedArrays
    groups: Mapping[str, tuple[str, ...]]
    num_clients: int
    client_sizes: np.ndarray
    modalities: tuple[ModalitySpec, ...]
    num_classes: int
    rng: np.random.Generator
    validation: SampleSet | None = None
    history: Sequence[Mapping[str, Any]] = ()
    reports: Mapping[int, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    model_factory: ModelFactory | None = None

    def global_model(self) -> nn.Module:
        """A model holding the current global weights (for server-side evaluation)."""
        if self.model_factory is None:
            raise RuntimeError("this engine gives techniques no server-side model")
        return self.model_factory(self.global_arrays)

    def with_results(self, results: Sequence[ClientResult]) -> ResultsContext:
        """The context of the ``aggregate`` phase: this round with its surviving ``results``,
        which started from this context's global arrays (``previous_arrays``)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(RoundContext)}
        return ResultsContext(**fields, results=tuple(results), previous_arrays=self.global_arrays)


@dataclass(frozen=True)
class ResultsContext(RoundContext):
    """What ``aggregate`` and ``after_round`` see: the round with its surviving client ``results``
    (empty in a skipped round) and ``previous_arrays``, the global arrays they started from
    (update vector = previous - result). In ``aggregate``, ``global_arrays`` are still the
    previous ones; in ``after_round`` they are the round's aggregate."""

    results: tuple[ClientResult, ...] = ()
    previous_arrays: GroupedArrays = field(default_factory=dict)

    def aggregated(self, arrays: GroupedArrays) -> ResultsContext:
        """The ``after_round`` context: the same round with the aggregated global ``arrays``."""
        return dataclasses.replace(self, global_arrays=arrays)


def _overrides(obj: object, name: str) -> bool:
    return getattr(type(obj), name) is not getattr(Technique, name)


@dataclass(frozen=True)
class ModelNeeds:
    """What a technique needs the model to have. Checked before any round runs: against the model
    another technique declares it builds (:class:`BuiltModel`) when ``Strategy.create_model`` is
    called, and against the real model when the ``Federation`` is built.

    - ``groups``: parameter groups its plans or client hooks name, as patterns resolved like the
      ``TrainPlan`` group fields (a group or any group below it); ``{m}`` stands for every
      modality of the data (``"encoder.{m}"``).
    - ``layered_encoders``: the model must have a layered encoder (groups ``encoder.<m>.<i>``).
    - ``why``: what it does with them, for the refusal (``"it trains them layer by layer"``).
    - ``hint``: how to build a model that has them, for the refusal of a model built by hand.
    """

    groups: tuple[str, ...] = ()
    layered_encoders: bool = False
    why: str = ""
    hint: str = ""


@dataclass(frozen=True)
class BuiltModel:
    """The model a technique's ``create_model`` builds, declared so that the other techniques'
    :class:`ModelNeeds` are checked before it is built: ``description`` names it in messages
    (``"a per-modality ensemble"``), ``groups`` are its parameter groups (patterns, ``{m}`` =
    every modality; ``None`` = not declared, nothing is checked before building) and
    ``layered_encoders`` whether it has layered encoders."""

    description: str
    groups: tuple[str, ...] | None = None
    layered_encoders: bool = False


class Technique:
    """Base class of a federated technique: override the hooks you need.

    Server-side state must round-trip through ``state_dict`` / ``load_state_dict`` (numpy arrays
    and JSON-able values) so checkpoints are complete.

    Declarations (class attributes; checked when the strategy and the federation are built, so a
    combination that cannot work is refused with one :class:`ConfigError` naming both techniques
    instead of dropping clients round after round):

    - ``owns``: what no other technique may share: a step (``select_clients``: its choice of
      clients is final; ``aggregate`` and ``create_model`` are owned by whoever overrides them)
      or a plan field it decides alone (e.g. ``combinations``). An owner of a plan field runs
      after the techniques that narrow it and keeps within their choice.
    - ``needs``: what it needs from the model (:class:`ModelNeeds`).
    - ``builds``: the model its ``create_model`` builds (:class:`BuiltModel`).
    - ``writes``: the plan fields its ``configure`` sets while keeping within what earlier
      techniques planned (e.g. intersecting ``train``).
    - ``overwrites``: the plan fields its ``configure`` replaces for some clients, whatever
      earlier techniques planned; a technique that writes one of them must come after it.

    Where a declaration depends on the constructor's arguments, override :meth:`owned`,
    :meth:`model_needs` or :meth:`builds_model`.

    Arguments (``Arguments``, a :class:`~fedmm.core.arguments.TechniqueArguments` model): each is
    declared once there, with its type, default, bounds and description. The constructor takes
    them (by keyword, or by position in field order), validates them (a bad or unknown one raises
    an :class:`~fedmm.core.errors.ArgumentError` naming it) and keeps them, typed, in ``self.args``;
    ``inspect.signature`` of the class lists them, :meth:`config` returns them, the run config's
    schema and the docs' argument tables are made from them. A technique that keeps state besides
    its arguments extends ``__init__(self, *args, **kwargs)``, calling ``super().__init__`` first.
    """

    name: ClassVar[str] = "technique"
    owns: ClassVar[frozenset[str]] = frozenset()
    needs: ClassVar[ModelNeeds] = ModelNeeds()
    builds: ClassVar[BuiltModel | None] = None
    writes: ClassVar[frozenset[str]] = frozenset()
    overwrites: ClassVar[frozenset[str]] = frozenset()
    Arguments: ClassVar[type[TechniqueArguments]] = TechniqueArguments
    # How argument errors name the technique (default: its name).
    _owner: ClassVar[str] = ""
    # The constructor's signature, from Arguments (None: a subclass's own __init__ says it).
    __signature__: ClassVar[inspect.Signature | None]
    args: TechniqueArguments

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        own = init is not None and any(
            p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            for p in list(inspect.signature(init).parameters.values())[1:]
        )
        cls.__signature__ = None if own else cls.Arguments.signature()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        self.args = cls.Arguments.parse(cls._owner or _label(self), cls.__name__, args, kwargs)

    def owned(self) -> frozenset[str]:
        """What this technique, with its arguments, owns (default: ``owns``, and the ``aggregate``
        step where it overrides :meth:`aggregate`; ``create_model`` follows :meth:`builds_model`)."""
        return self.owns | ({"aggregate"} if _overrides(self, "aggregate") else frozenset())

    def model_needs(self) -> ModelNeeds:
        """What this technique, with its arguments, needs from the model (default: ``needs``)."""
        return self.needs

    def builds_model(self) -> BuiltModel | None:
        """What this technique's ``create_model``, with its arguments, builds; None = nothing.

        Default: ``builds``; a technique that overrides ``create_model`` without declaring it
        builds a model of undeclared groups."""
        if self.builds is not None:
            return self.builds
        return BuiltModel("its own model") if _overrides(self, "create_model") else None

    # -- set-up ------------------------------------------------------------------------------
    def create_model(self, data: FederatedDataset, options: Mapping[str, Any]) -> nn.Module | None:
        """The model this technique needs (owned: at most one technique per strategy), or None
        for the default late-fusion model. ``options`` are the ``[model]`` config fields
        (``encoders``, ``encoder_options``, ``embed_dim``, ...). Declare what it builds in
        ``builds`` so that the other techniques' needs are checked before it is built."""
        return None

    def check_federation(self, model: nn.Module, data: FederatedDataset) -> None:
        """Called once when a :class:`~fedmm.core.federation.Federation` is built (after the
        model checks, before round 1), with its model and data: raise a :class:`ConfigError`
        for a setting that cannot run on them (FedMFS: more modality models to upload than the
        data has modalities), or warn about one they make pointless. Default: nothing."""
        return None

    # -- server ------------------------------------------------------------------------------
    def select_clients(self, ctx: RoundContext, candidates: np.ndarray) -> np.ndarray:
        return candidates

    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        return plan

    def aggregate(self, ctx: ResultsContext, results: Sequence[ClientResult]) -> GroupedArrays | None:
        return None

    def after_round(self, ctx: ResultsContext, metrics: dict[str, Any]) -> None:
        """After the round's evaluation; ``metrics`` is the round's row: a technique may add its
        own keys (``"flexmod/beta"``), nothing else."""
        return None

    # -- client ------------------------------------------------------------------------------
    def prepare(self, cctx: ClientContext, data: ClientData) -> ClientData:
        return data

    def loss_terms(
        self, cctx: ClientContext, batch: Batch, outputs: ModelOutput
    ) -> Mapping[str, torch.Tensor]:
        return {}

    def adds_loss_terms(self, plan: TrainPlan) -> bool:
        """Whether ``loss_terms`` may add a term for a client with ``plan`` (default: whenever the
        technique overrides it). A technique whose terms depend on the plan says False where they
        are off: the in-process engine can then train such clients batched
        (:mod:`fedmm.core.batched`), which a hook inside each step rules out."""
        return type(self).loss_terms is not Technique.loss_terms

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
        """The constructor arguments, JSON-able, so a ClientApp can rebuild the technique
        (default: ``self.args`` without its Python-only fields)."""
        args = self.__dict__.get("args")  # absent where a subclass's own __init__ skips Technique's
        return args.config() if isinstance(args, TechniqueArguments) else {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config()})"


Technique.__signature__ = TechniqueArguments.signature()


OWNABLE_STEPS = ("aggregate", "select_clients", "create_model")
# What each ownable thing is, for the refusal of two owners (others are named as they are).
_OWNED = {
    "aggregate": "the 'aggregate' step (each replaces the server's averaging)",
    "select_clients": "the 'select_clients' step (each decides alone which clients train)",
    "combinations": "the plan's 'combinations' (each schedules a client's local steps over modality "
    "combinations)",
}
_PLAN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainPlan))
_LAYER_GROUP = re.compile(r"^encoder\.[^.]+\.\d+$")


def _label(t: Technique) -> str:
    return t.name if t.name != Technique.name else type(t).__name__


def _refusal(a: Technique, b: Technique, reason: str, *, order: bool = False) -> ConfigError:
    how = " in this order" if order else ""
    return ConfigError(f"techniques '{_label(a)}' and '{_label(b)}' cannot be combined{how}: {reason}")


def _owned(t: Technique) -> set[str]:
    owned = set(t.owned())
    if t.builds_model() is not None:
        owned.add("create_model")
    else:
        owned.discard("create_model")
    return owned


def check_techniques(techniques: Sequence[Technique]) -> None:
    """Refuse a list of techniques that cannot work together, whatever the model: two owners of
    one thing (a step, a plan field, the model) or a technique replacing a plan field that an
    earlier one set. Raises one :class:`ConfigError` naming both techniques and why."""
    owned = [_owned(t) for t in techniques]
    for i, a in enumerate(techniques):
        for j in range(i + 1, len(techniques)):
            b = techniques[j]
            for thing in sorted(owned[i] & owned[j]):
                if thing == "create_model":
                    ma, mb = a.builds_model(), b.builds_model()
                    assert ma is not None and mb is not None
                    raise _refusal(
                        a,
                        b,
                        f"both build the model ({_label(a)}: {ma.description}; {_label(b)}: "
                        f"{mb.description}), and a strategy uses one model",
                    )
                what = _OWNED.get(thing, f"'{thing}'")
                raise _refusal(a, b, f"both own {what}, and a strategy can have only one owner")
            set_by_a = a.writes | a.overwrites | (owned[i] & _PLAN_FIELDS)
            for field_ in sorted(set_by_a & b.overwrites):
                raise _refusal(
                    a,
                    b,
                    f"{_label(b)} replaces the plan's '{field_}' for some clients, discarding what "
                    f"{_label(a)} planned there; list {_label(b)} before {_label(a)}",
                    order=True,
                )


@dataclass(frozen=True)
class _Lack:
    """Something a technique needs that a model lacks: the group pattern (None = layered encoders)."""

    group: str | None
    need: str  # "needs the 'fusion' parameter group (why)"
    missing: str  # what the model has instead: "no 'fusion' group" / "none"

    def in_model(self, groups: Sequence[str], layered: bool) -> bool:
        return layered if self.group is None else any(matches(g, self.group) for g in groups)


def _lack(needs: ModelNeeds, groups: Sequence[str], layered: bool, modalities: Sequence[str]) -> _Lack | None:
    """The first thing ``needs`` asks for that a model with these groups lacks."""
    for pattern in expand_modalities(needs.groups, modalities):
        if not any(matches(g, pattern) for g in groups):
            why = f" ({needs.why})" if needs.why else ""
            return _Lack(pattern, f"needs the '{pattern}' parameter group{why}", f"no '{pattern}' group")
    if needs.layered_encoders and not layered:
        why = f"; {needs.why}" if needs.why else ""
        return _Lack(None, f"needs layered encoders (groups encoder.<m>.<i>{why})", "none")
    return None


def check_model(
    techniques: Sequence[Technique],
    modalities: Sequence[str],
    groups: Sequence[str] | None = None,
) -> None:
    """Refuse a model that lacks what a technique needs (:class:`ModelNeeds`).

    With ``groups`` (the model's parameter groups) the real model is checked; without, the model
    the building technique declares (:class:`BuiltModel`), before it is built. When the builder's
    declared model lacks it too, the refusal names both techniques."""
    builders = [(t, m) for t in techniques if (m := t.builds_model()) is not None]
    builder, built = builders[0] if builders else (None, None)
    declared = None if built is None or built.groups is None else expand_modalities(built.groups, modalities)
    if groups is None and declared is None:
        return
    layered = groups is not None and any(_LAYER_GROUP.match(g) for g in groups)
    for t in techniques:
        if t is builder:
            continue
        needs = t.model_needs()
        lack = (
            _lack(needs, groups, layered, modalities)
            if groups is not None
            else _lack(needs, declared or [], built is not None and built.layered_encoders, modalities)
        )
        if lack is None:
            continue
        if (
            builder is not None
            and built is not None
            and declared is not None
            and not lack.in_model(declared, built.layered_encoders)
        ):
            a, b = (t, builder) if techniques.index(t) < techniques.index(builder) else (builder, t)
            raise _refusal(
                a,
                b,
                f"{_label(t)} {lack.need}, but {_label(builder)} builds its own model "
                f"({built.description}), which has {lack.missing}",
            )
        assert groups is not None  # a lack of the declared model alone is refused above
        detail = f"; its groups are {', '.join(groups)}" if lack.group is not None else ""
        hint = f"; {needs.hint}" if needs.hint else ""
        raise ConfigError(
            f"technique '{_label(t)}' cannot run on this model: it {lack.need}, but the model has "
            f"{lack.missing}{detail}{hint}"
        )


SERVER_OPTIMIZER_KEY = "server_optimizer"  # its state in the strategy's state_dict


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
        max_grad_norm: float | None = None,
        server_optimizer: ServerOptimizer | None = None,
    ) -> None:
        self.techniques = list(techniques)
        # Steps the global model from the round's aggregate (FedAvgM, FedAdam, ...; None: FedAvg).
        self.server_optimizer = server_optimizer
        for t in self.techniques:
            if not isinstance(t, Technique):
                raise ConfigError(f"{t!r} is not a fedmm Technique")
        check_techniques(self.techniques)
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
            max_grad_norm=max_grad_norm,
        )
        if local_epochs < 1 or batch_size < 1 or lr <= 0:
            raise ConfigError("local_epochs and batch_size must be >= 1 and lr > 0")
        if weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0 (got {weight_decay})")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ConfigError(f"max_grad_norm must be > 0 or None for no clipping (got {max_grad_norm})")

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

    def aggregate(self, ctx: ResultsContext, results: Sequence[ClientResult]) -> GroupedArrays:
        average: GroupedArrays | None = None
        for t in self.techniques:
            if _overrides(t, "aggregate"):
                average = t.aggregate(ctx, results)
                if average is not None:
                    break
        if average is None:
            average = fedavg(ctx.global_arrays, results)
        if self.server_optimizer is None:
            return average
        updated = {g for r in results for g in r.update}
        return self.server_optimizer.step(ctx.global_arrays, average, updated)

    def after_round(self, ctx: ResultsContext, metrics: dict[str, Any]) -> None:
        for t in self.techniques:
            t.after_round(ctx, metrics)

    def create_model(self, data: FederatedDataset, options: Mapping[str, Any]) -> nn.Module | None:
        """The model of the technique that builds one, or None (use the default). The other
        techniques' needs are checked against its declared model first, before any work."""
        modalities = [m.name for m in data.modalities]
        check_model(self.techniques, modalities)
        for t in self.techniques:
            if t.builds_model() is not None:
                model = t.create_model(data, options)
                if model is not None:
                    return model
        return None

    def check_model(self, groups: Sequence[str], modalities: Sequence[str]) -> None:
        """Refuse a model (its parameter ``groups``) that lacks what a technique needs."""
        check_model(self.techniques, modalities, groups)

    def check_federation(self, model: nn.Module, data: FederatedDataset) -> None:
        """Each technique's :meth:`Technique.check_federation`, in list order."""
        for t in self.techniques:
            t.check_federation(model, data)

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {f"{i}:{t.name}": t.state_dict() for i, t in enumerate(self.techniques)}
        if self.server_optimizer is not None:
            state[SERVER_OPTIMIZER_KEY] = self.server_optimizer.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for i, t in enumerate(self.techniques):
            key = f"{i}:{t.name}"
            if key in state:
                t.load_state_dict(state[key])
        if self.server_optimizer is not None and SERVER_OPTIMIZER_KEY in state:
            self.server_optimizer.load_state_dict(state[SERVER_OPTIMIZER_KEY])

    def __repr__(self) -> str:
        extra = "" if self.server_optimizer is None else f", server_optimizer={self.server_optimizer!r}"
        return f"{type(self).__name__}(techniques={self.techniques!r}{extra})"


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
    "BuiltModel",
    "ClientContext",
    "ClientResult",
    "Combination",
    "FedAvg",
    "ModelFactory",
    "ModelNeeds",
    "ResultsContext",
    "RoundContext",
    "Strategy",
    "Technique",
    "TrainPlan",
    "check_model",
    "check_techniques",
    "fedavg",
]
