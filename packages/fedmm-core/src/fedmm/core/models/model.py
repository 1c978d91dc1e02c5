"""The multimodal model: per-modality encoders, a fusion module and a head, addressed by parameter groups.

Parameter groups — ``encoder.<modality>[.<part>]``, ``fusion``, ``head`` — are the unit of
download, training, freezing, upload and accounting. A missing modality (per sample, per client,
or switched off by a train plan) contributes a zero embedding and is masked out of fusion; an
encoder whose modality is absent from the whole batch is not run at all (no FLOPs spent).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, cast, runtime_checkable

import torch
from torch import nn

from fedmm.core.arrays import model_groups
from fedmm.core.data.types import Batch, ModalitySpec
from fedmm.core.devices import module_device
from fedmm.core.errors import ConfigError
from fedmm.core.groups import encoder_group
from fedmm.core.models.encoders import build_encoder

FUSIONS = ("concat", "attention")


def out_dim(module: nn.Module) -> int:
    """The embedding width an encoder declares in its ``out_dim`` attribute."""
    dim = getattr(module, "out_dim", None)
    if not isinstance(dim, int):
        raise ConfigError(f"{type(module).__name__} must declare its embedding width as an int `out_dim`")
    return dim


class ConcatFusion(nn.Module):
    """Concatenate the (masked) embeddings and the presence mask, then one Linear+ReLU."""

    def __init__(self, dims: Sequence[int], out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(sum(dims) + len(dims), out_dim)
        self.out_dim = out_dim

    def forward(self, embeddings: Sequence[torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.proj(torch.cat([*embeddings, present.to(embeddings[0].dtype)], dim=1)))


class AttentionFusion(nn.Module):
    """Attention over modality tokens: each embedding is projected to a token; missing ones are
    masked out of the attention; the output is the presence-weighted mean of attended tokens."""

    def __init__(self, dims: Sequence[int], out_dim: int, heads: int = 4) -> None:
        super().__init__()
        if out_dim % heads:
            heads = 1
        self.proj = nn.ModuleList(nn.Linear(d, out_dim) for d in dims)
        self.modality = nn.Parameter(torch.zeros(len(dims), out_dim))
        self.attn = nn.MultiheadAttention(out_dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(out_dim)
        self.out_dim = out_dim

    def forward(self, embeddings: Sequence[torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        tokens = (
            torch.stack([p(e) for p, e in zip(self.proj, embeddings, strict=True)], dim=1) + self.modality
        )
        # A row with nothing present would make attention NaN: let it attend to all (its tokens are 0).
        pad = ~present
        pad = pad & ~pad.all(dim=1, keepdim=True)
        attended, _ = self.attn(tokens, tokens, tokens, key_padding_mask=pad, need_weights=False)
        h = self.norm(tokens + attended)
        w = present.to(h.dtype).unsqueeze(-1)
        return (h * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


@dataclass
class ModelOutput:
    """What a forward pass gives techniques: logits, per-modality embeddings (zero where absent),
    the fused representation and the presence mask actually used."""

    logits: torch.Tensor
    embeddings: dict[str, torch.Tensor]
    fused: torch.Tensor
    present: torch.Tensor


@runtime_checkable
class EmbeddingClassifier(Protocol):
    """A model whose classifier can be applied to any embedding of the fused width: ``classify(z)``
    → logits. A technique that classifies unimodal embeddings through the shared head (FedMVP's
    representation-alignment loss) relies on this, checked with ``isinstance``."""

    def classify(self, z: torch.Tensor) -> torch.Tensor: ...


class MultimodalModel(nn.Module):
    """Encoders (one per modality) → fusion → head.

    ``forward(batch, active=None)``: ``active`` restricts the modalities used (the rest are treated
    as missing), which is how a train plan trains one modality combination at a time.
    """

    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
        encoders: Mapping[str, nn.Module],
        fusion: nn.Module,
        head: nn.Module,
    ) -> None:
        super().__init__()
        self.modality_specs = tuple(modalities)
        self.modalities = tuple(m.name for m in modalities)
        if set(encoders) != set(self.modalities):
            raise ConfigError(f"encoders {sorted(encoders)} do not match modalities {list(self.modalities)}")
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        self.fusion = fusion
        self.head = head
        self._groups: dict[str, tuple[str, ...]] | None = None

    def embed(
        self, batch: Batch, active: Iterable[str] | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        present = batch.present_for(active)
        keep = None if active is None else set(active)
        embeddings: dict[str, torch.Tensor] = {}
        for i, m in enumerate(self.modalities):
            encoder = self.encoders[m]
            mask = present[:, i]
            if (keep is None or m in keep) and batch.has_any(i, mask):
                z = encoder(batch.features[m])
                embeddings[m] = z * mask.unsqueeze(1).to(z.dtype)
            else:
                embeddings[m] = present.new_zeros((len(batch), out_dim(encoder)), dtype=torch.float32)
        return embeddings, present

    def forward(self, batch: Batch, active: Iterable[str] | None = None) -> ModelOutput:
        # A batch built on the host (a technique's own pass over client data) meets the weights.
        batch = batch.to(module_device(self))
        embeddings, present = self.embed(batch, active)
        fused = self.fusion([embeddings[m] for m in self.modalities], present)
        return ModelOutput(self.head(fused), embeddings, fused, present)

    # -- parameter groups --------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, tuple[str, ...]]:
        """Group name → state_dict keys, in a stable order. Every key is in exactly one group."""
        if self._groups is None:
            groups: dict[str, list[str]] = {}
            for key in self.state_dict():
                groups.setdefault(self.group_of(key), []).append(key)
            self._groups = {g: tuple(keys) for g, keys in groups.items()}
        return self._groups

    def group_of(self, key: str) -> str:
        top, _, rest = key.partition(".")
        if top == "encoders":
            modality, _, inner = rest.partition(".")
            part_of = getattr(self.encoders[modality], "part_of_parameter", None)
            return encoder_group(modality, None if part_of is None else part_of(inner))
        if top in ("fusion", "head"):
            return top
        raise KeyError(f"parameter {key!r} is outside encoders/fusion/head")


class LayeredEncoder(Protocol):
    """An encoder whose layers are separate parameter groups and whose running depth can be set."""

    num_layers: int
    depth: int

    def layer_part(self, index: int) -> str: ...


def layered_encoders(model: nn.Module) -> dict[str, LayeredEncoder]:
    """The model's *layered* encoders by modality: those with ``num_layers``, a settable ``depth``
    (how many of the layers run) and ``layer_part(i)`` (the group suffix of layer ``i``)."""
    encoders = getattr(model, "encoders", None)
    if not isinstance(encoders, nn.ModuleDict):
        return {}
    return {
        m: cast(LayeredEncoder, enc)
        for m, enc in encoders.items()
        if isinstance(getattr(enc, "num_layers", None), int) and hasattr(enc, "layer_part")
    }


def set_depth(model: nn.Module, depth: Mapping[str, int] | None = None) -> dict[str, int]:
    """Run only the first ``depth[m]`` layers of each layered encoder ``m``; the others run in full.

    ``depth`` names modalities with layered encoders (e.g. ``encoder="transformer"``); ``None`` or
    ``{}`` restores full depth everywhere. Returns the depth now in force for every layered encoder.

    Depth is a general mechanism, not one method's: a train plan carries it as ``TrainPlan.depth``,
    so any technique can give a client a shallower model — to grow encoders stage by stage (the
    layer-wise methods LW-FedMML and Prog-FedMML of fedmm-layerwise, the one user today), or to
    spare weak clients the deep layers. It is in core because what it changes is core's work: the
    layers beyond the depth are not sent, trained, uploaded or counted (:func:`absent_groups`),
    and the server evaluates at the deepest depth of the round's plans (:func:`deepest`).
    """
    layered = layered_encoders(model)
    depth = dict(depth or {})
    for m, d in depth.items():
        if m not in layered:
            raise ConfigError(
                f"depth given for {m!r}, which has no layered encoder; layered encoders: "
                f"{sorted(layered) or 'none (use encoder kind transformer)'}"
            )
        n = int(layered[m].num_layers)
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= n:
            raise ConfigError(f"depth of {m!r} must be an integer in 0..{n}, got {d!r}")
    now: dict[str, int] = {}
    for m, enc in layered.items():
        enc.depth = int(depth.get(m, enc.num_layers))
        now[m] = int(enc.depth)
    return now


def deepest(model: nn.Module, depths: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Per layered encoder, the largest of several plans' depths (a plan without one = full depth)."""
    full = {m: int(enc.num_layers) for m, enc in layered_encoders(model).items()}
    out: dict[str, int] = {}
    for depth in depths:
        for m, n in full.items():
            out[m] = max(out.get(m, 0), int(depth.get(m, n)))
    return {m: d for m, d in out.items() if d != full[m]}


def absent_groups(model: nn.Module, depth: Mapping[str, int] | None = None) -> tuple[str, ...]:
    """The layer groups that do not run at ``depth``: ``encoder.<m>.<part of layer i>`` for ``i ≥ depth[m]``.

    At a reduced depth those layers do not exist for the client: they are not sent, trained or
    uploaded (nor counted in the ledger).
    """
    groups = set(model_groups(model))
    out: list[str] = []
    for m, d in (depth or {}).items():
        enc = layered_encoders(model).get(m)
        if enc is None:
            continue
        for i in range(int(d), int(enc.num_layers)):
            g = encoder_group(m, enc.layer_part(i))
            if g in groups:
                out.append(g)
    return tuple(out)


def late_fusion(
    modalities: Sequence[ModalitySpec],
    num_classes: int,
    *,
    fusion: str = "concat",
    embed_dim: int = 64,
    hidden: int = 64,
    encoders: Mapping[str, str] | None = None,
    encoder_options: Mapping[str, Mapping[str, object]] | None = None,
) -> MultimodalModel:
    """The standard late-fusion model: one encoder per modality, ``fusion`` (concat|attention), MLP head.

    ``encoders`` maps a modality to an encoder kind (``mlp``, ``cnn``, ``conv1d``, ``lstm``,
    ``transformer``; default ``auto`` by modality kind).
    """
    encoders = dict(encoders or {})
    names = [m.name for m in modalities]
    for what, given in (("encoders", encoders), ("encoder_options", encoder_options or {})):
        unknown = set(given) - set(names)
        if unknown:
            raise ConfigError(
                f"{what} given for unknown modalities {sorted(unknown)}; the data's modalities are {names}"
            )
    built = {
        m.name: build_encoder(
            m, encoders.get(m.name, "auto"), embed_dim, **dict((encoder_options or {}).get(m.name, {}))
        )
        for m in modalities
    }
    dims = [out_dim(built[m.name]) for m in modalities]
    if fusion == "concat":
        fuse: nn.Module = ConcatFusion(dims, hidden)
    elif fusion == "attention":
        fuse = AttentionFusion(dims, hidden)
    else:
        raise ConfigError(f"unknown fusion {fusion!r}; choose one of {FUSIONS}")
    head = nn.Linear(hidden, num_classes)
    return MultimodalModel(modalities, built, fuse, head)
