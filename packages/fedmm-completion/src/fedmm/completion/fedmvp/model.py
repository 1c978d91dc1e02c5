"""FedMVP's local model: frozen feature extractors, then a small learnable joint encoder (spec §3.2).

* Frozen per-modality extractors ``f_m`` (FedMVP: ViT / BERT backbones fine-tuned on the task; here
  any module, e.g. :class:`~fedmm.completion.fedmvp.foundation.FrozenCLIP`'s encoders or core encoders
  pre-trained on a public split). They are held *outside* the module tree, so they are no parameter
  group: never trained, never sent, never averaged — every client has them locally.
* Learnable: a mapping ``h_m = W_m f_m + p_m`` of each extractor *token* (time steps of a
  sequence, patches of an image — :func:`token_extractor`; one token for a pooled extractor such
  as CLIP's) with a position embedding (group ``encoder.<m>``); a joint encoder ``J`` of
  :class:`CrossModalLayer` s, in which each modality's tokens attend to themselves and then to the
  other present modalities' tokens (as the paper's joint encoder: image self-attention plus
  image↔text cross-attention); a shared common encoder ``C(x) = normalize(W x)`` (group ``fusion``
  with ``J``) and a residual classifier ``logits = W_c (W_2 ReLU(W_1 z) + z)`` (group ``head``).
* Outputs: unimodal embeddings ``u_m = C(mean_t h_m)``, the joint embedding
  ``z = C(mean over present m of mean_t J(h)_m)``, logits from ``z``. A missing modality's tokens
  are masked out of every other modality's cross-attention and its ``u_m`` is zero.
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
    CNNEncoder,
    ConfigError,
    Conv1dEncoder,
    ModalitySpec,
    ModelOutput,
    SampleSet,
    bar,
    build_encoder,
    encoder_group,
    module_device,
)

__all__ = [
    "CLIPImageFeatures",
    "CLIPTextFeatures",
    "CrossModalLayer",
    "FedMVPModel",
    "clip_extractors",
    "pretrain_extractors",
    "token_extractor",
]

log = logging.getLogger("fedmm")


class TokenMapping(nn.Module):
    """The learnable mapping of one modality: each extractor token ``(F,)`` to ``(dim,)``, plus a
    learned position embedding per token (group ``encoder.<m>``)."""

    def __init__(self, features: int, dim: int, tokens: int) -> None:
        super().__init__()
        self.proj = nn.Linear(features, dim)
        self.position = nn.Parameter(torch.zeros(tokens, dim))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if f.dim() == 2:  # a pooled feature vector: one token
            f = f.unsqueeze(1)
        return self.proj(f) + self.position[: f.shape[1]]


class CrossModalLayer(nn.Module):
    """One layer of the joint encoder: each modality's tokens attend to themselves, then to the
    other present modalities' tokens (cross-modal attention), then a feed-forward block (pre-norm,
    residual). The weights are shared by the modalities; the modality embedding tells them apart."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_ff = (
            nn.LayerNorm(dim),
            nn.LayerNorm(dim),
            nn.LayerNorm(dim),
        )
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, tokens: list[torch.Tensor], present: torch.Tensor) -> list[torch.Tensor]:
        """``tokens[i]``: ``(B, T_i, dim)`` of modality ``i``; ``present``: ``(B, M)`` bool."""
        out = []
        for i, x in enumerate(tokens):
            h = self.norm_self(x)
            x = x + self.self_attn(h, h, h, need_weights=False)[0]
            others = [j for j in range(len(tokens)) if j != i]
            if others:
                keys = torch.cat([tokens[j] for j in others], dim=1)
                # A key is padding where its modality is absent from the sample.
                pad = torch.cat(
                    [(~present[:, j]).unsqueeze(1).expand(-1, tokens[j].shape[1]) for j in others], dim=1
                )
                alone = pad.all(dim=1)  # no other modality present: nothing to attend to
                h = self.norm_cross(x)
                kv = self.norm_cross(keys)
                cross = self.cross_attn(
                    h, kv, kv, key_padding_mask=pad & ~alone.unsqueeze(1), need_weights=False
                )[0]
                x = x + cross * (~alone).to(x.dtype).view(-1, 1, 1)
            out.append(x + self.ff(self.norm_ff(x)))
        return out


class FedMVPModel(nn.Module):
    """Frozen extractors + learnable mapping, cross-modal joint encoder, common encoder and classifier.

    Args:
        modalities: the data's modality specs.
        extractors: one frozen module per modality, ``(B, *shape) → (B, T_m, F_m)`` (tokens: time
            steps or patches, e.g. :func:`token_extractor`) or ``(B, F_m)`` (one token, e.g. CLIP's
            pooled features).
        feature_dims: ``F_m`` of each extractor.
        num_classes: classes of the head.
        dim: width of the learnable part.
        layers, heads: of the joint encoder (:class:`CrossModalLayer`).
        max_tokens: the most tokens an extractor may give (size of the position embeddings).
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
        max_tokens: int = 16,
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
        self.encoders = nn.ModuleDict(
            {m: TokenMapping(int(feature_dims[m]), dim, max_tokens) for m in self.modalities}
        )
        self.fusion = nn.ModuleDict(
            {
                "joint": nn.ModuleList(CrossModalLayer(dim, heads) for _ in range(layers)),
                "norm": nn.LayerNorm(dim),
                "common": nn.Linear(dim, dim),
            }
        )
        self.modality_embedding = nn.Parameter(torch.zeros(len(self.modalities), dim))
        self.head = nn.ModuleDict(
            {"fc1": nn.Linear(dim, dim), "fc2": nn.Linear(dim, dim), "out": nn.Linear(dim, num_classes)}
        )
        self.dim = dim
        self.max_tokens = max_tokens

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
        # A batch built on the host (a technique's own pass over client data) meets the weights.
        batch = batch.to(module_device(self))
        present = batch.present_for(active)
        n = len(batch)
        tokens: list[torch.Tensor] = []
        pooled: dict[str, torch.Tensor] = {}
        for i, m in enumerate(self.modalities):
            if batch.has_any(i, present[:, i]):
                with torch.no_grad():
                    f = self.frozen[m](batch.features[m])
                if f.dim() == 3 and f.shape[1] > self.max_tokens:
                    raise ConfigError(
                        f"the {m!r} extractor gives {f.shape[1]} tokens, more than "
                        f"max_tokens = {self.max_tokens}"
                    )
                h = self.encoders[m](f)
                pooled[m] = h.mean(dim=1)
            else:  # nobody in the batch has it: one placeholder token, masked everywhere
                h = present.new_zeros((n, 1, self.dim), dtype=torch.float32)
            tokens.append(h + self.modality_embedding[i])
        for layer in self.fusion["joint"].children():
            tokens = layer(tokens, present)
        w = present.to(tokens[0].dtype)
        per_modality = torch.stack([self.fusion["norm"](t).mean(dim=1) for t in tokens], dim=1)  # (B, M, dim)
        z = self.common(
            (per_modality * w.unsqueeze(-1)).sum(dim=1) / w.sum(dim=1, keepdim=True).clamp_min(1.0)
        )
        embeddings = {
            m: self.common(pooled[m]) * present[:, i].unsqueeze(1).to(z.dtype)
            if m in pooled
            else present.new_zeros((n, self.dim), dtype=torch.float32)
            for i, m in enumerate(self.modalities)
        }
        return ModelOutput(self.classify(z), embeddings, z, present)


class _TokenTrunk(nn.Module):
    """A core conv encoder's layers before its global pooling, then pooled to ``tokens`` positions:
    ``(B, T, C)`` sequences → ``(B, tokens, channels)``; images → ``(B, side², channels)``."""

    def __init__(self, encoder: nn.Module, tokens: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokens = tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        assert isinstance(enc, Conv1dEncoder | CNNEncoder)
        if isinstance(enc, Conv1dEncoder):
            h = enc.net[:4](x.transpose(1, 2))  # (B, C, T')
            return F.adaptive_avg_pool1d(h, self.tokens).transpose(1, 2)
        side = max(1, round(self.tokens**0.5))
        h = enc.net[:4](x)  # (B, C, H, W)
        return F.adaptive_avg_pool2d(h, side).flatten(2).transpose(1, 2)


def token_extractor(encoder: nn.Module, tokens: int = 8) -> tuple[nn.Module, int]:
    """A frozen extractor giving *tokens* (time steps or patches) from a core encoder, with its
    token width: a 1-D conv net's feature map pooled to ``tokens`` time steps, a CNN's to a
    ``√tokens x √tokens`` grid of patches. Other encoders (MLP, LSTM, ...) have no positions to
    keep: their pooled output is one token."""
    if isinstance(encoder, Conv1dEncoder | CNNEncoder):
        conv = encoder.net[2]
        assert isinstance(conv, nn.Conv1d | nn.Conv2d)
        channels = int(conv.out_channels)
        return _TokenTrunk(encoder, tokens).eval(), channels
    return encoder, int(encoder.out_dim)  # type: ignore[arg-type]


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
            order = idx[torch.randperm(idx.size, generator=gen, device="cpu").numpy()]
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
