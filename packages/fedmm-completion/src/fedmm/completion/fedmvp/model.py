"""FedMVP's local model: frozen feature extractors, then a small learnable joint encoder (spec §3.2).

* Frozen per-modality extractors ``f_m`` (FedMVP: ViT / BERT backbones fine-tuned on the task; here
  any module, e.g. :class:`~fedmm.completion.fedmvp.foundation.FrozenCLIP`'s encoders or core encoders
  pre-trained on a public split). They are held *outside* the module tree, so they are no parameter
  group: never trained, never sent, never averaged — every client has them locally.
* Learnable: a mapping ``h_m = W_m f_m`` per modality (group ``encoder.<m>``), a joint encoder ``J``
  (a transformer over the present modalities' tokens), a shared common encoder
  ``C(x) = normalize(W x)`` (group ``fusion`` with ``J``) and a residual classifier
  ``logits = W_c (W_2 ReLU(W_1 z) + z)`` (group ``head``).
* Outputs: unimodal embeddings ``u_m = C(h_m)``, the joint embedding
  ``z = C(mean_m J(h)_m)`` over the present modalities, logits from ``z``. A missing modality is
  masked out of ``J`` and its ``u_m`` is zero.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedmm.core.api import (
    MISSING_LABEL,
    Batch,
    ConfigError,
    ModalitySpec,
    ModelOutput,
    SampleSet,
    bar,
    build_encoder,
    encoder_group,
)

__all__ = ["CLIPImageFeatures", "CLIPTextFeatures", "FedMVPModel", "clip_extractors", "pretrain_extractors"]

log = logging.getLogger("fedmm")


class FedMVPModel(nn.Module):
    """Frozen extractors + learnable mapping, joint encoder, common encoder and classifier.

    Args:
        modalities: the data's modality specs.
        extractors: one frozen module per modality, ``(B, *shape) → (B, feature_dims[m])``.
        feature_dims: output width of each extractor.
        num_classes: classes of the head.
        dim: width of the learnable part.
        layers, heads: of the joint transformer encoder.
    """

    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
        extractors: Mapping[str, nn.Module],
        feature_dims: Mapping[str, int],
        num_classes: int,
        *,
        dim: int = 64,
        layers: int = 2,
        heads: int = 4,
    ) -> None:
        super().__init__()
        self.modality_specs = tuple(modalities)
        self.modalities = tuple(m.name for m in modalities)
        if set(extractors) != set(self.modalities) or set(feature_dims) != set(self.modalities):
            raise ConfigError(
                f"FedMVPModel needs an extractor and width per modality {list(self.modalities)}"
            )
        for ext in extractors.values():
            ext.eval()
            for p in ext.parameters():
                p.requires_grad_(False)
        # A plain dict is not registered: the frozen extractors stay out of state_dict and groups.
        self.frozen: dict[str, nn.Module] = dict(extractors)
        self.encoders = nn.ModuleDict({m: nn.Linear(int(feature_dims[m]), dim) for m in self.modalities})
        self.fusion = nn.ModuleDict(
            {
                "joint": nn.TransformerEncoder(
                    nn.TransformerEncoderLayer(
                        dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True
                    ),
                    layers,
                    enable_nested_tensor=False,
                ),
                "common": nn.Linear(dim, dim),
            }
        )
        self.modality_embedding = nn.Parameter(torch.zeros(len(self.modalities), dim))
        self.head = nn.ModuleDict(
            {"fc1": nn.Linear(dim, dim), "fc2": nn.Linear(dim, dim), "out": nn.Linear(dim, num_classes)}
        )
        self.dim = dim

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> FedMVPModel:
        # .to(device) / .double() reach the frozen extractors too, though they are not submodules.
        super()._apply(fn, *args, **kwargs)
        for ext in self.frozen.values():
            ext._apply(fn, *args, **kwargs)
        return self

    # -- groups: encoder.<m> (mapping), fusion (joint + common + modality embedding), head ------
    def parameter_groups(self) -> dict[str, tuple[str, ...]]:
        groups: dict[str, list[str]] = {}
        for key in self.state_dict():
            top, _, rest = key.partition(".")
            if top == "encoders":
                g = encoder_group(rest.partition(".")[0])
            elif top in ("fusion", "modality_embedding"):
                g = "fusion"
            else:
                g = "head"
            groups.setdefault(g, []).append(key)
        return {g: tuple(k) for g, k in groups.items()}

    def common(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fusion["common"](h), dim=-1)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """The classifier on an embedding (used for ``z`` and, by the RAM loss, for ``u_m``)."""
        o = self.head["fc2"](torch.relu(self.head["fc1"](z))) + z
        return self.head["out"](o)

    def forward(self, batch: Batch, active: Iterable[str] | None = None) -> ModelOutput:
        present = batch.present_for(active)
        n = len(batch)
        tokens = torch.zeros(n, len(self.modalities), self.dim)
        hidden: dict[str, torch.Tensor] = {}
        for i, m in enumerate(self.modalities):
            if bool(present[:, i].any()):
                with torch.no_grad():
                    f = self.frozen[m](batch.features[m])
                hidden[m] = self.encoders[m](f)
                tokens[:, i] = hidden[m]
        tokens = tokens + self.modality_embedding
        pad = ~present
        pad = pad & ~pad.all(dim=1, keepdim=True)  # a row with nothing present attends to all
        joint = self.fusion["joint"](tokens, src_key_padding_mask=pad)
        w = present.to(joint.dtype).unsqueeze(-1)
        z = self.common((joint * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0))
        embeddings = {
            m: self.common(hidden[m]) * present[:, i].unsqueeze(1).to(z.dtype)
            if m in hidden
            else torch.zeros(n, self.dim)
            for i, m in enumerate(self.modalities)
        }
        return ModelOutput(self.classify(z), embeddings, z, present)


def pretrain_extractors(
    public: SampleSet,
    num_classes: int,
    encoders: Mapping[str, str] | None = None,
    dim: int = 64,
    epochs: int = 60,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, nn.Module]:
    """Frozen extractors for :class:`FedMVPModel` when no pretrained backbone is at hand.

    One core encoder per modality (``encoders[m]``, default by modality kind) is trained alone,
    with a linear head, on the labelled public samples that have the modality (Adam 1e-3, batch 32),
    then frozen — the stand-in for the paper's backbones fine-tuned on the task. ``progress``
    announces it and shows a bar over the epochs (seconds to a minute of silence otherwise).
    """
    kinds = dict(encoders or {})
    out: dict[str, nn.Module] = {}
    if progress:
        log.info(
            "FedMVP: pre-training the frozen extractors (%s) on the %d public samples, %d epoch(s)…",
            ", ".join(public.modality_names),
            len(public),
            epochs,
        )
    steps = bar(
        total=epochs * len(public.modalities), enabled=progress, desc="FedMVP pre-training", unit="epoch"
    )
    for j, spec in enumerate(public.modalities):
        torch.manual_seed(seed)
        enc = build_encoder(spec, kinds.get(spec.name, "auto"), dim)
        head = nn.Linear(dim, num_classes)
        opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=1e-3)
        idx = np.flatnonzero(public.present[:, j] & (public.labels != MISSING_LABEL))
        if idx.size == 0:
            raise ConfigError(
                f"the public split has no labelled {spec.name!r} samples to pre-train its extractor"
            )
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = idx[torch.randperm(idx.size, generator=gen).numpy()]
            for start in range(0, order.size, 32):
                b = public.batch(order[start : start + 32])
                loss = F.cross_entropy(head(enc(b.features[spec.name])), b.labels)
                opt.zero_grad()
                loss.backward()
                opt.step()
            steps.update(1)
        out[spec.name] = enc.eval()
    steps.close()
    return out


class CLIPImageFeatures(nn.Module):
    """A frozen CLIP image tower as a :class:`FedMVPModel` extractor: images in [0, 1] → ``(B, dim)``."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(images)


class CLIPTextFeatures(nn.Module):
    """A frozen CLIP text tower as an extractor of the captions loader's token ids.

    The dataset's word ids are decoded with its vocabulary and re-tokenised with CLIP's own
    tokenizer (the two vocabularies differ), then encoded.
    """

    def __init__(self, clip: Any, tokenizer: Any, vocab: Sequence[str], max_length: int = 77) -> None:
        super().__init__()
        from fedmm.core.api import WordTokenizer

        self.clip = clip
        self.tokenizer = tokenizer
        self.words = WordTokenizer(vocab)
        self.max_length = max_length

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        texts = [self.words.decode(row.tolist()) for row in ids.long()]
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return self.clip.encode_text(enc["input_ids"], enc.get("attention_mask"))


def clip_extractors(
    clip: Any, tokenizer: Any, vocab: Sequence[str], image: str = "image", text: str = "text"
) -> tuple[dict[str, nn.Module], dict[str, int]]:
    """FedMVP's frozen feature extractors from one CLIP model (and its tokenizer), with their widths."""
    extractors: dict[str, nn.Module] = {
        image: CLIPImageFeatures(clip),
        text: CLIPTextFeatures(clip, tokenizer, vocab),
    }
    return extractors, {image: int(clip.dim), text: int(clip.dim)}
