"""FedMVP's joint encoder: tokens per modality (time steps, patches) and cross-modal attention."""

from __future__ import annotations

import numpy as np
import torch

from fedmm.completion.fedmvp.model import CrossModalLayer, FedMVPModel, token_extractor
from fedmm.core.data.types import ModalitySpec, SampleSet
from fedmm.core.models.encoders import build_encoder

SEQ = ModalitySpec("acc", (32, 3), "sequence")
IMG = ModalitySpec("image", (1, 8, 8), "image")


def test_conv_extractors_give_tokens_and_pooled_ones_give_one() -> None:
    seq, width = token_extractor(build_encoder(SEQ, "conv1d", 16), tokens=8)
    assert width == 64 and seq(torch.randn(5, 32, 3)).shape == (5, 8, 64)  # 8 time steps
    img, width = token_extractor(build_encoder(IMG, "cnn", 16), tokens=4)
    assert width == 64 and img(torch.randn(5, 1, 8, 8)).shape == (5, 4, 64)  # a 2 x 2 grid of patches
    mlp, width = token_extractor(build_encoder(IMG, "mlp", 16), tokens=4)
    assert width == 16 and mlp(torch.randn(5, 1, 8, 8)).shape == (5, 16)  # no positions: one token


def test_each_modality_attends_to_the_other_only_where_it_is_present() -> None:
    torch.manual_seed(0)
    layer = CrossModalLayer(8, 2).eval()
    a, b = torch.randn(3, 4, 8), torch.randn(3, 2, 8)
    b2 = b + torch.randn(3, 2, 8)
    both = torch.ones(3, 2, dtype=torch.bool)
    out, out2 = layer([a, b], both)[0], layer([a, b2], both)[0]
    assert not torch.allclose(out, out2)  # a's tokens read b's: cross-modal attention
    no_b = both.clone()
    no_b[:, 1] = False
    torch.testing.assert_close(layer([a, b], no_b)[0], layer([a, b2], no_b)[0])  # absent b is never read


def test_the_model_masks_a_missing_modality_out_of_the_joint_embedding() -> None:
    torch.manual_seed(0)
    extractors, widths = {}, {}
    for spec in (SEQ, IMG):
        kind = "conv1d" if spec.kind == "sequence" else "cnn"
        extractors[spec.name], widths[spec.name] = token_extractor(build_encoder(spec, kind, 16), 4)
    model = FedMVPModel((SEQ, IMG), extractors, widths, 3, dim=16, layers=2, heads=2).eval()
    rng = np.random.default_rng(0)
    feats = {
        "acc": rng.normal(size=(4, 32, 3)).astype(np.float32),
        "image": rng.random((4, 1, 8, 8)).astype(np.float32),
    }
    present = np.array([[True, True], [True, False], [True, True], [True, False]])
    other = {**feats, "image": rng.random((4, 1, 8, 8)).astype(np.float32)}
    idx = np.arange(4)
    with torch.no_grad():
        z1 = model(SampleSet((SEQ, IMG), feats, np.zeros(4, dtype=np.int64), present).batch(idx)).fused
        z2 = model(SampleSet((SEQ, IMG), other, np.zeros(4, dtype=np.int64), present).batch(idx)).fused
    torch.testing.assert_close(z1[[1, 3]], z2[[1, 3]])  # rows without the image ignore its values
    assert not torch.allclose(z1[[0, 2]], z2[[0, 2]])
