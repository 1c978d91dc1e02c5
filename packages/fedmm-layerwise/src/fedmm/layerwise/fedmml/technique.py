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
``TrainPlan.depth``). Losses: core's supervised cross-entropy (``supervised``) plus, with
``contrastive_weight > 0``, the CLIP loss between the two towers' embeddings (spec §3:
the paper's code uses one or the other; ``L = L_sup + λ·L_con``).

Composition: ``configure`` narrows what earlier techniques planned (the trainable set is
intersected with the incoming ``train``), so list ``LayerWise`` after a technique that restricts
training (e.g. BMSFed's weak-modality picks); the other order is refused when the strategy is
built, and ``lw`` / ``prog`` on a model without layered encoders when the federation is (see the
declarations on the class).
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from fedmm.core.arguments import choice, flag, integer, number
from fedmm.core.errors import ArgumentError, ConfigError
from fedmm.core.groups import expand_groups, modality_of
from fedmm.core.maths.contrastive import clip_loss
from fedmm.core.protocol import ClientContext, ModelNeeds, ResultsContext, RoundContext, Technique, TrainPlan
from fedmm.layerwise.fedmml.schedule import StageSchedule, schedule_from, stages_needed

if TYPE_CHECKING:
    from fedmm.core.data.types import Batch
    from fedmm.core.models.model import ModelOutput

__all__ = ["MODES", "LayerWise", "layer_counts"]

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


class LayerWise(Technique):
    """Layer-wise (LW-FedMML), progressive (Prog-FedMML) or end-to-end (FedMML) training.

    Args:
        mode: ``"lw"``, ``"prog"`` or ``"e2e"`` (see the module docstring).
        rounds_per_stage: rounds of each stage: an int (uniform; as many stages as it takes to grow
            every encoder to full depth) or a list (one entry per stage, e.g. the paper's
            "low-high" ``[0, 0, 0, 10, 30, 50]``). Ignored by ``e2e``.
        layers_per_stage: layers added per stage, one int for all encoders or per modality
            (the paper: 2 for ViT-Tiny's 12 layers, 1 for the 6-layer text tower).
        contrastive_weight: ``λ`` of the CLIP loss between the two towers (0 = off, the paper's
            choice for supervised tasks).
        temperature: ``τ`` of the CLIP loss (the paper's 0.05).
        supervised: keep the cross-entropy on labelled samples (False = contrastive only, for
            self-supervised pre-training; needs ``contrastive_weight > 0``).
        contrastive_pair: the two modalities of the CLIP loss (default: the first two).
    """

    name: ClassVar[str] = "layerwise"
    needs: ClassVar[ModelNeeds] = ModelNeeds(
        layered_encoders=True,
        why="it grows and trains them layer by layer",
        hint=(
            'build the encoders with encoder kind "transformer" (or fedmm.layerwise.fedmml.hf.HFTextEncoder)'
        ),
    )
    # train is intersected with what earlier techniques planned and keep extended; download and
    # depth are the stage's, whatever was planned before.
    writes: ClassVar[frozenset[str]] = frozenset({"train", "keep"})
    overwrites: ClassVar[frozenset[str]] = frozenset({"download", "depth"})

    def __init__(
        self,
        mode: Literal["lw", "prog", "e2e"] = "lw",
        rounds_per_stage: int | Sequence[int] = 10,
        layers_per_stage: int | Mapping[str, int] = 1,
        contrastive_weight: float = 0.0,
        temperature: float = 0.05,
        supervised: bool = True,
        contrastive_pair: Sequence[str] | None = None,
    ) -> None:
        # Every argument is checked here, when the technique is built, never in round 1.
        owner = "layerwise"
        mode = choice(owner, "mode", mode, MODES)  # type: ignore[assignment]
        if isinstance(rounds_per_stage, str) or not isinstance(rounds_per_stage, numbers.Integral | Sequence):
            raise ArgumentError(
                owner,
                "rounds_per_stage",
                f"must be an integer >= 1 or a list of them, got {rounds_per_stage!r}",
            )
        if isinstance(rounds_per_stage, Sequence):
            rounds = [integer(owner, "rounds_per_stage", r, low=0) for r in rounds_per_stage]
            if sum(rounds) == 0:
                raise ArgumentError(
                    owner, "rounds_per_stage", f"must give some stage rounds (> 0 in total), got {rounds}"
                )
            rounds_per_stage = rounds
        else:
            rounds_per_stage = integer(owner, "rounds_per_stage", rounds_per_stage, low=1)
        if isinstance(layers_per_stage, Mapping):
            per: dict[str, int] = {}
            for m, n in layers_per_stage.items():
                if not isinstance(m, str):
                    raise ArgumentError(
                        owner, "layers_per_stage", f"maps modality names to layers, got key {m!r}"
                    )
                per[m] = integer(owner, f"layers_per_stage.{m}", n, low=1)
        else:
            per = {"*": integer(owner, "layers_per_stage", layers_per_stage, low=1)}
        contrastive_weight = number(owner, "contrastive_weight", contrastive_weight, low=0)
        temperature = number(owner, "temperature", temperature, low=0, low_open=True)
        supervised = flag(owner, "supervised", supervised)
        if not supervised and contrastive_weight == 0:
            raise ArgumentError(owner, "supervised", "= false leaves no loss; set contrastive_weight > 0")
        if contrastive_pair is not None and (
            isinstance(contrastive_pair, str)
            or not isinstance(contrastive_pair, Sequence)
            or len(contrastive_pair) != 2
            or not all(isinstance(m, str) for m in contrastive_pair)
            or contrastive_pair[0] == contrastive_pair[1]
        ):
            raise ArgumentError(
                owner, "contrastive_pair", f"names two different modalities, got {contrastive_pair!r}"
            )
        self.mode = mode
        self.rounds_per_stage = (
            rounds_per_stage if isinstance(rounds_per_stage, int) else tuple(rounds_per_stage)
        )
        self.layers_per_stage = dict(per)
        self.contrastive_weight = contrastive_weight
        self.temperature = temperature
        self.supervised = supervised
        self.contrastive_pair = None if contrastive_pair is None else tuple(contrastive_pair)

    def config(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "rounds_per_stage": self.rounds_per_stage
            if isinstance(self.rounds_per_stage, int)
            else list(self.rounds_per_stage),
            "layers_per_stage": dict(self.layers_per_stage),
            "contrastive_weight": self.contrastive_weight,
            "temperature": self.temperature,
            "supervised": self.supervised,
            "contrastive_pair": None if self.contrastive_pair is None else list(self.contrastive_pair),
        }

    def model_needs(self) -> ModelNeeds:
        return ModelNeeds() if self.mode == "e2e" else self.needs  # e2e trains any model whole

    # -- the schedule ------------------------------------------------------------------------
    def _per_stage(self, layers: Mapping[str, int]) -> dict[str, int]:
        unknown = set(self.layers_per_stage) - {"*"} - set(layers)
        if unknown:
            raise ConfigError(
                f"layerwise: layers_per_stage names {sorted(unknown)}, which have no layered encoder; "
                f"layered: {sorted(layers)}"
            )
        default = self.layers_per_stage.get("*", 1)
        return {m: self.layers_per_stage.get(m, default) for m in layers}

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
        sched = schedule_from(self.rounds_per_stage, needed)
        if sched.num_stages < needed:
            raise ConfigError(
                f"layerwise: {sched.num_stages} stages cannot grow the encoders ({layers} layers, "
                f"{per} per stage) to full depth; give {needed} stages or more layers per stage"
            )
        return sched

    def stage_plan(
        self, groups: Sequence[str], round_: int
    ) -> tuple[int, dict[str, int], tuple[str, ...], tuple[str, ...]]:
        """``(stage, depth, train, keep)`` of round ``round_`` (``depth`` empty and everything
        trained for ``e2e``)."""
        groups = list(groups)
        if self.mode == "e2e":
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
                (train if self.mode == "prog" or newest else keep).append(g)
            elif part == "embed" and self.mode == "lw" and stage > 1:
                keep.append(g)
            else:
                train.append(g)  # embed (stage 1 or prog), norm, proj
        return stage, depth, tuple(train), tuple(keep)

    # -- server ------------------------------------------------------------------------------
    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        names = list(ctx.groups)
        _, depth, train, keep = self.stage_plan(names, ctx.round)
        allowed = set(expand_groups(plan.train, names)) if plan.train else set()
        train = tuple(g for g in train if g in allowed)
        weights = dict(plan.loss_weights)
        if self.contrastive_weight > 0:
            weights[CONTRASTIVE] = self.contrastive_weight
        if not self.supervised:
            weights["ce"] = 0.0
        if self.mode == "e2e":
            return plan.replace(train=train, loss_weights=weights)
        return plan.replace(
            depth=depth,
            train=train,
            download=train,
            keep=tuple(dict.fromkeys((*plan.keep, *keep))),
            loss_weights=weights,
        )

    def after_round(self, ctx: ResultsContext, metrics: dict[str, Any]) -> None:
        if self.mode == "e2e":
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
        a, b = self.contrastive_pair or tuple(names[:2])
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
        return {CONTRASTIVE: clip_loss(za, zb, self.temperature)}
