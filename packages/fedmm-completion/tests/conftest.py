"""Tiny random-weight foundation models for the completion tests (built from configs, nothing downloaded)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from fedmm.completion.fedmvp.foundation import Captioner, FrozenCLIP, TextToImage

WORDS = [
    "a", "photo", "of", "cardinal", "type", "bird", "red", "blue", "with", "wings", "small", "the", "on",
    "branch", "flower", "rose", "and", "black", "white", "tail",
]  # fmt: skip
BERT_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]


def _images(batch: int = 2, size: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _tiny_clip() -> FrozenCLIP:
    torch.manual_seed(0)
    layer = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    return FrozenCLIP.from_config(
        {
            "text_config": {
                **layer,
                "vocab_size": 100,
                "max_position_embeddings": 16,
                "bos_token_id": 98,
                "eos_token_id": 99,
                "pad_token_id": 0,
            },
            "vision_config": {**layer, "image_size": 32, "patch_size": 8},
            "projection_dim": 24,
        }
    )


def _bert_tokenizer(tmp_path: Path) -> Any:
    from transformers import BertTokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join([*BERT_SPECIAL, ",", *WORDS]) + "\n")
    return BertTokenizer(str(vocab), do_lower_case=True, bos_token="[DEC]")


def _tiny_captioner(tmp_path: Path) -> Captioner:
    from transformers import BlipConfig

    tok = _bert_tokenizer(tmp_path)
    vocab = tok.get_vocab()
    layer = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    config = BlipConfig(
        text_config={
            **layer,
            "vocab_size": len(tok),
            "max_position_embeddings": 64,
            "bos_token_id": vocab["[DEC]"],
            "pad_token_id": vocab["[PAD]"],
            "sep_token_id": vocab["[SEP]"],
            "eos_token_id": vocab["[SEP]"],
        },
        vision_config={**layer, "image_size": 32, "patch_size": 8},
        projection_dim=32,
        image_text_hidden_size=32,
    )
    torch.manual_seed(0)
    return Captioner.from_config(config, tok)


def _clip_tokenizer(tmp_path: Path) -> Any:
    from transformers import CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)]
    merges = ["r e", "re d</w>", "b i", "bi r", "bir d</w>", "b l", "bl u", "blu e</w>"]
    for merge in merges:
        tokens.append(merge.replace(" ", ""))
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=77)


def _tiny_text_to_image(tmp_path: Path) -> TextToImage:
    tok = _clip_tokenizer(tmp_path)
    torch.manual_seed(0)
    return TextToImage.from_config(
        unet={
            "sample_size": 8,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": (32, 64),
            "layers_per_block": 1,
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "cross_attention_dim": 32,
            "attention_head_dim": 8,
            "norm_num_groups": 32,
        },
        vae={
            "in_channels": 3,
            "out_channels": 3,
            "latent_channels": 4,
            "block_out_channels": (32, 64),
            "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
            "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
            "layers_per_block": 1,
            "norm_num_groups": 32,
            "sample_size": 16,
        },
        text_encoder={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "vocab_size": len(tok),
            "max_position_embeddings": 77,
        },
        tokenizer=tok,
    )


@pytest.fixture
def tiny() -> SimpleNamespace:
    """Builders of tiny models: ``clip()``, ``captioner(tmp_path)``, ``text_to_image(tmp_path)``,
    ``clip_tokenizer(tmp_path)``, ``images(batch, size, seed)``; ``words`` is the captioner's vocabulary."""
    return SimpleNamespace(
        clip=_tiny_clip,
        captioner=_tiny_captioner,
        text_to_image=_tiny_text_to_image,
        images=_images,
        words=WORDS,
        clip_tokenizer=_clip_tokenizer,
    )
