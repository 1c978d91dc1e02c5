"""``BMSFed``: balanced modality selection as a fedmm technique.

Reference: Fan, Xu, Wang, Huo, Chen & Guo, BMSFed (ECCV 2024, arXiv 2401.00403). Method notes
(what we do, where it departs from the paper): ``docs/methods/bmsfed.md``.

Hooks:

* ``select_clients`` (owned): round 1 asks every client (the paper's round 0: initial update
  vectors, ρ_k and prototypes); afterwards stochastic greedy on the facility-location objectives
  builds ``S_M`` (train all modalities) and ``S_I`` (train only the weak modality ``I``).
* ``configure``: ``S_I`` clients train ``encoder.<I>``, ``fusion`` and ``head`` with only ``I``
  active; clients holding one modality train just that one; every plan carries the global
  prototypes (``plan.extra["bmsfed/prototypes/<m>"]``) and the ME weight λ
  (``plan.loss_weights["bmsfed/me"]``).
* ``loss_terms``: the modal-enhancement loss (spec §3.1), on the modality the batch imbalance ratio
  says is behind.
* ``report``: local prototypes and class counts of the trained modalities, nearest-local-prototype
  accuracies and ρ_k (spec §3.2).
* ``after_round``: update vectors ``θ_global − θ_local`` are formed on the server from
  ``ctx.previous_arrays`` and the uploaded weights (no extra upload), sketched by a count sketch,
  and replace the selected clients' rows; global prototypes are merged; ρ̄ decides the weak modality.

Only two modalities are supported (as in the paper); more raise a :class:`ConfigError`.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from fedmm.core.api import (
    ClientContext,
    Combination,
    ConfigError,
    ModelNeeds,
    ResultsContext,
    RoundContext,
    Technique,
    TechniqueArguments,
    TrainPlan,
    class_prototypes,
    collect_embeddings,
    encoder_group,
    nearest_prototype_accuracy,
    of_modality,
    update_prototypes,
)
from fedmm.select.bmsfed.losses import (
    EPS,
    client_imbalance_ratio,
    modal_enhancement_loss,
    prototype_scores,
    prototype_temperature,
)
from fedmm.select.bmsfed.selection import Selection, pairwise_distances, stochastic_greedy_bmsfed

if TYPE_CHECKING:
    from torch import nn

    from fedmm.core.api import Batch, ClientData, ModalitySpec, ModelOutput

__all__ = ["ALL", "BMSFed", "BMSFedArguments", "count_sketch"]

ALL = "all"
"""Name of the all-modality update-vector set (``D_M``); the per-modality sets use the modality names."""
LOSS = "bmsfed/me"
PROTO = "bmsfed/prototypes/"
CLASSES = "bmsfed/classes/"


def count_sketch(vector: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """A count sketch (feature hashing with random signs) of ``vector`` into ``dim`` buckets.

    Linear, and ``E‖S(a) − S(b)‖² = ‖a − b‖²``, so distances between sketches estimate the
    distances between update vectors (relative error ~ ``1/√dim``) at O(P) cost per vector and
    O(N·dim) server memory instead of O(N·P). ``dim = 0`` returns the vector itself (exact).
    """
    v = np.asarray(vector, dtype=np.float64).ravel()
    if dim == 0:
        return v
    rng = np.random.default_rng([seed & 0xFFFFFFFF, v.shape[0]])
    buckets = rng.integers(0, dim, size=v.shape[0])
    signs = rng.integers(0, 2, size=v.shape[0]) * 2.0 - 1.0
    return np.bincount(buckets, weights=signs * v, minlength=dim)


def _modality_names(modalities: Sequence[ModalitySpec]) -> tuple[str, str]:
    names = tuple(m.name for m in modalities)
    if len(names) != 2:
        raise ConfigError(
            f"BMSFed supports exactly two modalities (as in the paper); this dataset has {len(names)} "
            f"({', '.join(names)}). Keep two with [data].modalities = [...] in the config "
            "(datasets.load(..., only_modalities=[...]) in Python) or use another selection technique."
        )
    return names[0], names[1]


def _trained_modalities(plan: TrainPlan, held: Sequence[str]) -> tuple[str, ...]:
    """The modalities a plan trains: its combinations' modalities (all held if unrestricted)."""
    if not plan.combinations or any(c.modalities is None for c in plan.combinations):
        return tuple(held)
    wanted = {m for c in plan.combinations for m in (c.modalities or ())}
    return tuple(m for m in held if m in wanted)


class BMSFedArguments(TechniqueArguments):
    """BMSFed's arguments."""

    chi: float = Field(
        2.0,
        ge=1,
        allow_inf_nan=True,
        description="threshold χ ≥ 1 of the conflict rule: a client joins `S_I` (trains only the weak "
        "modality) when its imbalance ratio passes it (`ρ > χ`, or `ρ < 1/χ` when the first modality is "
        "the weak one; a client holding only the weak modality passes any finite χ); `inf` = plain DivFL, "
        "no `S_I`. 2.0 (the official run script's) was chosen by `fedmm bench bmsfed-tuning` on seeds 0–4",
    )
    clients_per_round: int = Field(
        5,
        ge=1,
        description="K, clients picked per round after the first, which asks everyone (BMSFed owns "
        "`select_clients`, so the strategy's own sampling is not applied)",
    )
    me_weight: float = Field(
        0.2,
        ge=0,
        description="λ, weight of the modal-enhancement loss (0 = off, the ablation); 0.2 was chosen by "
        "`fedmm bench bmsfed-tuning` on seeds 0–4, where the paper's 2.0 cost 16–46 accuracy points "
        "against random selection at both learning rates tried",
    )
    sample_size: int | None = Field(
        None,
        ge=1,
        description="|R| of stochastic greedy; omitted = `max(K, ⌊0.1·N⌋)` as in the spec; `≥ N` = exact "
        "greedy",
    )
    sketch_dim: int = Field(
        256, ge=0, description="buckets of the count sketch of each update vector (0 = keep exact vectors)"
    )
    coincide_to_multimodal: bool = Field(
        True, description="a client that wins both objectives joins `S_M` (the slides' rule)"
    )
    scale_free: bool = Field(
        True,
        description="divide the ME loss's distances by τ = the global prototypes' mean pairwise distance; "
        "false = the paper's raw distances, which diverged at our learning rates",
    )
    unit_updates: bool = Field(
        True,
        description="compare update directions (unit-norm sketches): update norms shrink as training "
        "converges, so with raw vectors the same few clients win every round; false = raw vectors as in "
        "the paper",
    )
    seed: int = Field(0, description="seed of the sketch hashing")


class BMSFed(Technique):
    """Balanced modality selection (BMSFed; Fan et al., ECCV 2024, arXiv 2401.00403).
    Arguments: :class:`BMSFedArguments`."""

    name: ClassVar[str] = "bmsfed"
    Arguments: ClassVar[type[TechniqueArguments]] = BMSFedArguments
    args: BMSFedArguments
    owns: ClassVar[frozenset[str]] = frozenset({"select_clients"})
    needs: ClassVar[ModelNeeds] = ModelNeeds(
        groups=("encoder.{m}", "fusion", "head"),
        why="its weak-modality and single-modality clients train encoder.<m>, fusion and head",
        hint="use core's late-fusion model",
    )
    # Its weak-modality and single-modality clients get these whatever was planned before, so a
    # technique that sets them (a schedule's combinations, LayerWise's train) must come after it.
    overwrites: ClassVar[frozenset[str]] = frozenset({"train", "combinations", "upload"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reset()
        self._warned_no_multimodal = False  # once per instance (a checkpoint load does not reset it)

    def _reset(self) -> None:
        self._num_clients = 0
        self._initialised = False
        self._sketch: dict[str, np.ndarray] = {}  # set -> (N, dim) latest sketch of each client's update
        self._rho = np.zeros(0)  # (N,) latest ρ_k, NaN = unknown / not both modalities
        self._has = np.zeros((0, 2), dtype=bool)  # (N, 2) modalities each client holds
        self._seen = np.zeros(0, dtype=bool)  # (N,) reported at least once
        self._protos: dict[str, np.ndarray] = {}  # modality -> (C, d) global prototypes
        self._counts: dict[str, np.ndarray] = {}  # modality -> (C,) global class counts
        self._weak: str | None = None
        self._assignment: dict[int, str] = {}  # this round: client -> "M" | "I"
        self._last: Selection | None = None

    # -- read-only views (for tests and metrics) ---------------------------------------------
    @property
    def weak_modality(self) -> str | None:
        """The modality BMSFed currently treats as weak (``None`` before the first round ends)."""
        return self._weak

    @property
    def assignment(self) -> dict[int, str]:
        """This round's picks: client id → ``"M"`` (all modalities) or ``"I"`` (weak modality only)."""
        return dict(self._assignment)

    @property
    def global_prototypes(self) -> dict[str, np.ndarray]:
        return {m: p.copy() for m, p in self._protos.items()}

    @property
    def imbalance_ratios(self) -> np.ndarray:
        return self._rho.copy()

    # -- server ------------------------------------------------------------------------------
    def _setup(self, ctx: RoundContext) -> tuple[str, str]:
        names = _modality_names(ctx.modalities)
        if self._num_clients == 0:
            n = ctx.num_clients
            self._num_clients = n
            self._rho = np.full(n, np.nan)
            self._has = np.zeros((n, 2), dtype=bool)
            self._seen = np.zeros(n, dtype=bool)
        elif self._num_clients != ctx.num_clients:
            raise ConfigError(
                f"bmsfed: its state is for {self._num_clients} clients but the run has {ctx.num_clients}"
            )
        return names

    def distance_matrix(self, which: str) -> np.ndarray:
        """``D`` of one update-vector set (``"all"`` or a modality name), from the latest sketches."""
        sk = self._sketch.get(which)
        if sk is None:
            return np.zeros((self._num_clients, self._num_clients))
        return pairwise_distances(sk)

    def select_clients(self, ctx: RoundContext, candidates: np.ndarray) -> np.ndarray:
        names = self._setup(ctx)
        second = names[1]
        cands = np.asarray(candidates, dtype=np.int64)
        if not self._initialised:
            # The paper's round 0: every client trains once so that vectors, ρ and prototypes exist.
            self._assignment = {int(c): "M" for c in cands}
            self._last = None
            return cands
        weak = self._weak
        d_multi = self.distance_matrix(ALL)
        d_weak = self.distance_matrix(weak) if weak is not None else d_multi
        weak_only = None
        if weak is not None:
            # Clients known to hold only the weak modality may join S_I whatever their (undefined)
            # ρ: they train only that modality in either set, so χ has no trade-off to guard
            # (argued at ``stochastic_greedy_bmsfed``'s ``weak_only``; docs/methods/bmsfed.md).
            w = names.index(weak)
            weak_only = self._seen & self._has[:, w] & ~self._has[:, 1 - w]
        sel = stochastic_greedy_bmsfed(
            d_multi,
            d_weak,
            self._rho,
            self.args.clients_per_round,
            ctx.rng,
            chi=self.args.chi if weak is not None else math.inf,
            weak_is_second=weak == second,
            size=self.args.sample_size,
            candidates=cands,
            coincide_to_multimodal=self.args.coincide_to_multimodal,
            weak_only=weak_only,
        )
        self._assignment = {c: "M" for c in sel.multimodal} | {c: "I" for c in sel.unimodal}
        self._last = sel
        return np.asarray(sel.clients, dtype=np.int64)

    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        names = self._setup(ctx)
        if self.args.me_weight > 0:
            extra: dict[str, Any] = {}
            for m, protos in self._protos.items():
                extra[PROTO + m] = protos.astype(np.float32)
                extra[CLASSES + m] = self._counts[m] > 0
            if extra:
                plan = plan.with_extra(**extra)
                plan = plan.replace(loss_weights={**plan.loss_weights, LOSS: self.args.me_weight})
        only: str | None = None
        if self._assignment.get(client_id) == "I" and self._weak is not None:
            only = self._weak
        elif client_id < self._num_clients and self._seen[client_id] and int(self._has[client_id].sum()) == 1:
            # A client holding one modality trains (and uploads) only that encoder, so it does not
            # send back the other encoder untouched and dilute its average (spec step 2).
            only = names[int(np.argmax(self._has[client_id]))]
        if only is not None:
            plan = plan.replace(
                train=(encoder_group(only), "fusion", "head"),
                combinations=(Combination((only,)),),
                upload=None,
            )
        return plan

    def after_round(self, ctx: ResultsContext, metrics: dict[str, Any]) -> None:
        first, second = self._setup(ctx)
        names = (first, second)
        prev = ctx.previous_arrays
        enc_groups = {m: of_modality(ctx.groups, m) for m in names}
        round_protos: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {m: [] for m in names}
        for r in ctx.results:
            cid = r.client_id
            parts: list[np.ndarray] = []
            for m in names:
                trained = [g for g in enc_groups[m] if g in r.update]
                # Update vector θ_global − θ_local; a group not uploaded did not change (zero).
                vec = np.concatenate(
                    [
                        (np.asarray(prev[g][k], np.float64) - np.asarray(r.update[g][k], np.float64)).ravel()
                        if g in r.update
                        else np.zeros(np.asarray(prev[g][k]).size)
                        for g in enc_groups[m]
                        for k in prev[g]
                    ]
                )
                parts.append(vec)
                if trained:
                    self._store(m, cid, vec)
            if self._assignment.get(cid, "M") == "M":
                self._store(ALL, cid, np.concatenate(parts))
            rep = r.report
            self._seen[cid] = True
            for i, m in enumerate(names):
                self._has[cid, i] = f"bmsfed/acc/{m}" in rep
                if PROTO + m in rep:
                    round_protos[m].append(
                        (np.asarray(rep[PROTO + m]), np.asarray(rep[f"bmsfed/counts/{m}"]))
                    )
            self._rho[cid] = float(rep.get("bmsfed/rho", math.nan))
        for m in names:
            if not round_protos[m]:
                continue
            # Classes nobody selected this round held keep their previous global prototype.
            previous = (self._protos[m], self._counts[m]) if m in self._protos else None
            self._protos[m], self._counts[m] = update_prototypes(
                previous, [p for p, _ in round_protos[m]], [c for _, c in round_protos[m]]
            )
        sizes = np.asarray(ctx.client_sizes, dtype=np.float64)
        known = np.isfinite(self._rho)
        if known.any() and sizes[known].sum() > 0:
            rho_bar = float(np.sum(sizes[known] * self._rho[known]) / np.sum(sizes[known]))
            self._weak = second if rho_bar > 1.0 else first
            metrics["bmsfed/rho"] = rho_bar
        if self._weak is not None:
            metrics["bmsfed/weak_modality_index"] = float(names.index(self._weak))
        metrics["bmsfed/selected_unimodal"] = float(sum(1 for a in self._assignment.values() if a == "I"))
        metrics["bmsfed/selected_multimodal"] = float(sum(1 for a in self._assignment.values() if a == "M"))
        if self._last is not None and self._last.g_multimodal:
            metrics["bmsfed/objective/multimodal"] = self._last.g_multimodal[-1]
        self._warn_if_no_multimodal_client(ctx.round, names)
        self._initialised = True

    def _warn_if_no_multimodal_client(self, round_: int, names: tuple[str, str]) -> None:
        """Warn once when no client that has reported holds both modalities: BMSFed is then DivFL.

        The server learns what each client holds only from its reports, and round 1 asks every
        client, so this is known at the end of round 1 (later only if round 1 was skipped)."""
        if self._warned_no_multimodal or self._weak is not None or not self._seen.any():
            return
        if bool(self._has.all(axis=1).any()):
            return
        self._warned_no_multimodal = True
        warnings.warn(
            f"bmsfed: none of the {int(self._seen.sum())} clients that reported by round {round_} holds "
            f"both modalities ({names[0]!r} and {names[1]!r}), so no client imbalance ratio ρ can be "
            "computed and no weak modality is chosen: the selection falls back to plain DivFL "
            "(facility location over the update vectors, S_M only, no S_I), and the ME loss, if on, "
            "enhances each client's one modality. It stays so until a client holding both reports.",
            RuntimeWarning,
            stacklevel=2,
        )

    def _store(self, which: str, cid: int, vec: np.ndarray) -> None:
        sk = count_sketch(vec, self.args.sketch_dim, zlib.crc32(f"{self.args.seed}:{which}".encode()))
        if self.args.unit_updates:
            norm = float(np.linalg.norm(sk))
            sk = sk / norm if norm > 0 else sk
        if which not in self._sketch:
            self._sketch[which] = np.zeros((self._num_clients, sk.shape[0]))
        self._sketch[which][cid] = sk

    # -- client ------------------------------------------------------------------------------
    def loss_terms(
        self, cctx: ClientContext, batch: Batch, outputs: ModelOutput
    ) -> Mapping[str, torch.Tensor]:
        extra = cctx.plan.extra
        names = _modality_names(cctx.modalities)
        labels = batch.labels
        usable: dict[str, torch.Tensor] = {}  # samples with the modality, a label and its prototype
        protos: dict[str, torch.Tensor] = {}
        remap: dict[str, torch.Tensor] = {}
        for i, m in enumerate(names):
            if PROTO + m not in extra:
                continue
            keep = torch.from_numpy(np.asarray(extra[CLASSES + m], dtype=bool)).to(labels.device)
            ok = outputs.present[:, i] & (labels >= 0) & keep[labels.clamp_min(0)]
            if not bool(ok.any()):
                continue
            # Classes without a global prototype are left out of the softmax: labels are remapped.
            p = torch.from_numpy(np.asarray(extra[PROTO + m], dtype=np.float32)).to(labels.device)
            remap[m] = torch.full((p.shape[0],), -1, dtype=torch.long, device=labels.device)
            remap[m][keep] = torch.arange(int(keep.sum()), device=labels.device)
            protos[m] = p[keep]
            usable[m] = ok
        if not usable:
            return {}
        temp = {m: prototype_temperature(protos[m]) if self.args.scale_free else 1.0 for m in usable}
        first, second = names
        targets: tuple[str, ...]
        both = usable[first] & usable[second] if len(usable) == 2 else None
        if both is not None and bool(both.any()):
            # ρ_batch = s_A / s_V decides which modality is behind on this batch (spec §3.1).
            with torch.no_grad():
                s = {
                    m: prototype_scores(
                        outputs.embeddings[m][both], remap[m][labels[both]], protos[m], temp[m]
                    )
                    for m in names
                }
            ratio = float(s[first]) / (float(s[second]) + EPS)
            targets = (second,) if ratio > 1.0 else (first,) if ratio < 1.0 else ()
        else:
            targets = tuple(usable)  # one modality trained (S_I or unimodal client): enhance it
        terms = [
            modal_enhancement_loss(
                outputs.embeddings[m][usable[m]], remap[m][labels[usable[m]]], protos[m], temp[m]
            )
            for m in targets
        ]
        return {LOSS: torch.stack(terms).sum()} if terms else {}

    def report(self, cctx: ClientContext, model: nn.Module, data: ClientData) -> Mapping[str, Any]:
        names = _modality_names(cctx.modalities)
        emb = collect_embeddings(model, data.batches(512, shuffle=False))
        if emb.labels.size == 0:
            return {}
        labelled = {m: emb.labelled(m) for m in names}
        held = tuple(m for m in names if labelled[m][1].size)
        trained = _trained_modalities(cctx.plan, held)
        out_report: dict[str, Any] = {}
        acc: dict[str, float] = {}
        for m in held:
            z, y = labelled[m]
            protos, counts = class_prototypes(z, y, cctx.num_classes)
            acc[m] = nearest_prototype_accuracy(z, y, protos, counts)
            out_report[f"bmsfed/acc/{m}"] = acc[m]
            if m in trained:
                out_report[PROTO + m] = protos.astype(np.float32)
                out_report[f"bmsfed/counts/{m}"] = counts
        if len(acc) == 2:
            rho = client_imbalance_ratio(acc[names[0]], acc[names[1]])
            if math.isfinite(rho):
                out_report["bmsfed/rho"] = rho
        return out_report

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "num_clients": self._num_clients,
            "initialised": self._initialised,
            "sketch": {k: v.copy() for k, v in self._sketch.items()},
            "rho": self._rho.copy(),
            "has": self._has.copy(),
            "seen": self._seen.copy(),
            "prototypes": {k: v.copy() for k, v in self._protos.items()},
            "counts": {k: v.copy() for k, v in self._counts.items()},
            "weak": self._weak,
            "assignment": {str(k): v for k, v in self._assignment.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._reset()
        self._num_clients = int(state["num_clients"])
        self._initialised = bool(state["initialised"])
        self._sketch = {k: np.asarray(v, dtype=np.float64).copy() for k, v in state["sketch"].items()}
        self._rho = np.asarray(state["rho"], dtype=np.float64).copy()
        self._has = np.asarray(state["has"], dtype=bool).copy()
        self._seen = np.asarray(state["seen"], dtype=bool).copy()
        self._protos = {k: np.asarray(v, dtype=np.float64).copy() for k, v in state["prototypes"].items()}
        self._counts = {k: np.asarray(v, dtype=np.int64).copy() for k, v in state["counts"].items()}
        self._weak = state["weak"]
        self._assignment = {int(k): str(v) for k, v in state["assignment"].items()}
