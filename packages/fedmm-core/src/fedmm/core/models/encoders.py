"""Per-modality encoders: each maps one modality's batch ``(B, *shape)`` to embeddings ``(B, d)``.

An encoder whose layers are separate units of training (for layer-wise methods) implements
``part_of_parameter(name) -> str``; each part becomes the parameter group
``encoder.<modality>.<part>``. Other encoders are one group, ``encoder.<modality>``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedmm.core.arguments import did_you_mean, integer, optional_integer
from fedmm.core.data.types import ModalitySpec
from fedmm.core.errors import ArgumentError, ConfigError


class MLPEncoder(nn.Module):
    """Flatten, then ``layers`` Linear+ReLU blocks."""

    def __init__(
        self, in_shape: tuple[int, ...], embed_dim: int = 64, hidden: int = 128, layers: int = 2
    ) -> None:
        super().__init__()
        dims = [math.prod(in_shape)] + [hidden] * (layers - 1) + [embed_dim]
        blocks: list[nn.Module] = [nn.Flatten()]
        for a, b in itertools.pairwise(dims):
            blocks += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*blocks)
        self.out_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MeanPool(nn.Module):
    """Average pooling to ``size`` cells per spatial axis: ``nn.AdaptiveAvgPool{1,2}d(size)``'s
    output, as a reshape and a mean where each axis divides evenly (torch.func has a batching
    rule for these, none for adaptive pooling: batched clients would loop per client)."""

    def __init__(self, size: int, dims: int) -> None:
        super().__init__()
        self.size = size
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[-self.dims :]
        if any(n % self.size for n in spatial):
            pool = F.adaptive_avg_pool1d if self.dims == 1 else F.adaptive_avg_pool2d
            return pool(x, self.size)
        shape = list(x.shape[: -self.dims])
        for n in spatial:
            shape += [self.size, n // self.size]
        axes = tuple(range(len(x.shape) - self.dims + 1, len(shape), 2))
        return x.reshape(shape).mean(dim=axes)


class CNNEncoder(nn.Module):
    """A small 2-D CNN for images ``(C, H, W)``: two conv blocks, global average pool, linear."""

    def __init__(self, in_shape: tuple[int, ...], embed_dim: int = 64, channels: int = 32) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ConfigError(f"CNN encoder needs image shape (C, H, W), got {in_shape}")
        c = in_shape[0]
        self.net = nn.Sequential(
            nn.Conv2d(c, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels * 2, 3, padding=1),
            nn.ReLU(),
            MeanPool(2, dims=2),
            nn.Flatten(),
            nn.Linear(channels * 2 * 4, embed_dim),
            nn.ReLU(),
        )
        self.out_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Conv1dEncoder(nn.Module):
    """1-D convolutions over time for sequences ``(T, C)``, then global average pool."""

    def __init__(self, in_shape: tuple[int, ...], embed_dim: int = 64, channels: int = 32) -> None:
        super().__init__()
        if len(in_shape) != 2:
            raise ConfigError(f"1-D conv encoder needs sequence shape (time, channels), got {in_shape}")
        c = in_shape[1]
        self.net = nn.Sequential(
            nn.Conv1d(c, channels, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(channels, channels * 2, 5, padding=2, stride=2),
            nn.ReLU(),
            MeanPool(1, dims=1),
            nn.Flatten(),
            nn.Linear(channels * 2, embed_dim),
            nn.ReLU(),
        )
        self.out_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(1, 2))


class LSTMEncoder(nn.Module):
    """An LSTM over sequences ``(T, C)``; the embedding is the last hidden state, projected.

    An image ``(C, H, W)`` is read row by row: ``H`` steps of ``C * W`` values (as the
    row-sequential MNIST LSTMs), so one recurrent family can encode every modality of a
    per-modality model (FedMFS's paper uses an LSTM for each)."""

    def __init__(self, in_shape: tuple[int, ...], embed_dim: int = 64, hidden: int = 64) -> None:
        super().__init__()
        if len(in_shape) not in (2, 3):
            raise ConfigError(
                "LSTM encoder needs a sequence (time, channels) or an image (channels, height, width), "
                f"got {in_shape}"
            )
        features = in_shape[1] if len(in_shape) == 2 else in_shape[0] * in_shape[2]
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.proj = nn.Linear(hidden, embed_dim)
        self.out_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # (B, C, H, W) -> (B, H, C * W): rows are the time steps
            x = x.permute(0, 2, 1, 3).flatten(2)
        _, (h, _) = self.lstm(x)
        return torch.relu(self.proj(h[-1]))


class TransformerStackEncoder(nn.Module):
    """A stack of transformer layers, each its own parameter group (for layer-wise training).

    Input: sequences ``(T, C)`` (projected per step), vectors/images (split into ``tokens``
    chunks), or token ids ``(L,)`` (embedded). Output: mean-pooled, normalised tokens, then an
    optional projection head (``projection`` = its width: Linear–GELU–Linear, as CLIP-style
    contrastive models put on top of each tower).
    Parts: ``embed``, ``0`` .. ``layers-1``, ``norm`` and ``proj`` (with a projection).

    It is a *layered* encoder (see :func:`~fedmm.core.models.model.set_depth`): ``depth`` of its
    ``num_layers`` layers run, the rest are skipped, so layer-wise methods can grow it.
    """

    def __init__(
        self,
        spec: ModalitySpec,
        embed_dim: int = 64,
        layers: int = 4,
        heads: int = 4,
        ff_dim: int | None = None,
        vocab_size: int = 30522,
        tokens: int = 8,
        max_len: int = 512,
        projection: int | None = None,
    ) -> None:
        super().__init__()
        if projection is not None and (isinstance(projection, bool) or projection < 1):
            raise ConfigError(
                f"modality {spec.name!r}: projection must be a positive width, got {projection!r}"
            )
        self.kind = spec.kind
        self.shape = spec.shape
        if spec.kind == "tokens":
            self.embed: nn.Module = nn.Embedding(vocab_size, embed_dim)
            seq_len = spec.shape[0]
        elif spec.kind == "sequence":
            self.embed = nn.Linear(spec.shape[1], embed_dim)
            seq_len = spec.shape[0]
        else:
            size = math.prod(spec.shape)
            if size % tokens:
                raise ConfigError(
                    f"modality {spec.name!r}: {size} features do not split into {tokens} tokens"
                )
            self.tokens = tokens
            self.embed = nn.Linear(size // tokens, embed_dim)
            seq_len = tokens
        if seq_len > max_len:
            raise ConfigError(f"modality {spec.name!r}: sequence length {seq_len} exceeds max_len {max_len}")
        self.position = nn.Parameter(torch.zeros(1, seq_len, embed_dim))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                embed_dim, heads, ff_dim or 2 * embed_dim, dropout=0.0, batch_first=True, norm_first=True
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.proj: nn.Module | None = None
        if projection is not None:
            self.proj = nn.Sequential(
                nn.Linear(embed_dim, projection), nn.GELU(), nn.Linear(projection, projection)
            )
        self.out_dim = projection or embed_dim
        self.num_layers = layers
        self.depth = layers  # how many layers run (layer-wise methods grow this)

    def part_of_parameter(self, name: str) -> str:
        if name == "position" or name.startswith("embed."):
            return "embed"
        if name.startswith("layers."):
            return name.split(".")[1]
        if name.startswith("norm."):
            return "norm"
        if name.startswith("proj."):
            return "proj"
        raise KeyError(name)

    def layer_part(self, index: int) -> str:
        """The part (parameter-group suffix) holding layer ``index``."""
        return str(index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "tokens":
            h = self.embed(x.long())
        elif self.kind == "sequence":
            h = self.embed(x)
        else:
            h = self.embed(x.reshape(x.shape[0], self.tokens, -1))
        h = h + self.position
        for layer in self.layers[: self.depth]:
            h = layer(h)
        z = self.norm(h.mean(dim=1))
        return z if self.proj is None else self.proj(z)


ENCODERS = ("auto", "mlp", "cnn", "conv1d", "lstm", "transformer")

# The options (``[model].encoder_options.<modality>``) each encoder kind takes; every one is a
# positive integer, those marked optional may also be omitted (None).
ENCODER_OPTIONS: dict[str, dict[str, bool]] = {
    "mlp": {"hidden": False, "layers": False},
    "cnn": {"channels": False},
    "conv1d": {"channels": False},
    "lstm": {"hidden": False},
    "transformer": {
        "layers": False,
        "heads": False,
        "ff_dim": True,
        "vocab_size": False,
        "tokens": False,
        "max_len": False,
        "projection": True,
    },
}
_TRANSFORMER_HEADS = 4  # TransformerStackEncoder's default


def _auto_kind(spec: ModalitySpec) -> str:
    return {"image": "cnn", "sequence": "conv1d", "tokens": "transformer"}.get(spec.kind, "mlp")


def check_encoder_options(
    modality: str, kind: str, embed_dim: int, options: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The options of ``kind``'s encoder for ``modality``, checked: known names, positive integers,
    and a transformer's ``heads`` dividing ``embed_dim``. ``kind="auto"`` (not yet resolved
    against the data) accepts the options of any kind. Raises :class:`ArgumentError`."""
    owner = f"encoder_options of modality {modality!r}" + ("" if kind == "auto" else f" ({kind} encoder)")
    if kind != "auto" and kind not in ENCODER_OPTIONS:
        raise ConfigError(f"unknown encoder {kind!r} for modality {modality!r}; choose one of {ENCODERS}")
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"{owner}: must be a table of options, got {options!r}")
    known: dict[str, bool] = (
        {k: v for spec in ENCODER_OPTIONS.values() for k, v in spec.items()}
        if kind == "auto"
        else ENCODER_OPTIONS[kind]
    )
    for name, value in options.items():
        if name not in known:
            hint = did_you_mean(str(name), known)
            if kind == "auto":
                raise ArgumentError(owner, str(name), f"is not an option of any encoder{hint}")
            listed = ", ".join(sorted(known))
            raise ArgumentError(
                owner, str(name), f"is not an option of the {kind} encoder{hint}; its options: {listed}"
            )
        if known[name]:
            optional_integer(owner, name, value, low=1)
        else:
            integer(owner, name, value, low=1)
    if kind == "transformer":
        heads = options.get("heads", _TRANSFORMER_HEADS)
        if embed_dim % heads:
            fits = [h for h in range(1, min(embed_dim, 64) + 1) if embed_dim % h == 0]
            given = "" if "heads" in options else " (the default)"
            raise ArgumentError(
                owner,
                "heads",
                f"= {heads}{given} must divide embed_dim = {embed_dim}: set heads to one of "
                f"{', '.join(map(str, fits))}, or change [model].embed_dim",
            )
    return dict(options)


def build_encoder(
    spec: ModalitySpec, kind: str = "auto", embed_dim: int = 64, **options: object
) -> nn.Module:
    """The encoder ``kind`` for ``spec``; ``auto`` picks by modality kind (image→CNN, sequence→1-D conv).

    ``options`` are checked first (:func:`check_encoder_options`): a misspelt name, a non-integer
    size or heads that do not divide ``embed_dim`` is one :class:`ArgumentError` naming it.
    """
    if kind == "auto":
        kind = _auto_kind(spec)
    integer(f"modality {spec.name!r}", "embed_dim", embed_dim, low=1)
    check_encoder_options(spec.name, kind, embed_dim, options)
    if kind == "mlp":
        return MLPEncoder(spec.shape, embed_dim, **options)  # type: ignore[arg-type]
    if kind == "cnn":
        return CNNEncoder(spec.shape, embed_dim, **options)  # type: ignore[arg-type]
    if kind == "conv1d":
        return Conv1dEncoder(spec.shape, embed_dim, **options)  # type: ignore[arg-type]
    if kind == "lstm":
        return LSTMEncoder(spec.shape, embed_dim, **options)  # type: ignore[arg-type]
    if kind == "transformer":
        return TransformerStackEncoder(spec, embed_dim, **options)  # type: ignore[arg-type]
    raise ConfigError(f"unknown encoder {kind!r} for modality {spec.name!r}; choose one of {ENCODERS}")
