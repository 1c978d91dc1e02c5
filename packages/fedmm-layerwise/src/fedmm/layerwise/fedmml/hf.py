"""A Hugging Face transformers text encoder as a *layered* encoder for layer-wise training.

LW-FedMML and Prog-FedMML grow a tower one transformer layer per stage and freeze the layers
trained before. That needs two things a plain ``AutoModel`` does not give: every layer must be its
own parameter group (so it can be frozen, sent or withheld on its own) and the number of layers
that run must be settable. :class:`HFTextEncoder` wraps a BERT-style model
(``BertModel``, ``RobertaModel``, ``DistilBertModel``) and follows fedmm-core's layered-encoder
protocol (see :class:`~fedmm.core.models.encoders.TransformerStackEncoder`): ``num_layers``, a
settable ``depth``, ``layer_part(i)`` and ``part_of_parameter(name)`` with the parts ``embed``,
``0`` .. ``num_layers-1``, ``norm`` (anything else of the model) and ``proj`` (the optional
projection head). Its forward runs the embeddings and the first ``depth`` layers itself, then
pools (CLS token or masked mean).

transformers is optional (``pip install "fedmm-layerwise[transformers]"``) and imported only when
a model is built, so importing this module does not need it. Weights are only ever loaded from a
local folder (``save_pretrained``), never from the hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from fedmm.core.api import ConfigError

# model_type → dotted path (inside the model) of its list of transformer layers.
_LAYERS = {"bert": "encoder.layer", "roberta": "encoder.layer", "distilbert": "transformer.layer"}
_WITH_POOLER = ("bert", "roberta")  # built with add_pooling_layer=False: our pooling replaces it
_INSTALL = 'transformers is not installed; install it with: pip install "fedmm-layerwise[transformers]"'


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise ConfigError(_INSTALL) from e
    return transformers


def _bidirectional_mask() -> Any:
    try:
        from transformers.masking_utils import create_bidirectional_mask
    except ImportError as e:
        raise ConfigError(
            "HFTextEncoder needs a transformers version with transformers.masking_utils."
            f"create_bidirectional_mask (5.x); {_INSTALL}"
        ) from e
    return create_bidirectional_mask


def _model_kwargs(model_type: str) -> dict[str, Any]:
    return {"add_pooling_layer": False} if model_type in _WITH_POOLER else {}


class HFTextEncoder(nn.Module):
    """Token ids ``(B, L)`` → pooled text embeddings ``(B, out_dim)`` from a transformers encoder.

    ``model`` is a bare encoder (``BertModel``, ``RobertaModel``, ``DistilBertModel``), e.g. from
    :meth:`from_config` or :meth:`from_pretrained`. Its pooler, if any, is dropped (it is unused:
    ``pooling`` is ``"cls"`` = first token or ``"mean"`` = mean over non-pad tokens). Tokens equal
    to ``pad_token_id`` (default: the config's, else 0) are masked out of attention.
    ``projection`` adds a Linear–GELU–Linear head of that width.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        pooling: Literal["cls", "mean"] = "cls",
        projection: int | None = None,
        pad_token_id: int | None = None,
    ) -> None:
        super().__init__()
        config: Any = getattr(model, "config", None)
        model_type = getattr(config, "model_type", None)
        if model_type not in _LAYERS or not hasattr(model, "embeddings"):
            raise ConfigError(
                f"HFTextEncoder does not support {type(model).__name__} (model_type {model_type!r}); "
                f"supported: BertModel, RobertaModel, DistilBertModel (model_type {sorted(_LAYERS)})"
            )
        if pooling not in ("cls", "mean"):
            raise ConfigError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        if projection is not None and (isinstance(projection, bool) or projection < 1):
            raise ConfigError(f"projection must be a positive width, got {projection!r}")
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # type: ignore[assignment]
        layers: Any = model
        for attr in _LAYERS[model_type].split("."):
            layers = getattr(layers, attr)
        self.model = model
        self.config: Any = config
        self._layers_prefix = f"model.{_LAYERS[model_type]}."
        self.pooling = pooling
        if pad_token_id is None:
            pad_token_id = getattr(config, "pad_token_id", None)
        self.pad_token_id = 0 if pad_token_id is None else int(pad_token_id)
        hidden = int(config.hidden_size)  # DistilBertConfig maps hidden_size to dim
        self.proj: nn.Module | None = None
        if projection is not None:
            self.proj = nn.Sequential(
                nn.Linear(hidden, projection), nn.GELU(), nn.Linear(projection, projection)
            )
        self.layers: list[nn.Module] = list(layers)  # a plain list: the modules stay under ``model``
        self.num_layers = len(self.layers)
        self.depth = self.num_layers  # how many layers run (layer-wise methods grow this)
        self.out_dim = projection or hidden

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Any, **kw: Any) -> HFTextEncoder:
        """A randomly initialised encoder from a ``PretrainedConfig`` or a dict with ``model_type``."""
        tf = _transformers()
        if isinstance(config, dict):
            rest = dict(config)
            model_type = rest.pop("model_type", None)
            if model_type not in _LAYERS:
                raise ConfigError(
                    f"transformers config needs model_type, one of {sorted(_LAYERS)}; got {model_type!r}"
                )
            try:
                config = tf.AutoConfig.for_model(model_type, **rest)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"invalid {model_type} config {rest}: {e}") from e
        model_type = getattr(config, "model_type", None)
        if model_type not in _LAYERS:
            raise ConfigError(f"HFTextEncoder supports model_type {sorted(_LAYERS)}, got {model_type!r}")
        return cls(tf.AutoModel.from_config(config, **_model_kwargs(model_type)), **kw)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kw: Any) -> HFTextEncoder:
        """Load from a local folder written by ``save_pretrained`` (never from the hub)."""
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"{folder} is not a transformers model folder (no config.json there); point at a "
                "local folder saved with save_pretrained (models are never downloaded)"
            )
        tf = _transformers()
        config = tf.AutoConfig.from_pretrained(folder, local_files_only=True)
        model_type = getattr(config, "model_type", None)
        if model_type not in _LAYERS:
            raise ConfigError(
                f"{folder}: model_type {model_type!r} is not supported; supported: {sorted(_LAYERS)}"
            )
        model = tf.AutoModel.from_pretrained(
            folder, config=config, local_files_only=True, **_model_kwargs(model_type)
        )
        return cls(model, **kw)

    # -- layered-encoder protocol -------------------------------------------------------------
    def part_of_parameter(self, name: str) -> str:
        if name.startswith("model.embeddings."):
            return "embed"
        if name.startswith(self._layers_prefix):
            return name[len(self._layers_prefix) :].split(".")[0]
        if name.startswith("proj."):
            return "proj"
        if name.startswith("model."):
            return "norm"
        raise KeyError(name)

    def layer_part(self, index: int) -> str:
        """The part (parameter-group suffix) holding layer ``index``."""
        return str(index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = (x.round() if x.is_floating_point() else x).long()
        keep = ids != self.pad_token_id
        embeddings: Any = self.model.embeddings
        h = embeddings(input_ids=ids)
        mask = _bidirectional_mask()(config=self.config, inputs_embeds=h, attention_mask=keep)
        for layer in self.layers[: self.depth]:
            out = layer(h, mask)
            h = out[0] if isinstance(out, tuple) else out
        if self.pooling == "cls":
            z = h[:, 0]
        else:
            w = keep.unsqueeze(-1).to(h.dtype)
            z = (h * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)
        return z if self.proj is None else self.proj(z)
