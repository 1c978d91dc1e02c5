"""Foundation-model completion on the real image–caption folder format, with tiny frozen models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers")
Image = pytest.importorskip("PIL.Image")

from fedmm.completion.fedmvp.completion import FoundationCompleter  # noqa: E402
from fedmm.core.data import captions  # noqa: E402
from fedmm.core.data.registry import federate  # noqa: E402
from fedmm.core.errors import ConfigError  # noqa: E402

COLOURS = {"001.Red_Cardinal": (230, 20, 20), "002.Blue_Jay": (20, 20, 230)}


def _cub(root: Path, per_class: int = 6) -> Path:
    for cls, colour in COLOURS.items():
        word = cls.split(".")[1].split("_")[0].lower()
        for k in range(per_class):
            img = root / "images" / cls / f"{word}_{k}.jpg"
            img.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 20), colour).save(img)
            txt = root / "text_c10" / cls / f"{word}_{k}.txt"
            txt.parent.mkdir(parents=True, exist_ok=True)
            txt.write_text(f"a {word} bird with small wings\\n")
    return root


def test_missing_captions_and_images_are_generated_and_marked(tmp_path: Path, tiny: Any) -> None:
    central = captions.load_central(
        _cub(tmp_path / "cub"), image_size=16, max_len=8, test_fraction=0.25, progress=False
    )
    data = federate(central, clients=1, partition="iid", incomplete_fraction=1.0, seed=0)
    own = data.client(0).local_copy()
    assert (~own.present).sum(axis=1).tolist() == [1] * len(own)  # every sample misses one modality
    (tmp_path / "blip").mkdir()
    (tmp_path / "sd").mkdir()
    completer = FoundationCompleter(
        tiny.captioner(tmp_path / "blip"),
        tiny.text_to_image(tmp_path / "sd"),
        central.metadata["vocab"],
        data.class_names,
        category="bird",
        steps=2,
    )
    done = completer.complete(own)
    assert done.present.all()
    np.testing.assert_array_equal(done.generated, ~own.present)
    np.testing.assert_array_equal(
        done.features["image"][own.present[:, 0]], own.features["image"][own.present[:, 0]]
    )
    new_images = done.features["image"][~own.present[:, 0]]
    assert new_images.shape[1:] == (3, 16, 16) and new_images.min() >= 0.0 and new_images.max() <= 1.0
    new_text = done.features["text"][~own.present[:, 1]]
    assert new_text.shape[1] == 8 and new_text.min() >= 0 and new_text.max() < len(central.metadata["vocab"])
    # The coarse prompt's words from the dataset's vocabulary start every generated caption.
    vocab = central.metadata["vocab"]
    assert all(vocab[int(t[0])] == "a" for t in new_text)
    again = completer.complete(own)  # seeded: the same completion twice
    np.testing.assert_array_equal(again.features["image"], done.features["image"])


def test_fedmvp_runs_from_config_with_models_loaded_from_local_folders(tmp_path: Path, tiny: Any) -> None:
    from fedmm.completion import FedMVP
    from fedmm.core import FedAvg, Federation
    from fedmm.core.config import build_technique, parse_config

    (tmp_path / "blip").mkdir()
    (tmp_path / "sd").mkdir()
    tiny.captioner(tmp_path / "blip").save_pretrained(tmp_path / "blip_model")
    tiny.text_to_image(tmp_path / "sd").save_pretrained(tmp_path / "sd_model")
    central = captions.load_central(
        _cub(tmp_path / "cub"), image_size=16, max_len=8, test_fraction=0.25, progress=False
    )
    data = federate(
        central, clients=2, partition="iid", incomplete_fraction=0.8, validation_fraction=0.25, seed=0
    )
    raw = {
        "data": {"name": "captions"},
        "techniques": [
            {
                "name": "fedmvp",
                "completion": "foundation",
                "captioner_path": str(tmp_path / "blip_model"),
                "generator_path": str(tmp_path / "sd_model"),
                "category": "bird",
                "generation_steps": 2,
                "extractor_epochs": 2,
                "dim": 16,
            }
        ],
    }
    tech = build_technique(parse_config(raw).techniques[0])
    assert isinstance(tech, FedMVP)
    strategy = FedAvg([tech], optimizer="adam", lr=1e-3)
    model = strategy.create_model(data, {})
    fed = Federation(model, data, strategy, seed=0)
    history = fed.run(1, progress=False)
    for cid in range(data.num_clients):
        assert fed.client_states[cid]["fedmvp/completed/present"].all()
    assert all(
        rec.flops_by_hook["prepare"] > 0 for rec in history.ledger.records
    )  # the frozen models' work is measured
    missing = dict(raw["techniques"][0], captioner_path=str(tmp_path / "nowhere"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="nowhere"):
        FedAvg([build_technique(parse_config({**raw, "techniques": [missing]}).techniques[0])]).create_model(
            data, {}
        )


def test_fedmvp_with_frozen_clip_features_on_captions(tmp_path: Path, tiny: Any) -> None:
    from fedmm.completion import FedMVP
    from fedmm.completion.fedmvp.foundation import FrozenCLIP
    from fedmm.core import FedAvg, Federation

    tok = tiny.clip_tokenizer(tmp_path)
    layer = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    clip = FrozenCLIP.from_config(
        {
            "text_config": {**layer, **ids, "vocab_size": len(tok), "max_position_embeddings": 77},
            "vision_config": {**layer, "image_size": 16, "patch_size": 8},
            "projection_dim": 24,
        }
    )
    clip.save_pretrained(tmp_path / "clip")
    tok.save_pretrained(tmp_path / "clip")
    central = captions.load_central(
        _cub(tmp_path / "cub"), image_size=16, max_len=8, test_fraction=0.25, progress=False
    )
    data = federate(
        central, clients=2, partition="iid", incomplete_fraction=0.5, validation_fraction=0.25, seed=0
    )
    strategy = FedAvg([FedMVP(clip_path=str(tmp_path / "clip"), dim=16)], optimizer="adam", lr=1e-3)
    model = strategy.create_model(data, {})
    assert {m: int(e.clip.dim) for m, e in model.frozen.items()} == {"image": 24, "text": 24}  # type: ignore[union-attr]
    assert not any("clip" in k for k in model.state_dict())  # the frozen CLIP never crosses
    history = Federation(model, data, strategy, seed=0).run(1, progress=False)
    assert np.isfinite(history.rounds[-1]["accuracy"])
