"""FedMultimodal's human-activity model: conv + GRU per sensor, attention over all time steps.

Reference: Feng et al., "FedMultimodal: A Benchmark for Multimodal Federated Learning", KDD 2023
(the ``HARClassifier`` with ``fuse_base`` attention that their UCI-HAR table reports). This is
our implementation from reading the paper and their model code, not a copy:

* **Encoder per modality** (:class:`ConvGRUEncoder`): three blocks of Conv1d (kernel 5, same
  padding) → ReLU → MaxPool(2) → Dropout, channels ``in → 32 → 64 → 128``, then a one-layer GRU
  of width 128 over the 16 remaining steps of a 128-step window. Every step's output is kept:
  the encoder emits its token sequence, flattened to ``(B, 16 · 128)`` so that it travels
  through :class:`~fedmm.core.models.model.MultimodalModel` like any embedding (an absent
  modality's row is zero).
* **Fusion** (:class:`TokenAttentionFusion`): the modalities' tokens side by side (32 for two
  sensors); per token a score ``W2 tanh(W1 h + b1) + b2`` with 6 heads; each head's softmax runs
  jointly over the tokens of every *present* modality (a missing modality's tokens are masked,
  as FedMultimodal masks them by a zero length); each head pools the tokens by its weights and
  the 6 pooled vectors are concatenated (768).
* **Head**: Linear(768, 64) → ReLU → Dropout → Linear(64, classes).

With two 3-axis sensors, 128-step windows and 6 classes it has 420 684 parameters, as theirs.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from fedmm.core.data.types import ModalitySpec
from fedmm.core.errors import ConfigError
from fedmm.core.models.model import MultimodalModel


class ConvGRUEncoder(nn.Module):
    """Conv blocks then a GRU over a ``(T, C)`` sequence; emits every GRU step, flattened.

    ``tokens`` is ``(steps, hidden)``: the shape :class:`TokenAttentionFusion` unflattens.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        hidden: int = 128,
        filters: int = 32,
        blocks: int = 3,
        dropout: float = 0.1,
        kernel: int = 5,
    ) -> None:
        super().__init__()
        if len(in_shape) != 2:
            raise ConfigError(f"ConvGRUEncoder needs a sequence shape (T, C), got {in_shape}")
        steps, channels = in_shape
        if steps % (2**blocks):
            raise ConfigError(
                f"ConvGRUEncoder: {steps} steps do not halve {blocks} times; use T divisible by {2**blocks}"
            )
        widths = [channels] + [filters * 2**i for i in range(blocks - 1)] + [hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [
                nn.Conv1d(a, b, kernel, padding=kernel // 2),
                nn.ReLU(),
                nn.MaxPool1d(2),
                nn.Dropout(dropout),
            ]
        self.conv = nn.Sequential(*layers)
        self.rnn = nn.GRU(hidden, hidden, batch_first=True)
        self.tokens = (steps // 2**blocks, hidden)
        self.out_dim = self.tokens[0] * self.tokens[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, T', hidden)
        out, _ = self.rnn(h)
        return out.flatten(1)


class TokenAttentionFusion(nn.Module):
    """Multi-head attention pooling over the tokens of every present modality (see module doc)."""

    def __init__(self, tokens: Sequence[tuple[int, int]], heads: int = 6, attention_dim: int = 512) -> None:
        super().__init__()
        widths = {d for _, d in tokens}
        if len(widths) != 1:
            raise ConfigError(
                f"TokenAttentionFusion needs one token width for all modalities, got {sorted(widths)}"
            )
        self.tokens = tuple((int(n), int(d)) for n, d in tokens)
        width = widths.pop()
        self.score = nn.Sequential(
            nn.Linear(width, attention_dim), nn.Tanh(), nn.Linear(attention_dim, heads)
        )
        self.out_dim = heads * width

    def forward(self, embeddings: Sequence[torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        seqs = [e.view(e.shape[0], n, d) for e, (n, d) in zip(embeddings, self.tokens, strict=True)]
        h = torch.cat(seqs, dim=1)  # (B, sum n, d)
        # A token counts where its modality is present; a row with none attends to all (zeros).
        valid = torch.cat(
            [present[:, i : i + 1].expand(-1, n) for i, (n, _) in enumerate(self.tokens)], dim=1
        )
        valid = valid | ~valid.any(dim=1, keepdim=True)
        scores = self.score(h).masked_fill(~valid.unsqueeze(-1), float("-inf"))  # (B, tokens, heads)
        weights = torch.softmax(scores, dim=1)
        pooled = torch.einsum("bth,btd->bhd", weights, h)
        return pooled.flatten(1)


def fedmultimodal_har(
    modalities: Sequence[ModalitySpec],
    num_classes: int,
    *,
    hidden: int = 128,
    filters: int = 32,
    heads: int = 6,
    attention_dim: int = 512,
    head_hidden: int = 64,
    dropout: float = 0.1,
) -> MultimodalModel:
    """FedMultimodal's HAR model for sequence modalities ``(T, C)`` (see the module docstring).

    >>> model = fedmultimodal_har(data.modalities, data.num_classes)   # 420 684 parameters on UCI-HAR
    """
    for m in modalities:
        if m.kind != "sequence" or len(m.shape) != 2:
            raise ConfigError(
                "fedmultimodal_har takes sequence modalities of shape (T, C); "
                f"{m.name!r} is {m.kind} {m.shape}"
            )
    encoders = {m.name: ConvGRUEncoder(m.shape, hidden, filters, dropout=dropout) for m in modalities}
    fusion = TokenAttentionFusion([encoders[m.name].tokens for m in modalities], heads, attention_dim)
    head = nn.Sequential(
        nn.Linear(fusion.out_dim, head_hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(head_hidden, num_classes),
    )
    return MultimodalModel(modalities, encoders, fusion, head)


__all__ = ["ConvGRUEncoder", "TokenAttentionFusion", "fedmultimodal_har"]
