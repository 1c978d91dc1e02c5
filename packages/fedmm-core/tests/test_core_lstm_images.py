"""The LSTM encoder reads an image row by row: one encoder family serves image and sequence modalities."""

import pytest
import torch

from fedmm.core.data.types import ModalitySpec
from fedmm.core.errors import ConfigError
from fedmm.core.models.encoders import LSTMEncoder, build_encoder


def test_image_rows_are_time_steps() -> None:
    spec = ModalitySpec("image", (2, 8, 5), "image")
    enc = build_encoder(spec, "lstm", 16, hidden=12)
    assert isinstance(enc, LSTMEncoder)
    assert enc.lstm.input_size == 2 * 5  # channels x width per row
    x = torch.randn(3, 2, 8, 5)
    assert enc(x).shape == (3, 16)
    # Row r of the image is step r of the sequence: the same as feeding the rows explicitly.
    rows = x.permute(0, 2, 1, 3).reshape(3, 8, 10)
    _, (h, _) = enc.lstm(rows)
    assert torch.allclose(enc(x), torch.relu(enc.proj(h[-1])))


def test_other_shapes_are_refused_with_the_shape() -> None:
    with pytest.raises(
        ConfigError, match=r"\(time, channels\) or an image \(channels, height, width\), got \(4,\)"
    ):
        LSTMEncoder((4,))
