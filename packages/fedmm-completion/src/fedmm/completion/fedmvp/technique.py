"""``FedMVP``: complete missing modalities with frozen models, train a joint encoder with MCM and
RAM, aggregate by CKA similarity (Che, Wang, Liu, Ma, arXiv 2406.11048; method notes
``docs/methods/fedmvp.md``).

Hooks:

* ``prepare`` (client): on a client's first round, complete its missing modalities with the
  completer (e.g. :class:`~fedmm.completion.fedmvp.completion.PoolCompleter`) and cache the completed
  columns in the client's state; later rounds reuse the cache. The work is measured by core's
  ledger (``flops_by_hook["prepare"]``, ``seconds_by_hook["prepare"]``).
* ``loss_terms`` (client): MCM and RAM on the model's joint and unimodal embeddings
  (:class:`~fedmm.completion.fedmvp.model.FedMVPModel`).
* ``aggregate`` (server, owned; ``aggregation="cka"``): each uploaded model embeds the server's
  probe set; ``S_ij`` = linear CKA of clients ``i`` and ``j`` (rows L2-normalised), weights
  ``w_i ∝ Σ_j S_ij`` (degree centrality with the self-loop); ``aggregation="fedavg"`` leaves
  core's sample-weighted FedAvg in place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from fedmm.completion.fedmvp.completion import FoundationCompleter, PoolCompleter
from fedmm.completion.fedmvp.losses import mcm_loss, ram_loss
from fedmm.completion.fedmvp.model import FedMVPModel, clip_extractors, pretrain_extractors
from fedmm.core.arguments import choice, flag, integer, number, optional_text
from fedmm.core.arrays import GroupedArrays, weighted_mean
from fedmm.core.data.types import MISSING_LABEL, SampleSet
from fedmm.core.errors import ArgumentError, ConfigError
from fedmm.core.maths.cka import cka_aggregation_weights
from fedmm.core.models.model import EmbeddingClassifier
from fedmm.core.protocol import (
    BuiltModel,
    ClientContext,
    ClientResult,
    ResultsContext,
    RoundContext,
    Technique,
    TrainPlan,
)

if TYPE_CHECKING:
    from torch import nn

    from fedmm.core.data.types import Batch, ClientData, FederatedDataset
    from fedmm.core.models.model import ModelOutput

__all__ = ["Completer", "FedMVP"]

CACHE = "fedmvp/completed/"
MCM, RAM = "fedmvp/mcm", "fedmvp/ram"


class Completer(Protocol):
    def complete(self, samples: SampleSet) -> SampleSet: ...


class FedMVP(Technique):
    """FedMVP. ``completer=None`` turns completion off (the zero-filling baseline keeps missing
    modalities masked); ``probe`` is the server's probe set for CKA (required for ``"cka"``).

    Args:
        completer: fills missing modalities once per client (cached).
        probe: samples the server embeds with every uploaded model for the CKA weights.
        aggregation: ``"cka"`` or ``"fedavg"``.
        mcm_weight, ram_weight: ``α`` and ``β_r`` (the paper's 0.01 and 0.5); 0 turns a loss off.
        temperature: ``τ`` of MCM (0.1).
        copies: with ``completion="pool"``, completions per incomplete sample (the paper's prompt
            augmentation: several generations per prompt; see :class:`PoolCompleter`).
    """

    name: ClassVar[str] = "fedmvp"
    # Frozen extractors sit outside the groups: a mapping per modality, then the joint encoder.
    builds: ClassVar[BuiltModel | None] = BuiltModel(
        "a joint encoder on frozen pre-trained extractors", groups=("encoder.{m}", "fusion", "head")
    )

    def __init__(
        self,
        completer: Completer | None = None,
        probe: SampleSet | None = None,
        aggregation: Literal["cka", "fedavg"] = "cka",
        mcm_weight: float = 0.01,
        ram_weight: float = 0.5,
        temperature: float = 0.1,
        completion: Literal["pool", "foundation", "none"] = "pool",
        dim: int = 64,
        extractor_epochs: int = 60,
        captioner_path: str | None = None,
        generator_path: str | None = None,
        clip_path: str | None = None,
        category: str | None = None,
        generation_steps: int = 20,
        progress: bool = True,
        copies: int = 1,
    ) -> None:
        # Every argument is checked here, when the technique is built, never in round 1.
        owner = "fedmvp"
        if completer is not None and not callable(getattr(completer, "complete", None)):
            raise ArgumentError(
                owner,
                "completer",
                f"takes a completer object with a complete(samples) method (Python API), got {completer!r}; "
                "in a config choose the completion instead: completion = 'pool', 'foundation' or 'none'",
            )
        if probe is not None and not isinstance(probe, SampleSet):
            raise ArgumentError(
                owner,
                "probe",
                f"takes a SampleSet (Python API), got {probe!r}; in a config leave it out: the probe is "
                "the server's public split ([data] validation_fraction > 0)",
            )
        aggregation = choice(owner, "aggregation", aggregation, ("cka", "fedavg"))  # type: ignore[assignment]
        completion = choice(owner, "completion", completion, ("pool", "foundation", "none"))  # type: ignore[assignment]
        mcm_weight = number(owner, "mcm_weight", mcm_weight, low=0)
        ram_weight = number(owner, "ram_weight", ram_weight, low=0)
        temperature = number(owner, "temperature", temperature, low=0, low_open=True)
        dim = integer(owner, "dim", dim, low=1)
        extractor_epochs = integer(owner, "extractor_epochs", extractor_epochs, low=0)
        generation_steps = integer(owner, "generation_steps", generation_steps, low=1)
        copies = integer(owner, "copies", copies, low=1)
        progress = flag(owner, "progress", progress)
        category = optional_text(owner, "category", category)
        for label, path in (
            ("captioner_path", captioner_path),
            ("generator_path", generator_path),
            ("clip_path", clip_path),
        ):
            folder = optional_text(owner, label, path, "a local folder (written by save_pretrained)")
            if folder is not None and not Path(folder).expanduser().exists():
                raise ArgumentError(
                    owner,
                    label,
                    f"{folder!r} does not exist; give a local folder written by save_pretrained "
                    "(nothing is downloaded)",
                )
        if completion == "foundation" and completer is None and not (captioner_path or generator_path):
            raise ArgumentError(
                owner,
                "completion",
                "= 'foundation' needs captioner_path and/or generator_path (local folders written by "
                "save_pretrained), or a completer",
            )
        self.completer = completer
        self.probe = probe
        self.aggregation = aggregation
        self.mcm_weight = mcm_weight
        self.ram_weight = ram_weight
        self.temperature = temperature
        self.completion = completion
        self.dim = dim
        self.extractor_epochs = extractor_epochs
        self.captioner_path = captioner_path
        self.clip_path = clip_path
        self.generator_path = generator_path
        self.category = category
        self.generation_steps = generation_steps
        self.progress = progress
        self.copies = copies
        self.last_weights: np.ndarray | None = None

    def config(self) -> dict[str, Any]:
        return {
            "aggregation": self.aggregation,
            "mcm_weight": self.mcm_weight,
            "ram_weight": self.ram_weight,
            "temperature": self.temperature,
            "completion": self.completion,
            "dim": self.dim,
            "extractor_epochs": self.extractor_epochs,
            "captioner_path": self.captioner_path,
            "clip_path": self.clip_path,
            "generator_path": self.generator_path,
            "category": self.category,
            "generation_steps": self.generation_steps,
            "progress": self.progress,
            "copies": self.copies,
        }

    # -- set-up --------------------------------------------------------------------------------
    def create_model(self, data: FederatedDataset, options: Mapping[str, Any]) -> nn.Module | None:
        """FedMVP's model for ``data``, from its public split (``validation_fraction`` > 0):
        extractors pre-trained there and frozen, the completion pool and the CKA probe set."""
        public = data.validation
        if public is None or len(public) == 0:
            raise ConfigError(
                "fedmvp builds its frozen extractors, completion pool and CKA probe from the server's "
                "public split: load the data with validation_fraction > 0 "
                "(e.g. [data] validation_fraction = 0.1)"
            )
        if self.completer is None and self.completion == "pool":
            self.completer = PoolCompleter(public, progress=self.progress, copies=self.copies)
        elif self.completer is None and self.completion == "foundation":
            self.completer = self._foundation_completer(data)
        if self.probe is None:
            self.probe = public
        names = [m.name for m in data.modalities]
        if self.clip_path is not None:
            extractors, widths = self._clip_extractors(data)
        else:
            encoders = dict(options.get("encoders") or {})
            extractors = pretrain_extractors(
                public, data.num_classes, encoders, self.dim, self.extractor_epochs, progress=self.progress
            )
            widths = dict.fromkeys(names, self.dim)
        return FedMVPModel(data.modalities, extractors, widths, data.num_classes, dim=self.dim)

    def _clip_extractors(self, data: FederatedDataset) -> tuple[dict[str, nn.Module], dict[str, int]]:
        from transformers import AutoTokenizer

        from fedmm.completion.fedmvp.foundation import FrozenCLIP

        assert self.clip_path is not None
        vocab = data.metadata.get("vocab")
        if not vocab:
            raise ConfigError(
                "fedmvp: clip_path extracts image–caption features; the data has no word vocabulary"
            )
        clip = FrozenCLIP.from_pretrained(self.clip_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.clip_path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"fedmvp: no CLIP tokenizer in {self.clip_path!r}; save it into the model folder with "
                "save_pretrained"
            ) from exc
        return clip_extractors(clip, tokenizer, vocab)

    def _foundation_completer(self, data: FederatedDataset) -> FoundationCompleter:
        from fedmm.completion.fedmvp.foundation import Captioner, TextToImage

        vocab = data.metadata.get("vocab")
        if not vocab:
            raise ConfigError(
                "fedmvp: completion='foundation' completes image–caption data (the captions loader); "
                f"{data.name!r} has no word vocabulary — use completion='pool'"
            )
        captioner = Captioner.from_pretrained(self.captioner_path) if self.captioner_path else None
        generator = TextToImage.from_pretrained(self.generator_path) if self.generator_path else None
        return FoundationCompleter(
            captioner,
            generator,
            vocab,
            data.class_names,
            category=self.category,
            steps=self.generation_steps,
            progress=self.progress,
        )

    # -- server --------------------------------------------------------------------------------
    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        # Checked on the server: a client-side error would only drop the client, round after round.
        if self.completer is None and self.completion == "pool":
            raise ConfigError(
                "fedmvp: completion='pool' has no pool yet: pass completer=PoolCompleter(public), let "
                "FedMVP build the model (strategy.create_model(data, {})), or set completion='none'"
            )
        if self.aggregation == "cka" and self.probe is None:
            raise ConfigError(
                "fedmvp: CKA aggregation needs a probe set: pass probe= (e.g. the server's validation "
                "split) or let FedMVP build the model (create_model) from data with a validation split"
            )
        return plan

    # -- client --------------------------------------------------------------------------------
    def prepare(self, cctx: ClientContext, data: ClientData) -> ClientData:
        if self.completer is None:
            return data
        own = data.local_copy()
        names = own.modality_names
        if CACHE + "present" in cctx.state:  # completed on an earlier round
            feats = {m: cctx.state[CACHE + m] for m in names}
            present = cctx.state[CACHE + "present"].astype(bool)
            generated = cctx.state[CACHE + "generated"].astype(bool)
            # Augmenting completers append copies: the cache holds their labels too.
            labels = cctx.state.get(CACHE + "labels", own.labels)
            return data.with_samples(SampleSet(own.modalities, feats, labels, present, generated))
        done = self.completer.complete(own)
        for m in names:
            cctx.state[CACHE + m] = done.features[m]
        cctx.state[CACHE + "present"] = done.present
        cctx.state[CACHE + "generated"] = done.generated
        cctx.state[CACHE + "labels"] = done.labels
        return data.with_samples(done)

    def loss_terms(
        self, cctx: ClientContext, batch: Batch, outputs: ModelOutput
    ) -> Mapping[str, torch.Tensor]:
        model = cctx.model
        labelled = batch.labels != MISSING_LABEL
        terms: dict[str, torch.Tensor] = {}
        names = list(batch.modalities)
        uni = {
            m: outputs.embeddings[m]
            for i, m in enumerate(names)
            if bool(outputs.present[:, i].all())  # contrast only within batches that hold m everywhere
        }
        if self.mcm_weight > 0 and uni and len(batch) > 1:
            terms[MCM] = mcm_loss(outputs.fused, uni, self.temperature, self.mcm_weight)
        # RAM needs the shared head on unimodal embeddings (FedMVPModel has it; late fusion does not).
        if self.ram_weight > 0 and uni and bool(labelled.any()) and isinstance(model, EmbeddingClassifier):
            y = batch.labels[labelled]
            joint_ce = F.cross_entropy(outputs.logits[labelled], y)
            uni_l = {m: u[labelled] for m, u in uni.items()}
            uni_ce = {m: F.cross_entropy(model.classify(u), y) for m, u in uni_l.items()}
            terms[RAM] = ram_loss(outputs.fused[labelled], uni_l, uni_ce, joint_ce, self.ram_weight)
        return terms

    # -- server --------------------------------------------------------------------------------
    def client_weights(self, ctx: ResultsContext, results: Sequence[ClientResult]) -> np.ndarray:
        """CKA degree-centrality weights of ``results`` (the clients' models on the probe set)."""
        if self.probe is None:
            raise ConfigError(
                "fedmvp: CKA aggregation needs a probe set: pass probe= (e.g. the server's validation "
                "split) or let FedMVP build the model (create_model) from data with a validation split"
            )
        if ctx.model_factory is None:
            raise ConfigError(
                "fedmvp: CKA aggregation needs a server-side model, which this engine does not give"
            )
        reps = []
        idx = np.arange(len(self.probe))
        for r in results:
            arrays = {g: {**ctx.previous_arrays[g], **r.update.get(g, {})} for g in ctx.previous_arrays}
            model = ctx.model_factory(arrays)
            with torch.no_grad():
                out = model(self.probe.batch(idx))
            reps.append(out.fused.numpy())
        return np.asarray(cka_aggregation_weights(reps, normalize_rows=True), dtype=np.float64)

    def aggregate(self, ctx: ResultsContext, results: Sequence[ClientResult]) -> GroupedArrays | None:
        if self.aggregation != "cka":
            return None
        weights = self.client_weights(ctx, results)
        self.last_weights = weights
        return weighted_mean([r.update for r in results], weights.tolist(), ctx.previous_arrays)

    def after_round(self, ctx: ResultsContext, metrics: dict[str, Any]) -> None:
        if self.last_weights is not None and len(self.last_weights):
            metrics["fedmvp/cka_weight_min"] = float(self.last_weights.min())
            metrics["fedmvp/cka_weight_max"] = float(self.last_weights.max())
