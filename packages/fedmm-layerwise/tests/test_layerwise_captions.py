"""LW-FedMML on the image–caption format: core's captions loader, a text tower built from a
transformers config, the self-supervised CLIP loss."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
Image = pytest.importorskip("PIL.Image")

from fedmm.core import FedAvg, Federation  # noqa: E402
from fedmm.core.data import captions  # noqa: E402
from fedmm.core.data.registry import federate  # noqa: E402
from fedmm.core.data.types import FederatedDataset  # noqa: E402
from fedmm.core.maths.contrastive import clip_loss  # noqa: E402
from fedmm.core.models import ConcatFusion, MultimodalModel, TransformerStackEncoder  # noqa: E402
from fedmm.layerwise import LayerWise  # noqa: E402
from fedmm.layerwise.fedmml.hf import HFTextEncoder  # noqa: E402

COLOURS = {"001.Red_Bird": (230, 20, 20), "002.Blue_Bird": (20, 20, 230), "003.Green_Bird": (20, 200, 20)}


def _cub(root: Path, per_class: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for cls, colour in COLOURS.items():
        word = cls.split(".")[1].split("_")[0].lower()
        for k in range(per_class):
            stem = f"{word}_{k:03d}"
            img = root / "images" / cls / f"{stem}.jpg"
            img.parent.mkdir(parents=True, exist_ok=True)
            noisy = np.clip(np.array(colour) + rng.integers(-30, 30, size=(16, 16, 3)), 0, 255)
            Image.fromarray(noisy.astype(np.uint8)).save(img)
            txt = root / "text_c10" / cls / f"{stem}.txt"
            txt.parent.mkdir(parents=True, exist_ok=True)
            txt.write_text(f"a {word} bird with small wings\nthis bird is {word} all over\n")
    return root


@torch.no_grad()
def _clip_on(model: nn.Module, data: FederatedDataset) -> float:
    out = model(data.train.batch(np.arange(len(data.train))))
    return float(clip_loss(out.embeddings["image"], out.embeddings["text"], 0.1))


def test_lw_contrastive_on_captions_with_a_transformers_text_tower(tmp_path: Path) -> None:
    central = captions.load_central(
        _cub(tmp_path), image_size=16, max_len=8, test_fraction=0.25, progress=False
    )
    data = federate(central, clients=2, partition="iid", seed=0)
    image_spec, _ = data.modalities
    torch.manual_seed(0)
    vocab = len(central.metadata["vocab"])
    text = HFTextEncoder.from_config(
        {
            "model_type": "bert",
            "vocab_size": vocab,
            "hidden_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "max_position_embeddings": 16,
        },
        projection=16,
    )
    image = TransformerStackEncoder(image_spec, embed_dim=16, layers=2, heads=2, tokens=16, projection=16)
    model = MultimodalModel(
        data.modalities, {"image": image, "text": text}, ConcatFusion([16, 16], 16), nn.Linear(16, 3)
    )
    model_at_start = copy.deepcopy(model)
    tech = LayerWise(mode="lw", rounds_per_stage=4, contrastive_weight=1.0, supervised=False, temperature=0.1)
    fed = Federation(model, data, FedAvg([tech], optimizer="adamw", lr=1e-2, local_epochs=5), seed=0)
    history = fed.run(8, progress=False)
    assert [r["layerwise/stage"] for r in history.rounds] == [1] * 4 + [2] * 4
    assert [r["layerwise/depth/text"] for r in history.rounds] == [1] * 4 + [2] * 4
    for rec in history.ledger.records:
        layer = str((rec.round - 1) // 4)
        assert {g for g in rec.groups_up if g.startswith("encoder.text.")} == {
            f"encoder.text.{p}" for p in ((layer, "proj") if layer != "0" else ("embed", "0", "proj"))
        }
    losses = [r["train_loss"] for r in history.rounds]
    assert all(math.isfinite(v) for v in losses)
    # The towers learned to match captions to images: the CLIP loss over all training pairs fell.
    assert _clip_on(model_at_start, data) > _clip_on(fed.model, data) + 0.1
