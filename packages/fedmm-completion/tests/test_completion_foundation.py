"""Frozen foundation-model wrappers of FedMVP, on tiny random-weight models.

Every model is built from a config, written with ``save_pretrained`` and loaded back through the production
``from_pretrained(local_path)`` path; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from fedmm.completion.fedmvp.foundation import Captioner, FrozenCLIP, TextToImage, coarse_prompt
from fedmm.core.errors import ConfigError

pytest.importorskip("transformers")


# ------------------------------------------------------------------------------------------------- CLIP
def test_frozen_clip_shapes_frozen_and_round_trip(tmp_path: Path, tiny: Any) -> None:
    clip = tiny.clip()
    assert clip.dim == 24
    assert not any(p.requires_grad for p in clip.parameters())
    clip.train()
    assert not clip.training and not any(m.training for m in clip.modules())

    images = tiny.images(3, size=40)  # resized to the vision config's 32x32
    ids = torch.randint(3, 98, (3, 7), generator=torch.Generator().manual_seed(1))
    ids[:, 0], ids[:, -1] = 98, 99  # CLIP pools the hidden state at the first eos token
    ids[0, 4:] = torch.tensor([99, 0, 0])
    mask = (ids != 0).long()
    img = clip.encode_image(images)
    txt = clip.encode_text(ids, mask)
    assert img.shape == (3, 24) and txt.shape == (3, 24)
    assert not img.requires_grad and torch.isfinite(img).all() and torch.isfinite(txt).all()
    assert not torch.allclose(txt[0], txt[1])

    clip.save_pretrained(tmp_path / "clip")
    loaded = FrozenCLIP.from_pretrained(tmp_path / "clip")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(loaded.encode_image(images), img, rtol=0, atol=0)
    torch.testing.assert_close(loaded.encode_text(ids, mask), txt, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------- BLIP
def test_coarse_prompt() -> None:
    assert coarse_prompt("cardinal", "bird") == "a photo of a cardinal, a type of bird,"
    assert coarse_prompt("red_rose", None) == "a photo of a red rose,"
    with pytest.raises(ConfigError):
        coarse_prompt("  ")


def test_captioner_prompts_and_round_trip(tmp_path: Path, tiny: Any) -> None:
    cap = tiny.captioner(tmp_path)
    assert not any(p.requires_grad for p in cap.parameters())
    cap.train()
    assert not cap.training

    images = tiny.images(2, size=40)
    plain = cap.caption(images, max_new_tokens=5)
    # random weights: the first greedy token is often [SEP], giving ""
    assert len(plain) == 2 and all(isinstance(c, str) for c in plain)
    # generate kwargs pass through to BLIP's generate: forbidding an early stop yields words of the vocabulary
    forced = cap.caption(images, max_new_tokens=5, min_new_tokens=3)
    assert all(c and set(c.replace(",", " ").split()) <= set(tiny.words) for c in forced)

    # Prompts of different token lengths in one batch; "Cardinal" is lower-cased by the tokenizer.
    prompts = [coarse_prompt("Cardinal", "bird"), coarse_prompt("rose")]
    prompted = cap.caption(images, prompts, max_new_tokens=4)
    assert len(prompted) == 2
    # BLIP returns the prompt tokens followed by the continuation: the caption starts with the prompt as the
    # tokenizer decodes it (lower-cased, BERT puts a space before punctuation).
    for prompt, text in zip(prompts, prompted, strict=True):
        expected = cap.tokenizer.decode(cap.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        assert expected.startswith("a photo of a ")
        assert text.startswith(expected)
    assert "cardinal" in prompted[0] and "Cardinal" not in prompted[0]
    # at most max_new_tokens words beyond the prompt
    assert len(prompted[1].split()) <= len(cap.tokenizer.tokenize(prompts[1])) + 4

    with pytest.raises(ConfigError, match="prompts"):
        cap.caption(images, prompts[:1])

    cap.save_pretrained(tmp_path / "blip")
    loaded = Captioner.from_pretrained(tmp_path / "blip")
    assert not any(p.requires_grad for p in loaded.parameters())
    assert loaded.caption(images, max_new_tokens=5) == plain
    assert loaded.caption(images, prompts, max_new_tokens=4) == prompted


# ------------------------------------------------------------------------------------------- text → image
def test_text_to_image_generate_and_round_trip(tmp_path: Path, tiny: Any) -> None:
    pytest.importorskip("diffusers")
    t2i = tiny.text_to_image(tmp_path)
    assert not any(p.requires_grad for p in t2i.parameters())
    t2i.train()
    assert not t2i.training

    prompts = ["a red bird", "a blue bird"]
    images = t2i.generate(prompts, steps=2, seed=0)
    side = t2i.default_size
    assert images.shape == (2, 3, side, side) and images.dtype == torch.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    torch.testing.assert_close(t2i.generate(prompts, steps=2, seed=0), images, rtol=0, atol=0)
    assert not torch.equal(t2i.generate(prompts, steps=2, seed=1), images)

    t2i.save_pretrained(tmp_path / "t2i")
    loaded = TextToImage.from_pretrained(tmp_path / "t2i")
    assert not any(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(loaded.generate(prompts, steps=2, seed=0), images, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "load", [FrozenCLIP.from_pretrained, Captioner.from_pretrained, TextToImage.from_pretrained]
)
def test_missing_or_bad_folder_is_config_error(tmp_path: Path, load: Callable[[Path], object]) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match="save_pretrained") as info:
        load(missing)
    assert str(missing) in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="not a model folder") as info:
        load(empty)
    assert str(empty) in str(info.value)
