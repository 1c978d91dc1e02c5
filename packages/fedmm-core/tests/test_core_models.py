from __future__ import annotations

import pytest
import torch

from fedmm.core.data.types import Batch, ModalitySpec
from fedmm.core.errors import ConfigError
from fedmm.core.models import expand_groups, late_fusion

SPECS = (
    ModalitySpec("image", (1, 8, 8), "image"),
    ModalitySpec("audio", (20, 6), "sequence"),
    ModalitySpec("text", (5,), "tokens"),
)


def _batch(n: int = 4, present: torch.Tensor | None = None) -> Batch:
    feats = {
        "image": torch.randn(n, 1, 8, 8),
        "audio": torch.randn(n, 20, 6),
        "text": torch.randint(0, 50, (n, 5)),
    }
    p = present if present is not None else torch.ones(n, 3, dtype=torch.bool)
    return Batch(feats, p, torch.zeros(n, dtype=torch.long), ("image", "audio", "text"))


@pytest.mark.parametrize("fusion", ["concat", "attention"])
def test_forward_shapes_and_groups(fusion: str) -> None:
    model = late_fusion(SPECS, 7, fusion=fusion, encoder_options={"text": {"vocab_size": 50, "layers": 2}})
    out = model(_batch())
    assert out.logits.shape == (4, 7)
    groups = model.parameter_groups()
    assert list(groups) == [
        "encoder.image",
        "encoder.audio",
        "encoder.text.embed",
        "encoder.text.0",
        "encoder.text.1",
        "encoder.text.norm",
        "fusion",
        "head",
    ]
    keys = [k for ks in groups.values() for k in ks]
    assert sorted(keys) == sorted(model.state_dict())  # each key in exactly one group


def test_missing_modality_gives_zero_embedding_and_skips_its_encoder() -> None:
    model = late_fusion(SPECS, 3, encoder_options={"text": {"vocab_size": 50}})
    calls = []
    model.encoders["audio"].register_forward_hook(lambda *a: calls.append(1))
    present = torch.tensor([[True, False, True]] * 4)
    out = model(_batch(present=present))
    assert calls == []
    assert torch.count_nonzero(out.embeddings["audio"]) == 0
    # Per-sample missing: the masked rows are zero, the others not.
    present = torch.tensor([[True, True, True], [True, False, True]] * 2)
    out = model(_batch(present=present))
    assert calls == [1]
    assert torch.count_nonzero(out.embeddings["audio"][1]) == 0


def test_active_restricts_modalities() -> None:
    model = late_fusion(SPECS, 3, encoder_options={"text": {"vocab_size": 50}})
    out = model(_batch(), active=("image",))
    assert out.present[:, 1:].any().item() is False
    assert torch.count_nonzero(out.embeddings["text"]) == 0


def test_attention_fusion_survives_a_sample_with_nothing_present() -> None:
    model = late_fusion(SPECS, 3, fusion="attention", encoder_options={"text": {"vocab_size": 50}})
    present = torch.tensor([[False, False, False], [True, True, True]])
    out = model(_batch(2, present))
    assert torch.isfinite(out.logits).all()


def test_expand_groups_patterns() -> None:
    groups = ["encoder.a", "encoder.text.0", "encoder.text.1", "fusion", "head"]
    assert expand_groups(["encoder.text"], groups) == ("encoder.text.0", "encoder.text.1")
    assert expand_groups(["*"], groups) == tuple(groups)
    assert expand_groups(["head", "encoder.*"], groups) == (
        "encoder.a",
        "encoder.text.0",
        "encoder.text.1",
        "head",
    )
    with pytest.raises(ConfigError, match="matches nothing"):
        expand_groups(["encoder.zzz"], groups)


def test_unknown_encoder_and_fusion_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="unknown encoder"):
        late_fusion(SPECS, 3, encoders={"image": "resnet"})
    with pytest.raises(ConfigError, match="unknown fusion"):
        late_fusion(SPECS, 3, fusion="sum")
    with pytest.raises(ConfigError, match="unknown modalities"):
        late_fusion(SPECS, 3, encoders={"video": "mlp"})


@pytest.mark.parametrize(
    ("shape", "size", "dims"),
    [((4, 3, 8, 8), 2, 2), ((4, 3, 7, 9), 2, 2), ((4, 3, 64), 1, 1), ((4, 3, 33), 1, 1)],
)
def test_mean_pool_is_adaptive_average_pooling(shape: tuple[int, ...], size: int, dims: int) -> None:
    from fedmm.core.models.encoders import MeanPool

    x = torch.randn(shape)
    ref = torch.nn.AdaptiveAvgPool2d(size) if dims == 2 else torch.nn.AdaptiveAvgPool1d(size)
    torch.testing.assert_close(MeanPool(size, dims)(x), ref(x))
