"""``LayerWise``: LW-FedMML, Prog-FedMML and end-to-end FedMML as one fedmm technique.

Reference: Tun, Thwal, Huh, Hong et al., "Resource-Efficient Federated Multimodal Learning via
Layer-wise and Progressive Training" (arXiv 2407.15426). Method notes (what we do, where it
departs from the paper): ``docs/methods/layerwise.md``.

Every layered encoder (core's ``transformer`` encoder, or :class:`~fedmm.layerwise.fedmml.hf.HFTextEncoder`;
groups ``encoder.<m>.embed``, ``encoder.<m>.<i>``, ``encoder.<m>.norm``, ``encoder.<m>.proj``)
grows by ``layers_per_stage`` layers per stage (:class:`~fedmm.layerwise.fedmml.schedule.StageSchedule`).
The ``configure`` hook writes the stage into each client's plan:

* ``mode="lw"`` (LW-FedMML): ``depth`` = the layers grown so far; ``train`` = the newest block, the
  final norm, the projection head, and every non-layered group (fusion, head, other encoders),
  plus the embedding at stage 1; ``download`` = the same; ``keep`` = the frozen prefix, so a
  client receives each finished layer once and keeps it. The frozen prefix has no gradient, so it
  stores no activations for backward, no gradients and no optimiser state — the ledger's FLOPs
  and peak memory measure that, they are not computed from a formula.
* ``mode="prog"`` (Prog-FedMML): the same depth, but every existing layer trains and crosses.
* ``mode="e2e"`` (FedMML): the full-depth model trains and crosses every round.

Layers beyond the depth do not exist for a client (not sent, run or uploaded; core's
``TrainPlan.depth``). Learning rates (the paper's recipe: a rate per stage for the towers, low
for pretrained layers, and one for the heads): ``lr_per_stage`` sets the rate of the layered
encoders' trained parts at each stage and ``head_lr`` that of the projection heads, fusion and
classifier head, through core's ``TrainPlan.lr_by_group``; left out, every group trains at the
strategy's ``lr``. Losses: core's supervised cross-entropy (``supervised``) plus, with
``contrastive_weight > 0``, the CLIP loss between the two towers' embeddings (spec §3:
the paper's code uses one or the other; ``L = L_sup + λ·L_con``).

Composition: ``configure`` narrows what earlier techniques planned (the trainable set is
intersected with the incoming ``train``), so list ``LayerWise`` after a technique that restricts
training (e.g. BMSFed's weak-modality picks); the other order is refused when the strategy is
built, and ``lw`` / ``prog`` on a model without layered encoders when the federation is (see the
declarations on the class).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator

from fedmm.core.api import (
    ArgumentProblem,
    ClientContext,
    ConfigError,
    ModelNeeds,
    ResultsContext,
    RoundContext,
    Technique,
    TechniqueArguments,
    TrainPlan,
    clip_loss,
    expand_groups,
    modality_of,
)
from fedmm.layerwise.fedmml.schedule import StageSchedule, schedule_from, stages_needed

if TYPE_CHECKING:
    from fedmm.core.api import Batch, ModelOutput

__all__ = ["MODES", "LayerWise", "LayerWiseArguments", "layer_counts"]

MODES = ("lw", "prog", "e2e")
CONTRASTIVE = "layerwise/contrastive"
_LAYER = re.compile(r"^encoder\.(?P<m>[^.]+)\.(?P<i>\d+)$")


def layer_counts(groups: Sequence[str]) -> dict[str, int]:
    """Modality → number of layer groups ``encoder.<m>.<i>`` (its layered encoder's depth)."""
    counts: dict[str, int] = {}
    for g in groups:
        hit = _LAYER.match(g)
        if hit:
            counts[hit["m"]] = max(counts.get(hit["m"], 0), int(hit["i"]) + 1)
    return counts


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class LayerWiseArguments(TechniqueArguments):
    """LayerWise's arguments."""

    mode: Literal["lw", "prog", "e2e"] = Field(
        "lw",
        description="`'lw'` (LW-FedMML: only the newest block trains and crosses), `'prog'` "
        "(Prog-FedMML: every grown layer trains) or `'e2e'` (FedMML: the full-depth model, every round)",
    )
    rounds_per_stage: Annotated[int, Field(ge=1)] | tuple[Annotated[int, Field(ge=0)], ...] = Field(
        10,
        description="rounds of each stage: an int (uniform; as many stages as it takes to grow every "
        'encoder to full depth) or a list per stage, e.g. the paper\'s "low-high" '
        "`[0, 0, 0, 10, 30, 50]` (stages of 0 rounds keep their layers at their initial weights); "
        "ignored by `e2e`",
    )
    layers_per_stage: Annotated[int, Field(ge=1)] | dict[str, Annotated[int, Field(ge=1)]] = Field(
        1,
        description="layers added per stage, one int for all encoders or a table per modality "
        "(`{image = 2, text = 1}`; the paper: 2 for ViT-Tiny's 12 layers, 1 for the 6-layer text tower)",
    )
    contrastive_weight: float = Field(
        0.0,
        ge=0,
        description="λ of the CLIP loss (symmetric InfoNCE) between the two towers' embeddings, "
        "`L = L_CE + λ·L_con` (0 = off, the paper's choice for supervised tasks)",
    )
    temperature: float = Field(0.05, gt=0, description="τ of the CLIP loss (the paper's 0.05)")
    supervised: bool = Field(
        True,
        description="keep the cross-entropy on labelled samples; false = contrastive only "
        "(self-supervised pre-training; needs `contrastive_weight > 0`)",
    )
    contrastive_pair: tuple[str, str] | None = Field(
        None, description="the two modalities of the CLIP loss (omitted: the data's first two)"
    )
    lr_per_stage: tuple[Annotated[float, Field(gt=0)], ...] | None = Field(
        None,
        description="learning rate of each stage's encoder layers, one per stage (stages of 0 "
        "rounds included): at stage s the layered encoders' trained parts (the new block, or every "
        "grown layer for `prog`, the final norm, the embedding) train at the s-th rate; `e2e` is one "
        "stage. Omitted: the strategy's `lr` (the paper's recipe: low rates for pretrained towers, "
        "e.g. `[1e-7, 1e-7, 1e-7, 5e-6, 3e-5, 5e-5]`)",
    )
    head_lr: float | None = Field(
        None,
        gt=0,
        description="learning rate of the heads: projection heads (`encoder.<m>.proj`), fusion, "
        "classifier head and any other non-encoder group (omitted: the strategy's `lr`; the paper: "
        "3e-4 on COCO, 1e-4 on ADVANCE); non-layered encoders keep the strategy's `lr`",
    )

    @field_validator("rounds_per_stage", mode="before")
    @classmethod
    def _stages(cls, value: Any) -> Any:
        if isinstance(value, tuple):
            for r in value:
                if not _whole(r) or r < 0:
                    raise ValueError(f"must be an integer >= 0 per stage, got {r!r}")
            if sum(value) == 0:
                raise ValueError(f"must give some stage rounds (> 0 in total), got {list(value)}")
        elif not _whole(value):
            raise ValueError(f"must be an integer >= 1 or a list of them, got {value!r}")
        elif value < 1:
            raise ValueError(f"must be an integer >= 1, got {value!r}")
        return value

    @field_validator("layers_per_stage", mode="before")
    @classmethod
    def _layers(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            for m, n in value.items():
                if not isinstance(m, str):
                    raise ValueError(f"maps modality names to layers, got key {m!r}")
                if not _whole(n) or n < 1:
                    raise ArgumentProblem(f"layers_per_stage.{m}", f"must be an integer >= 1, got {n!r}")
        elif not _whole(value) or value < 1:
            raise ValueError(f"must be an integer >= 1 or a table of them per modality, got {value!r}")
        return value

    @field_validator("contrastive_pair", mode="before")
    @classmethod
    def _pair(cls, pair: Any) -> Any:
        if pair is not None and (
            not isinstance(pair, tuple)
            or len(pair) != 2
            or not all(isinstance(m, str) for m in pair)
            or pair[0] == pair[1]
        ):
            raise ValueError(f"names two different modalities, got {pair!r}")
        return pair

    @field_validator("lr_per_stage", mode="before")
    @classmethod
    def _some_rates(cls, value: Any) -> Any:
        if isinstance(value, tuple) and not value:
            raise ValueError("must give one learning rate per stage, got an empty list")
        return value

    @model_validator(mode="after")
    def _some_loss(self) -> LayerWiseArguments:
        if not self.supervised and self.contrastive_weight == 0:
            raise ArgumentProblem("supervised", "= false leaves no loss; set contrastive_weight > 0")
        return self

    @model_validator(mode="after")
    def _rate_per_stage(self) -> LayerWiseArguments:
        rates = self.lr_per_stage
        if rates is None:
            return self
        if self.mode == "e2e":
            if len(rates) != 1:
                raise ArgumentProblem(
                    "lr_per_stage",
                    "mode 'e2e' trains the whole model in one stage: give one learning rate, "
                    f"got {len(rates)}",
                )
        elif isinstance(self.rounds_per_stage, tuple) and len(rates) != len(self.rounds_per_stage):
            n, stages = len(rates), len(self.rounds_per_stage)
            raise ArgumentProblem(
                "lr_per_stage",
                f"gives {n} learning rate{'s' if n != 1 else ''} for {stages} stages "
                f"(rounds_per_stage {list(self.rounds_per_stage)}); give one per stage",
            )
        return self


class LayerWise(Technique):
    """Layer-wise (LW-FedMML), progressive (Prog-FedMML) or end-to-end (FedMML) training.
    Arguments: :class:`LayerWiseArguments`."""

    name: ClassVar[str] = "layerwise"
    Arguments: ClassVar[type[TechniqueArguments]] = LayerWiseArguments
    args: LayerWiseArguments
    needs: ClassVar[ModelNeeds] = ModelNeeds(
        layered_encoders=True,
        why="it grows and trains them layer by layer",
        hint=(
            'build the encoders with encoder kind "transformer" (or fedmm.layerwise.fedmml.hf.HFTextEncoder)'
        ),
    )
    # train is intersected with what earlier techniques planned, keep extended and lr_by_group
    # extended (its rates for the groups it trains come last, so they win); download and depth
    # are the stage's, whatever was planned before.
    writes: ClassVar[frozenset[str]] = frozenset({"train", "keep", "lr_by_group"})
    overwrites: ClassVar[frozenset[str]] = frozenset({"download", "depth"})

    def model_needs(self) -> ModelNeeds:
        return ModelNeeds() if self.args.mode == "e2e" else self.needs  # e2e trains any model whole

    # -- the schedule ------------------------------------------------------------------------
    def _per_stage(self, layers: Mapping[str, int]) -> dict[str, int]:
        given = self.args.layers_per_stage
        if isinstance(given, int):
            return dict.fromkeys(layers, given)
        unknown = set(given) - {"*"} - set(layers)  # "*": every other modality (older configs)
        if unknown:
            raise ConfigError(
                f"layerwise: layers_per_stage names {sorted(unknown)}, which have no layered encoder; "
                f"layered: {sorted(layers)}"
            )
        default = given.get("*", 1)
        return {m: given.get(m, default) for m in layers}

    def schedule(self, groups: Sequence[str]) -> StageSchedule:
        """The stage schedule for a model with these parameter groups."""
        layers = layer_counts(groups)
        if not layers:
            raise ConfigError(
                "layerwise: the model has no layered encoder (groups encoder.<m>.<i>); build the "
                'encoders with encoder kind "transformer" (or fedmm.layerwise.fedmml.hf.HFTextEncoder)'
            )
        per = self._per_stage(layers)
        needed = stages_needed(layers, per)
        sched = schedule_from(self.args.rounds_per_stage, needed)
        if sched.num_stages < needed:
            raise ConfigError(
                f"layerwise: {sched.num_stages} stages cannot grow the encoders ({layers} layers, "
                f"{per} per stage) to full depth; give {needed} stages or more layers per stage"
            )
        rates = self.args.lr_per_stage
        if rates is not None and len(rates) != sched.num_stages:
            raise ConfigError(
                f"layerwise: lr_per_stage gives {len(rates)} learning rates, but the schedule has "
                f"{sched.num_stages} stages ({layers} layers, {per} per stage); give one per stage"
            )
        return sched

    def stage_plan(
        self, groups: Sequence[str], round_: int
    ) -> tuple[int, dict[str, int], tuple[str, ...], tuple[str, ...]]:
        """``(stage, depth, train, keep)`` of round ``round_`` (``depth`` empty and everything
        trained for ``e2e``)."""
        groups = list(groups)
        mode = self.args.mode
        if mode == "e2e":
            return 0, {}, tuple(groups), ()
        layers = layer_counts(groups)
        sched = self.schedule(groups)
        per = self._per_stage(layers)
        stage = sched.stage_at(round_)
        depth = {m: min(stage * per[m], n) for m, n in layers.items()}
        train: list[str] = []
        keep: list[str] = []
        for g in groups:
            m = modality_of(g)
            if m not in layers:
                train.append(g)  # fusion, head, non-layered encoders: always trained
                continue
            part = g.split(".", 2)[2]
            if part.isdigit():
                i = int(part)
                if i >= depth[m]:
                    continue  # does not exist yet
                newest = i >= (stage - 1) * per[m]
                (train if mode == "prog" or newest else keep).append(g)
            elif part == "embed" and mode == "lw" and stage > 1:
                keep.append(g)
            else:
                train.append(g)  # embed (stage 1 or prog), norm, proj
        return stage, depth, tuple(train), tuple(keep)

    def stage_lrs(self, groups: Sequence[str], stage: int, train: Sequence[str]) -> dict[str, float]:
        """The learning rates the arguments set for the ``train`` groups at ``stage`` (0 = ``e2e``'s
        one stage): ``lr_per_stage`` for the layered encoders' parts (embedding, layers, final
        norm), ``head_lr`` for every non-encoder group and the projection heads. Groups they do not
        set (and non-layered encoders) are left out: they train at the plan's ``lr``."""
        rates, head = self.args.lr_per_stage, self.args.head_lr
        layered = layer_counts(groups)
        out: dict[str, float] = {}
        for g in train:
            m = modality_of(g)
            if m is None or (m in layered and g == f"encoder.{m}.proj"):
                if head is not None:
                    out[g] = head
            elif m in layered and rates is not None:
                out[g] = rates[max(stage, 1) - 1]
        return out

    # -- server ------------------------------------------------------------------------------
    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        names = list(ctx.groups)
        stage, depth, train, keep = self.stage_plan(names, ctx.round)
        allowed = set(expand_groups(plan.train, names)) if plan.train else set()
        train = tuple(g for g in train if g in allowed)
        weights = dict(plan.loss_weights)
        if self.args.contrastive_weight > 0:
            weights[CONTRASTIVE] = self.args.contrastive_weight
        if not self.args.supervised:
            weights["ce"] = 0.0
        lrs = self.stage_lrs(names, stage, train)
        if lrs:
            plan = plan.replace(lr_by_group={**plan.lr_by_group, **lrs})
        if self.args.mode == "e2e":
            return plan.replace(train=train, loss_weights=weights)
        return plan.replace(
            depth=depth,
            train=train,
            download=train,
            keep=tuple(dict.fromkeys((*plan.keep, *keep))),
            loss_weights=weights,
        )

    def after_round(self, ctx: ResultsContext, metrics: dict[str, Any]) -> None:
        if self.args.mode == "e2e":
            return
        stage, depth, _, _ = self.stage_plan(list(ctx.groups), ctx.round)
        metrics["layerwise/stage"] = stage
        for m, d in depth.items():
            metrics[f"layerwise/depth/{m}"] = d

    # -- client ------------------------------------------------------------------------------
    def loss_terms(
        self, cctx: ClientContext, batch: Batch, outputs: ModelOutput
    ) -> Mapping[str, torch.Tensor]:
        if cctx.plan.loss_weights.get(CONTRASTIVE, 0.0) <= 0:
            return {}
        names = [m.name for m in cctx.modalities]
        a, b = self.args.contrastive_pair or tuple(names[:2])
        if a not in names or b not in names:
            raise ConfigError(f"layerwise: contrastive_pair {(a, b)} is not in the data's modalities {names}")
        both = outputs.present[:, names.index(a)] & outputs.present[:, names.index(b)]
        if int(both.sum()) < 2:
            return {}  # one pair has no negatives
        za, zb = outputs.embeddings[a][both], outputs.embeddings[b][both]
        if za.shape[1] != zb.shape[1]:
            raise ConfigError(
                f"layerwise: the CLIP loss needs {a!r} and {b!r} embeddings of one width, got "
                f"{za.shape[1]} and {zb.shape[1]}; give both encoders the same projection width"
            )
        return {CONTRASTIVE: clip_loss(za, zb, self.args.temperature)}
