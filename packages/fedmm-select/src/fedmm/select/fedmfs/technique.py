"""FedMFS as a fedmm technique (Yuan, Han, Chellapandi, Żak, Brinton, IEEE ICC 2024, arXiv 2310.07048).

Hooks used:

* ``check_federation`` — before round 1, on any model: ``gamma`` above the number of modalities is
  refused; a :class:`FedMFSWarning` says when, with these model sizes and weights, the Shapley
  values cannot change any client's choice (:func:`~fedmm.select.fedmfs.priority.size_gap`).
* ``configure`` — with a :class:`~fedmm.select.fedmfs.model.ModalityEnsembleModel` (every group is
  one ``encoder.<m>``) the fused cross-entropy is switched off (``loss_weights["ce"] = 0``) and each
  modality model is trained on its own NLL (``loss_terms``): the models share no gradients.
* ``report`` — stage-1 ensemble (random forest over each local modality model's argmax prediction),
  Shapley impact ϕ_m of every modality the client owns, sizes |θ_m|, priority
  ``P = α_s ϕ̂ + α_c (1 − ŝ)`` and the top-γ upload list (the random-γ baseline,
  :class:`~fedmm.select.baselines.random_upload.RandomUpload`, overrides only this choice).
* ``upload`` — keeps only the chosen ``encoder.<m>`` groups (other groups, e.g. a late-fusion
  model's ``fusion``/``head``, are left as they are).
* ``aggregate`` — each modality model is averaged over its uploaders; a model nobody uploaded stays
  bit-exact. ``aggregation="weighted"`` (default) leaves this to core's per-group FedAvg (weights =
  sample counts, owning nothing); ``aggregation="mean"`` owns the step and weighs every uploader 1,
  as the paper's code does.
* ``after_round`` — logs ``fedmfs/shapley/<m>`` (mean over reporting clients that own ``m``) and
  ``fedmfs/uploads/<m>`` (how many clients uploaded it).

With another model (e.g. core's ``late_fusion``) FedMFS still works: the unimodal predictions come
from ``model(batch, active=(m,))`` and only the encoders are selected.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from fedmm.core.api import (
    MISSING_LABEL,
    ArgumentError,
    ArgumentProblem,
    Batch,
    BuiltModel,
    ClientContext,
    ClientData,
    ClientResult,
    FederatedDataset,
    GroupedArrays,
    ModelNeeds,
    ModelOutput,
    ResultsContext,
    RoundContext,
    Technique,
    TechniqueArguments,
    TrainPlan,
    encoder_group,
    expand_groups,
    modality_of,
    model_groups,
    shapley_values,
    weighted_mean,
)
from fedmm.select.fedmfs.evaluation import fit_ensemble, modality_predictions
from fedmm.select.fedmfs.model import modality_ensemble
from fedmm.select.fedmfs.priority import priority, shapley_can_change_choice, size_gap, top_gamma

ShapleyBackend = Literal["tree", "exact"]

PER_MODALITY = "fedmfs_per_modality"
SHAPLEY, AVAILABLE, UPLOAD = "fedmfs/shapley", "fedmfs/available", "fedmfs/upload"


class FedMFSWarning(UserWarning):
    """A FedMFS setting that runs but does not do what its arguments suggest (e.g. a priority the
    Shapley values cannot move)."""


class UploadArguments(TechniqueArguments):
    """What FedMFS and its random baseline (:class:`~fedmm.select.baselines.random_upload.RandomUpload`)
    share: how many modality models go up, the stage-1 ensemble and its Shapley values, the model
    and how the server averages the uploads."""

    gamma: int = Field(
        1,
        ge=1,
        description="modality models a client uploads per round, `1 <= gamma <= M` (a client owning fewer "
        "uploads all it has; `gamma = M` uploads everything); checked against the data's modalities "
        "before round 1",
    )
    shapley: ShapleyBackend = Field(
        "tree",
        description="how the Shapley impact ϕ_m on the stage-1 ensemble is computed: `'tree'` = "
        "shap's TreeExplainer on the random forest, ϕ_m = Σ over explained samples and classes of "
        "|SHAP| (as the paper's code); `'exact'` = core's exact Shapley values with v(T) = mean "
        "probability of the true class when the modalities outside T take background values",
    )
    n_estimators: int = Field(10, ge=1, description="trees in the stage-1 random forest")
    shap_samples: int = Field(
        50, ge=1, description="background (and explained) points sampled from the client's data"
    )
    model: Literal["ensemble", "late_fusion"] = Field(
        "ensemble",
        description="the model a config-built run uses: `'ensemble'` = the paper's independent "
        "per-modality models (built from `[model]`); `'late_fusion'` = core's late-fusion model (the "
        "top-γ encoders plus `fusion`/`head` go up; it combines with BMSFed and FedMVP)",
    )
    aggregation: Literal["weighted", "mean"] = Field(
        "weighted",
        description="how the server averages each group over the clients that uploaded it: `'weighted'` "
        "= core's FedAvg, weighted by the clients' sample counts; `'mean'` = a plain mean, every "
        "uploader weighing 1 (the paper's code; owns the `aggregate` step)",
    )


class FedMFSArguments(UploadArguments):
    """FedMFS's arguments: the shared ones and the priority's weights."""

    alpha_s: float = Field(0.5, ge=0, description="weight of the normalised Shapley impact ϕ̂ in the priority")
    alpha_c: float = Field(
        0.5, ge=0, description="weight of the normalised model-size saving `1 − ŝ` (not both weights 0)"
    )

    ties: Literal["order", "random"] = Field(
        "order",
        description="how modalities of equal priority are ranked: `'order'` = the data's modality order "
        "(the paper's stable sort); `'random'` = uniformly at random from the client's report seed. Ties "
        "arise when `alpha_s = 0` and models have equal sizes: ranking by size alone then cannot choose, "
        "and `'order'` would let the order in which a data set lists its modalities decide",
    )

    @model_validator(mode="after")
    def _some_weight(self) -> FedMFSArguments:
        if self.alpha_s == 0 and self.alpha_c == 0:
            raise ArgumentProblem(
                "alpha_s", "and alpha_c are both 0, so the priority cannot rank modalities; make one > 0"
            )
        return self


class FedMFS(Technique):
    """Selective modality upload: each client sends only γ modality models per round, the top γ by
    the priority ``P = α_s ϕ̂ + α_c (1 − ŝ)``. Arguments: :class:`FedMFSArguments`."""

    name: ClassVar[str] = "fedmfs"
    _owner: ClassVar[str] = "FedMFS"  # how its argument errors name it
    Arguments: ClassVar[type[TechniqueArguments]] = FedMFSArguments
    args: UploadArguments  # FedMFSArguments; RandomUpload's lack the priority's weights
    needs: ClassVar[ModelNeeds] = ModelNeeds(
        groups=("encoder.{m}",), why="it uploads each modality's model as that group"
    )
    # model="ensemble": the paper's independent modality models, one group encoder.<m> each (no
    # fusion, no head, no layered encoders); model="late_fusion" builds nothing.
    builds: ClassVar[BuiltModel | None] = BuiltModel("a per-modality ensemble", groups=("encoder.{m}",))

    def _check_gamma(self, modalities: list[str]) -> None:
        gamma = self.args.gamma
        if gamma > len(modalities):
            raise ArgumentError(
                self._owner,
                "gamma",
                f"= {gamma} exceeds the number of modalities ({len(modalities)}: {', '.join(modalities)}); "
                f"use 1 <= gamma <= {len(modalities)}",
            )

    def owned(self) -> frozenset[str]:
        # With aggregation="weighted" its aggregate step gives way to core's FedAvg: it owns none.
        owned = super().owned()
        return owned - {"aggregate"} if self.args.aggregation == "weighted" else owned

    # -- set-up ------------------------------------------------------------------------------
    def builds_model(self) -> BuiltModel | None:
        return self.builds if self.args.model == "ensemble" else None

    def create_model(self, data: FederatedDataset, options: Mapping[str, Any]) -> nn.Module | None:
        """The paper's independent per-modality models (``model="ensemble"``), built from the
        ``[model]`` section's ``encoders`` / ``encoder_options`` / ``embed_dim``; ``None`` keeps
        core's late-fusion model (``model="late_fusion"``)."""
        # gamma against the data's modalities: known once the data is, before round 1.
        self._check_gamma([m.name for m in data.modalities])
        if self.args.model != "ensemble":
            return None
        return modality_ensemble(
            data.modalities,
            data.num_classes,
            encoders=options.get("encoders") or None,
            encoder_options=options.get("encoder_options") or None,
            embed_dim=int(options.get("embed_dim", 64)),
        )

    def check_federation(self, model: nn.Module, data: FederatedDataset) -> None:
        """Before round 1, on any model (one built by hand or core's late-fusion model, which
        ``create_model`` never sees): gamma against the data's modalities, then a warning if the
        priority cannot depend on the Shapley values."""
        names = [m.name for m in data.modalities]
        self._check_gamma(names)
        args = self.args
        if not isinstance(args, FedMFSArguments) or args.alpha_s == 0:
            return  # no priority (the random baseline), or size alone on purpose
        sizes = self._sizes(model, names)
        owned = (
            np.ones((1, len(names)), dtype=bool)
            if data.client_modalities is None
            else np.unique(np.asarray(data.client_modalities, dtype=bool), axis=0)
        )
        # The priority is normalised over each client's own modalities: one check per distinct set.
        gaps = [g for row in owned if (g := size_gap(sizes, row, args.gamma)) is not None]
        if not gaps or any(
            shapley_can_change_choice(sizes, row, args.gamma, args.alpha_s, args.alpha_c) for row in owned
        ):
            return  # nobody chooses (gamma >= what each client holds), or Shapley can matter
        smallest = sorted(range(len(names)), key=lambda j: (sizes[j], j))[: args.gamma]
        warnings.warn(
            f"{self._owner}: the Shapley values cannot change which modality models a client uploads: "
            f"with alpha_s = {args.alpha_s:g}, alpha_c = {args.alpha_c:g} and gamma = {args.gamma} the "
            f"size term alone decides, so each client uploads its {args.gamma} smallest modality "
            f"model{'s' if args.gamma > 1 else ''} (one holding every modality: "
            f"{', '.join(names[j] for j in smallest)}). The Shapley term moves a choice only "
            "when alpha_s > alpha_c x the normalised size gap between a client's gamma-th and "
            f"(gamma+1)-th smallest models (here at least {min(gaps):g}); raise alpha_s above "
            f"{args.alpha_c * min(gaps):g}, or set alpha_s = 0 to rank by size on purpose",
            FedMFSWarning,
            stacklevel=4,  # here <- Strategy.check_federation <- Federation() <- the caller's line
        )

    # -- server ------------------------------------------------------------------------------
    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        names = [m.name for m in ctx.modalities]
        self._check_gamma(names)
        if set(ctx.groups) == {encoder_group(m) for m in names}:
            # Independent modality models: one NLL per modality instead of the fused CE.
            plan = plan.replace(loss_weights={**plan.loss_weights, "ce": 0.0})
            return plan.with_extra(**{PER_MODALITY: True})
        return plan

    def aggregate(self, ctx: ResultsContext, results: Sequence[ClientResult]) -> GroupedArrays | None:
        if self.args.aggregation != "mean":
            return None  # core's sample-weighted FedAvg
        # Per group over its uploaders (core's weighted_mean renormalises per group), weight 1 each.
        return weighted_mean([r.update for r in results], [1.0] * len(results), ctx.previous_arrays)

    def after_round(self, ctx: ResultsContext, metrics: dict[str, Any]) -> None:
        names = [m.name for m in ctx.modalities]
        reports = [r.report for r in ctx.results if SHAPLEY in r.report]
        if not reports:
            return
        phi = np.stack([np.asarray(r[SHAPLEY], dtype=np.float64) for r in reports])
        has = np.stack([np.asarray(r[AVAILABLE], dtype=bool) for r in reports])
        sent = np.stack([np.asarray(r[UPLOAD], dtype=bool) for r in reports])
        for j, m in enumerate(names):
            if has[:, j].any():
                metrics[f"fedmfs/shapley/{m}"] = float(phi[has[:, j], j].mean())
            metrics[f"fedmfs/uploads/{m}"] = int(sent[:, j].sum())

    # -- client ------------------------------------------------------------------------------
    def loss_terms(
        self, cctx: ClientContext, batch: Batch, outputs: ModelOutput
    ) -> Mapping[str, torch.Tensor]:
        if not cctx.plan.extra.get(PER_MODALITY):
            return {}
        labelled = batch.labels != MISSING_LABEL
        terms: dict[str, torch.Tensor] = {}
        for j, m in enumerate(batch.modalities):
            mask = outputs.present[:, j] & labelled
            if bool(mask.any()):
                terms[f"fedmfs/nll/{m}"] = F.cross_entropy(outputs.embeddings[m][mask], batch.labels[mask])
        return terms

    def adds_loss_terms(self, plan: TrainPlan) -> bool:
        # Only the per-modality ensemble's plans carry the NLL terms (late fusion trains on the CE).
        return bool(plan.extra.get(PER_MODALITY))

    def report(self, cctx: ClientContext, model: nn.Module, data: ClientData) -> Mapping[str, Any]:
        names = [m.name for m in cctx.modalities]
        owned = set(data.modalities)
        available = np.array([m in owned for m in names], dtype=bool)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=cctx.generator, device="cpu"))
        phi = np.zeros(len(names), dtype=np.float64)
        if available.sum() > 1:  # also for the random baseline, so its Shapley curves are logged too
            phi = self._shapley(model, data, available, seed)
        chosen = self._choose(model, names, phi, available, seed)
        upload = np.zeros(len(names), dtype=np.int8)
        upload[chosen] = 1
        # Small arrays: they count as uploaded bytes (a few dozen bytes per client).
        return {SHAPLEY: phi.astype(np.float32), AVAILABLE: available.astype(np.int8), UPLOAD: upload}

    def upload(
        self, cctx: ClientContext, report: Mapping[str, Any], groups: tuple[str, ...]
    ) -> tuple[str, ...]:
        if UPLOAD not in report:
            return groups
        names = [m.name for m in cctx.modalities]
        chosen = {names[j] for j in np.flatnonzero(np.asarray(report[UPLOAD]))}
        return tuple(g for g in groups if (m := modality_of(g)) is None or m in chosen)

    # -- helpers -----------------------------------------------------------------------------
    def _choose(
        self, model: nn.Module, names: list[str], phi: np.ndarray, available: np.ndarray, seed: int
    ) -> list[int]:
        """The modalities (indices into ``names``) the client uploads: the top γ by priority.

        The one step :class:`~fedmm.select.baselines.random_upload.RandomUpload` overrides."""
        args = self.args
        assert isinstance(args, FedMFSArguments)  # the priority's weights are FedMFS's own
        sizes = self._sizes(model, names)
        scores = priority(phi, sizes, available, args.alpha_s, args.alpha_c)
        rng = np.random.default_rng(seed) if args.ties == "random" else None
        return top_gamma(scores, available, args.gamma, rng)

    @staticmethod
    def _sizes(model: nn.Module, names: list[str]) -> np.ndarray:
        """|θ_m|: number of values in modality m's groups (parameters and buffers)."""
        groups = model_groups(model)
        state = model.state_dict()
        sizes = np.zeros(len(names), dtype=np.float64)
        for j, m in enumerate(names):
            for g in expand_groups([encoder_group(m)], groups):
                sizes[j] += sum(state[k].numel() for k in groups[g])
        return sizes

    def _shapley(self, model: nn.Module, data: ClientData, available: np.ndarray, seed: int) -> np.ndarray:
        """Shapley impact of each owned modality on the stage-1 ensemble (0 for the others)."""
        labelled = data.labelled()
        y = labelled.labels()
        phi = np.zeros(available.shape[0], dtype=np.float64)
        if y.shape[0] < 2 or np.unique(y).shape[0] < 2:
            return phi  # no ensemble to explain: priority falls back to size alone
        cols = np.flatnonzero(available)
        u_all = modality_predictions(model, labelled.samples, labelled.indices, labelled.modality_mask)
        u = u_all[:, cols]
        rf = fit_ensemble(u, y, seed, self.args.n_estimators)
        rng = np.random.default_rng(seed)
        pick = rng.choice(u.shape[0], size=min(self.args.shap_samples, u.shape[0]), replace=False)
        sample = u[pick]
        if self.args.shapley == "tree":
            values = _tree_shap(rf, sample)
        else:
            values = _exact_shap(rf, sample, y[pick], [str(j) for j in range(cols.shape[0])])
        phi[cols] = values
        return phi


def _tree_shap(rf: object, sample: np.ndarray) -> np.ndarray:
    """ϕ_j = Σ_{samples, classes} |SHAP| from ``shap.TreeExplainer`` (interventional, background = sample)."""
    with warnings.catch_warnings():  # shap's import emits deprecation noise
        warnings.simplefilter("ignore")
        import shap  # slow import (numba): only when a client computes Shapley values

        explainer = shap.TreeExplainer(
            rf, data=sample.astype(np.float64), feature_perturbation="interventional"
        )
        raw = explainer.shap_values(sample.astype(np.float64), check_additivity=False)
    f = sample.shape[1]
    if isinstance(raw, list):  # older shap: one (n, f) array per class
        return np.sum([np.abs(np.asarray(v)).sum(axis=0) for v in raw], axis=0)
    arr = np.abs(np.asarray(raw, dtype=np.float64))
    if arr.ndim == 2:
        return arr.sum(axis=0)
    # (n, f, classes) in current shap; find the feature axis defensively.
    axis = 1 if arr.shape[1] == f else 2
    return arr.sum(axis=tuple(a for a in range(arr.ndim) if a != axis))


def _exact_shap(rf: Any, sample: np.ndarray, y: np.ndarray, players: list[str]) -> np.ndarray:
    """Core's exact Shapley values; v(T) = mean P(true class) with features outside T from the background."""
    n, f = sample.shape
    col = {c: i for i, c in enumerate(rf.classes_)}
    target = np.array([col.get(int(c), -1) for c in y])

    def value(coalition: frozenset[str]) -> float:
        keep = np.array([p in coalition for p in players])
        # Every explained row against every background row (interventional masking).
        x = np.where(keep[None, None, :], sample[:, None, :], sample[None, :, :]).reshape(n * n, f)
        proba = rf.predict_proba(x).reshape(n, n, -1).mean(axis=1)
        return float(np.mean(np.where(target >= 0, proba[np.arange(n), np.maximum(target, 0)], 0.0)))

    phi = shapley_values(value, players, method="exact")
    return np.array([phi[p] for p in players], dtype=np.float64)


__all__ = ["FedMFS", "FedMFSArguments", "FedMFSWarning", "UploadArguments"]
