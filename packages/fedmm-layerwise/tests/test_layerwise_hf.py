"""HFTextEncoder: a transformers text tower as a layered encoder (tiny random models only)."""

from __future__ import annotations

import sys

import pytest

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from fedmm.core.data.types import Batch, ModalitySpec  # noqa: E402
from fedmm.core.errors import ConfigError  # noqa: E402
from fedmm.core.models import (  # noqa: E402
    ConcatFusion,
    MultimodalModel,
    TransformerStackEncoder,
    absent_groups,
    set_depth,
)
from fedmm.layerwise.fedmml.hf import HFTextEncoder  # noqa: E402


def bert_config(layers: int = 4) -> object:
    return transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )


def distilbert_config(layers: int = 4) -> object:
    return transformers.DistilBertConfig(
        vocab_size=100, dim=32, n_layers=layers, n_heads=2, hidden_dim=64, max_position_embeddings=64
    )


def roberta_config(layers: int = 4) -> object:  # pad_token_id = 1
    return transformers.RobertaConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )


CONFIGS = {"bert": bert_config, "distilbert": distilbert_config, "roberta": roberta_config}


def ids(pad: int = 0) -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.randint(2, 100, (3, 7))
    x[1, 5:] = pad
    x[2, 3:] = pad
    return x


def hf_model(kind: str, layers: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return transformers.AutoModel.from_config(CONFIGS[kind](layers)).eval()


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_full_depth_matches_hf(kind: str) -> None:
    model = hf_model(kind)
    pad = model.config.pad_token_id
    x = ids(pad)
    with torch.no_grad():
        want = model(input_ids=x, attention_mask=(x != pad).long()).last_hidden_state[:, 0]
        got = HFTextEncoder(model).eval()(x.float())
    assert got.shape == (3, 32)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_depth_truncates(kind: str) -> None:
    full = hf_model(kind)
    short = transformers.AutoModel.from_config(CONFIGS[kind](2)).eval()
    missing, _ = short.load_state_dict(full.state_dict(), strict=False)
    assert not missing
    enc = HFTextEncoder(full).eval()
    enc.depth = 2
    pad = full.config.pad_token_id
    x = ids(pad)
    with torch.no_grad():
        want = short(input_ids=x, attention_mask=(x != pad).long()).last_hidden_state[:, 0]
        got = enc(x)
        full_out = HFTextEncoder(hf_model(kind)).eval()(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, full_out)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_every_key_has_a_part(kind: str) -> None:
    enc = HFTextEncoder.from_config(CONFIGS[kind]())
    assert enc.num_layers == enc.depth == 4 and enc.layer_part(2) == "2" and enc.out_dim == 32
    assert {enc.part_of_parameter(k) for k in enc.state_dict()} == {"embed", "0", "1", "2", "3"}
    proj = HFTextEncoder.from_config(CONFIGS[kind](), projection=16, pooling="mean")
    assert {proj.part_of_parameter(k) for k in proj.state_dict()} == {"embed", "0", "1", "2", "3", "proj"}
    assert proj.eval()(ids()).shape == (3, 16)
    with pytest.raises(KeyError):
        enc.part_of_parameter("elsewhere.weight")


def test_from_config_dict_and_pooler_dropped() -> None:
    enc = HFTextEncoder.from_config({"model_type": "bert", **bert_config().to_diff_dict()})
    assert enc.num_layers == 4
    with_pooler = HFTextEncoder(transformers.BertModel(bert_config()))
    assert not any("pooler" in k for k in with_pooler.state_dict())


def test_unsupported_model() -> None:
    gpt2 = transformers.GPT2Model(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100))
    with pytest.raises(ConfigError, match="GPT2Model"):
        HFTextEncoder(gpt2)
    with pytest.raises(ConfigError, match="model_type"):
        HFTextEncoder.from_config({"model_type": "gpt2"})


def test_from_pretrained_roundtrip(tmp_path) -> None:
    model = hf_model("bert")
    model.save_pretrained(tmp_path)
    x = ids()
    with torch.no_grad():
        a = HFTextEncoder(model).eval()(x)
        b = HFTextEncoder.from_pretrained(tmp_path).eval()(x)
    torch.testing.assert_close(a, b)
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="save_pretrained") as info:
        HFTextEncoder.from_pretrained(missing)
    assert str(missing) in str(info.value)


def test_in_multimodal_model() -> None:
    specs = [ModalitySpec("image", (1, 8, 8), "image"), ModalitySpec("text", (6,), "tokens")]
    torch.manual_seed(0)
    model = MultimodalModel(
        specs,
        {
            "image": TransformerStackEncoder(specs[0], embed_dim=32, layers=4, heads=2, tokens=4),
            "text": HFTextEncoder.from_config(bert_config()),
        },
        ConcatFusion([32, 32], 32),
        nn.Linear(32, 5),
    )
    groups = model.parameter_groups()
    assert {f"encoder.text.{i}" for i in range(4)} | {"encoder.text.embed"} <= set(groups)
    assert set_depth(model, {"text": 1}) == {"image": 4, "text": 1}
    text = torch.randint(1, 100, (2, 6)).float()
    text[0, 4:] = 0
    batch = Batch(
        features={"image": torch.randn(2, 1, 8, 8), "text": text},
        present=torch.ones(2, 2, dtype=torch.bool),
        labels=torch.tensor([0, 3]),
        modalities=("image", "text"),
    )
    out = model(batch)
    assert out.logits.shape == (2, 5)
    out.logits.sum().backward()
    layer1 = model.encoders["text"].layers[1]
    assert all(p.grad is None for p in layer1.parameters())
    assert absent_groups(model, {"text": 1}) == ("encoder.text.1", "encoder.text.2", "encoder.text.3")


def test_without_transformers(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ConfigError, match=r'pip install "fedmm-layerwise\[transformers\]"'):
        HFTextEncoder.from_config({"model_type": "bert"})
