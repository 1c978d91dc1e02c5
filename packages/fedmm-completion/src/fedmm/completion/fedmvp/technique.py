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
  ``a_i = Σ_j S_ij`` (degree centrality with the self-loop), ``w_i ∝ a_i n_i`` with the client's
  sample count ``n_i`` (``cka_weights="degree"``: ``w_i ∝ a_i``, the paper's code);
  ``aggregation="fedavg"`` leaves core's sample-weighted FedAvg in place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from fedmm.completion.fedmvp.completion import FoundationCompleter, PoolCompleter
from fedmm.completion.fedmvp.generators import CrossModalGenerator, GenerativeCompleter, probe_from_generator
from fedmm.completion.fedmvp.losses import mcm_loss, ram_loss
from fedmm.completion.fedmvp.model import FedMVPModel, clip_extractors, pretrain_extractors, token_extractor
from fedmm.core.api import (
    MISSING_LABEL,
    ArgumentProblem,
    BuiltModel,
    ClientContext,
    ClientResult,
    ConfigError,
    EmbeddingClassifier,
    GroupedArrays,
    ResultsContext,
    RoundContext,
    SampleSet,
    Technique,
    TechniqueArguments,
    TrainPlan,
    cka_aggregation_weights,
    python_only,
    weighted_mean,
)

if TYPE_CHECKING:
    from torch import nn

    from fedmm.core.api import Batch, ClientData, FederatedDataset, ModelOutput

__all__ = ["Completer", "FedMVP", "FedMVPArguments"]

CACHE = "fedmvp/completed/"
SHIPPED = "fedmvp/generator/"  # plan extras: the frozen generator's weights, on a client's first plan
MCM, RAM = "fedmvp/mcm", "fedmvp/ram"


class Completer(Protocol):
    def complete(self, samples: SampleSet) -> SampleSet: ...


_FOLDER = "a local folder (written by save_pretrained)"


class FedMVPArguments(TechniqueArguments):
    """FedMVP's arguments."""

    completer: SkipJsonSchema[Any] = python_only(
        "fills missing modalities once per client (cached), e.g. `PoolCompleter(public)`; omitted: the "
        "one `completion` names, built with the model"
    )
    probe: SkipJsonSchema[SampleSet | None] = python_only(
        "samples the server embeds with every uploaded model for the CKA weights; omitted: the server's "
        "public split, taken when FedMVP builds the model"
    )
    aggregation: Literal["cka", "fedavg"] = Field(
        "cka",
        description="`'cka'`: clients weighted by the linear-CKA degree centrality of their joint "
        "embeddings on the probe set; `'fedavg'`: core's sample-weighted FedAvg",
    )
    cka_weights: Literal["samples", "degree"] = Field(
        "samples",
        description="with `aggregation = 'cka'`: `'samples'` = `w_i ∝ a_i n_i`, the CKA degree `a_i` times "
        "the client's sample count (a client that trained on nothing gets no weight); `'degree'` = "
        "`w_i ∝ a_i` alone, as the paper's code (sample counts ignored)",
    )
    mcm_weight: float = Field(0.01, ge=0, description="α of the MCM loss (the paper's 0.01; 0 = off)")
    ram_weight: float = Field(0.5, ge=0, description="β_r of the RAM loss (the paper's 0.5; 0 = off)")
    temperature: float = Field(0.1, gt=0, description="τ of MCM (the paper's 0.1)")
    completion: Literal["pool", "generative", "foundation", "none"] = Field(
        "pool",
        description="how missing modalities are completed: `'pool'` = retrieval of the nearest same-class "
        "complete pair from the public split (`PoolCompleter`); `'generative'` = a cross-modal generator "
        "the server pre-trains on the public split in round 1, freezes and ships to each client, which "
        "generates the missing modality from the one it has (`GenerativeCompleter`); `'foundation'` = a "
        "captioner and a text-to-image model from local folders (`FoundationCompleter`, image–caption "
        "data); `'none'` = left missing (the zero-filling baseline)",
    )
    generative_path: str | None = Field(
        None,
        description="with `completion = 'generative'`: a saved `CrossModalGenerator` (its "
        "save_pretrained folder) to ship instead of pre-training one; never downloaded",
    )
    generator_hidden: int = Field(
        128, ge=1, description="with `completion = 'generative'`: width of the generator's networks"
    )
    generator_epochs: int = Field(
        30,
        ge=1,
        description="with `completion = 'generative'`: epochs of its pre-training on the public split",
    )
    dim: int = Field(64, ge=1, description="width of the frozen extractors' features and the joint encoder")
    tokens: int = Field(
        8,
        ge=1,
        le=16,
        description="tokens per modality the pre-trained conv extractors give the joint encoder (time steps "
        "of a 1-D conv net, a √tokens x √tokens grid of a CNN's patches); MLP/LSTM extractors give one",
    )
    extractor_epochs: int = Field(
        60, ge=0, description="epochs the frozen extractors are pre-trained on the public split"
    )
    captioner_path: str | None = Field(
        None, description=f"with `completion = 'foundation'`: the BLIP captioner, {_FOLDER}; never downloaded"
    )
    generator_path: str | None = Field(
        None,
        description=f"with `completion = 'foundation'`: the Stable Diffusion pipeline, {_FOLDER}; never "
        "downloaded",
    )
    clip_path: str | None = Field(
        None,
        description=f"frozen CLIP image and text towers as the extractors (with its tokenizer), {_FOLDER}; "
        "omitted: core encoders pre-trained on the public split",
    )
    category: str | None = Field(
        None, min_length=1, description="the coarse category the foundation completer's prompts name"
    )
    generation_steps: int = Field(20, ge=1, description="denoising steps of the text-to-image model")
    progress: bool = Field(
        True,
        description="show progress bars while the pool, extractors and completions are built "
        "(`fedmm run -q` turns them off)",
    )
    copies: int = Field(
        1,
        ge=1,
        description="with `completion = 'pool'`: completions per incomplete sample (the paper's prompt "
        "augmentation: several generations per prompt)",
    )

    @field_validator("completer", mode="before")
    @classmethod
    def _completer(cls, completer: Any) -> Any:
        if completer is not None and not callable(getattr(completer, "complete", None)):
            raise ValueError(
                f"takes a completer object with a complete(samples) method (Python API), got {completer!r}; "
                "in a config choose the completion instead: completion = 'pool', 'foundation' or 'none'"
            )
        return completer

    @field_validator("probe", mode="before")
    @classmethod
    def _probe(cls, probe: Any) -> Any:
        if probe is not None and not isinstance(probe, SampleSet):
            raise ValueError(
                f"takes a SampleSet (Python API), got {probe!r}; in a config leave it out: the probe is "
                "the server's public split ([data] validation_fraction > 0)"
            )
        return probe

    @field_validator("captioner_path", "generator_path", "clip_path", "generative_path", mode="before")
    @classmethod
    def _folder(cls, path: Any) -> Any:
        if path is None:
            return None
        if not isinstance(path, str) or not path:
            raise ValueError(f"must be {_FOLDER} or omitted, got {path!r}")
        if not Path(path).expanduser().exists():
            raise ValueError(
                f"{path!r} does not exist; give a local folder written by save_pretrained "
                "(nothing is downloaded)"
            )
        return path

    @model_validator(mode="after")
    def _foundation_models(self) -> FedMVPArguments:
        if (
            self.completion == "foundation"
            and self.completer is None
            and not (self.captioner_path or self.generator_path)
        ):
            raise ArgumentProblem(
                "completion",
                "= 'foundation' needs captioner_path and/or generator_path (local folders written by "
                "save_pretrained), or a completer",
            )
        return self


class FedMVP(Technique):
    """FedMVP. ``completer=None`` turns completion off (the zero-filling baseline keeps missing
    modalities masked); ``probe`` is the server's probe set for CKA (required for ``"cka"``).
    Arguments: :class:`FedMVPArguments`."""

    name: ClassVar[str] = "fedmvp"
    Arguments: ClassVar[type[TechniqueArguments]] = FedMVPArguments
    args: FedMVPArguments
    # Frozen extractors sit outside the groups: a mapping per modality, then the joint encoder.
    builds: ClassVar[BuiltModel | None] = BuiltModel(
        "a joint encoder on frozen pre-trained extractors", groups=("encoder.{m}", "fusion", "head")
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Built with the model when not given (create_model), so state beside the arguments.
        self.completer: Completer | None = self.args.completer
        self.probe: SampleSet | None = self.args.probe
        self.last_weights: np.ndarray | None = None
        self.shipped: set[int] = set()  # clients that were sent the frozen generator
        self._shipment: dict[str, np.ndarray] | None = None  # its weights, read once it is trained

    def owned(self) -> frozenset[str]:
        # With aggregation="fedavg" its aggregate step gives way to core's FedAvg: it owns nothing.
        owned = super().owned()
        return owned - {"aggregate"} if self.args.aggregation == "fedavg" else owned

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
        if self.completer is None and self.args.completion == "pool":
            self.completer = PoolCompleter(public, progress=self.args.progress, copies=self.args.copies)
        elif self.completer is None and self.args.completion == "foundation":
            self.completer = self._foundation_completer(data)
        elif self.completer is None and self.args.completion == "generative":
            if self.args.generative_path is not None:
                generator = CrossModalGenerator.from_pretrained(self.args.generative_path)
            else:
                generator = CrossModalGenerator(data.modalities, hidden=self.args.generator_hidden)
            self.completer = GenerativeCompleter(
                generator, public, epochs=self.args.generator_epochs, progress=self.args.progress
            )
        if self.probe is None and not isinstance(self.completer, GenerativeCompleter):
            self.probe = public  # with a generator, the probe is generated once it is trained
        if self.args.clip_path is not None:
            extractors, widths = self._clip_extractors(data)
        else:
            encoders = dict(options.get("encoders") or {})
            extractors = pretrain_extractors(
                public,
                data.num_classes,
                encoders,
                self.args.dim,
                self.args.extractor_epochs,
                progress=self.args.progress,
            )
            tokenised = {m: token_extractor(e, self.args.tokens) for m, e in extractors.items()}
            extractors = {m: t[0] for m, t in tokenised.items()}
            widths = {m: t[1] for m, t in tokenised.items()}
        return FedMVPModel(data.modalities, extractors, widths, data.num_classes, dim=self.args.dim)

    def _clip_extractors(self, data: FederatedDataset) -> tuple[dict[str, nn.Module], dict[str, int]]:
        from transformers import AutoTokenizer

        from fedmm.completion.fedmvp.foundation import FrozenCLIP

        assert self.args.clip_path is not None
        vocab = data.metadata.get("vocab")
        if not vocab:
            raise ConfigError(
                "fedmvp: clip_path extracts image–caption features; the data has no word vocabulary"
            )
        clip = FrozenCLIP.from_pretrained(self.args.clip_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.args.clip_path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"fedmvp: no CLIP tokenizer in {self.args.clip_path!r}; save it into the model folder with "
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
        captioner = Captioner.from_pretrained(self.args.captioner_path) if self.args.captioner_path else None
        generator = (
            TextToImage.from_pretrained(self.args.generator_path) if self.args.generator_path else None
        )
        return FoundationCompleter(
            captioner,
            generator,
            vocab,
            data.class_names,
            category=self.args.category,
            steps=self.args.generation_steps,
            progress=self.args.progress,
        )

    # -- server --------------------------------------------------------------------------------
    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        # Checked on the server: a client-side error would only drop the client, round after round.
        if self.completer is None and self.args.completion == "pool":
            raise ConfigError(
                "fedmvp: completion='pool' has no pool yet: pass completer=PoolCompleter(public), let "
                "FedMVP build the model (strategy.create_model(data, {})), or set completion='none'"
            )
        if isinstance(self.completer, GenerativeCompleter):
            plan = self._ship_generator(client_id, plan)
        if self.args.aggregation == "cka" and self.probe is None:
            raise ConfigError(
                "fedmvp: CKA aggregation needs a probe set: pass probe= (e.g. the server's validation "
                "split) or let FedMVP build the model (create_model) from data with a validation split"
            )
        return plan

    def _ship_generator(self, client_id: int, plan: TrainPlan) -> TrainPlan:
        """Round 1: the server pre-trains the generator on its public split (this runs in the
        server's charged ``configure``) and, without a given probe, generates the CKA probe with it.
        A client's first plan carries the frozen generator's weights (downloaded bytes)."""
        completer = self.completer
        assert isinstance(completer, GenerativeCompleter)
        completer.fit()
        if self.probe is None and completer.public is not None:
            self.probe = probe_from_generator(completer.public, completer.generator)
        if client_id in self.shipped:
            return plan
        self.shipped.add(client_id)
        if self._shipment is None:  # frozen from here on: one copy serves every client's plan
            self._shipment = {SHIPPED + k: v for k, v in completer.arrays().items()}
        return plan.with_extra(**self._shipment)

    def state_dict(self) -> dict[str, Any]:
        return {"shipped": sorted(self.shipped)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.shipped = {int(c) for c in state.get("shipped", ())}

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
        shipped = {k[len(SHIPPED) :]: v for k, v in cctx.plan.extra.items() if k.startswith(SHIPPED)}
        if shipped and isinstance(self.completer, GenerativeCompleter):
            self.completer.load_arrays(shipped)  # the frozen generator the server sent
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
        if self.args.mcm_weight > 0 and uni and len(batch) > 1:
            terms[MCM] = mcm_loss(outputs.fused, uni, self.args.temperature, self.args.mcm_weight)
        # RAM needs the shared head on unimodal embeddings (FedMVPModel has it; late fusion does not).
        if (
            self.args.ram_weight > 0
            and uni
            and bool(labelled.any())
            and isinstance(model, EmbeddingClassifier)
        ):
            y = batch.labels[labelled]
            joint_ce = F.cross_entropy(outputs.logits[labelled], y)
            uni_l = {m: u[labelled] for m, u in uni.items()}
            uni_ce = {m: F.cross_entropy(model.classify(u), y) for m, u in uni_l.items()}
            terms[RAM] = ram_loss(outputs.fused[labelled], uni_l, uni_ce, joint_ce, self.args.ram_weight)
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
            reps.append(out.fused.cpu().numpy())
        counts = [r.num_samples for r in results] if self.args.cka_weights == "samples" else None
        return np.asarray(
            cka_aggregation_weights(reps, normalize_rows=True, sample_counts=counts), dtype=np.float64
        )

    def aggregate(self, ctx: ResultsContext, results: Sequence[ClientResult]) -> GroupedArrays | None:
        if self.args.aggregation != "cka":
            return None
        weights = self.client_weights(ctx, results)
        self.last_weights = weights
        return weighted_mean([r.update for r in results], weights.tolist(), ctx.previous_arrays)

    def after_round(self, ctx: ResultsContext, metrics: dict[str, Any]) -> None:
        if self.last_weights is not None and len(self.last_weights):
            metrics["fedmvp/cka_weight_min"] = float(self.last_weights.min())
            metrics["fedmvp/cka_weight_max"] = float(self.last_weights.max())
