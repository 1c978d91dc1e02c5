"""The cross-modal generator FedMVP pre-trains on the public split, and the completer on top of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedmm.completion.fedmvp.generators import CrossModalGenerator, GenerativeCompleter, probe_from_generator
from fedmm.core.data.types import ModalitySpec, SampleSet
from fedmm.core.errors import ConfigError, DataError

ACC = ModalitySpec("acc", (32, 3), "sequence")
GYRO = ModalitySpec("gyro", (32, 2), "sequence")


def _paired(n: int, seed: int) -> SampleSet:
    """gyro is a fixed local function of acc (a smoothed difference over time), sample by sample."""
    rng = np.random.default_rng(seed)
    acc = rng.normal(size=(n, 32, 3)).astype(np.float32)
    diff = np.diff(acc, axis=1, prepend=acc[:, :1])
    gyro = np.stack([diff[..., 0] + 0.5 * acc[..., 1], acc[..., 2] * 2.0 - 1.0], axis=-1).astype(np.float32)
    labels = rng.integers(0, 3, size=n)
    return SampleSet((ACC, GYRO), {"acc": acc, "gyro": gyro}, labels)


def test_the_temporal_generator_learns_a_sample_level_relation_from_the_public_pairs() -> None:
    public, test = _paired(256, 0), _paired(100, 1)
    gen = CrossModalGenerator((ACC, GYRO), hidden=32)
    assert type(gen.nets["acc__to__gyro"]).__name__ == "_Temporal"  # same length: time-aligned convs
    with pytest.raises(ConfigError, match="not trained"):
        gen.generate("acc", "gyro", torch.zeros(1, 32, 3))
    gen.fit(public, epochs=20, seed=0)
    pred = gen.generate("acc", "gyro", torch.from_numpy(test.features["acc"])).numpy()
    truth = test.features["gyro"]
    mse = float(((pred - truth) ** 2).mean())
    baseline = float(((truth - public.features["gyro"].mean(axis=0)) ** 2).mean())  # the public mean
    assert mse < 0.1 * baseline
    assert not any(p.requires_grad for p in gen.parameters())  # frozen after fitting


def test_completion_fills_only_missing_values_from_the_present_ones_and_marks_them() -> None:
    public, own = _paired(300, 0), _paired(40, 2)
    present = np.ones((40, 2), dtype=bool)
    present[:10, 1] = False  # gyro missing
    present[10:20, 0] = False  # acc missing
    holed = own.with_columns(present=present)
    completer = GenerativeCompleter(CrossModalGenerator((ACC, GYRO), hidden=16), public, epochs=5)
    completer.fit()
    done = completer.complete(holed)
    assert done.present.all()
    np.testing.assert_array_equal(done.generated, ~present)
    np.testing.assert_array_equal(done.features["acc"][:10], own.features["acc"][:10])  # kept
    np.testing.assert_array_equal(done.features["gyro"][20:], own.features["gyro"][20:])
    expect = completer.generator.generate("acc", "gyro", torch.from_numpy(own.features["acc"][:10])).numpy()
    np.testing.assert_allclose(done.features["gyro"][:10], expect, rtol=1e-6)
    probe = probe_from_generator(public, completer.generator, seed=0)
    assert len(probe) == len(public) and probe.generated.sum(axis=1).tolist() == [1] * len(public)


def test_save_and_load_pretrained_round_trip_and_bad_folders(tmp_path: Path) -> None:
    image = ModalitySpec("image", (1, 4, 4), "image")
    gen = CrossModalGenerator((image, GYRO), hidden=8).fit(
        SampleSet(
            (image, GYRO),
            {
                "image": np.random.rand(20, 1, 4, 4).astype(np.float32),
                "gyro": np.random.rand(20, 32, 2).astype(np.float32),
            },
            np.zeros(20, dtype=np.int64),
        ),
        epochs=2,
    )
    assert type(gen.nets["image__to__gyro"]).__name__ == "_Dense"
    gen.save_pretrained(tmp_path / "g")
    again = CrossModalGenerator.from_pretrained(tmp_path / "g")
    x = torch.rand(3, 1, 4, 4)
    torch.testing.assert_close(again.generate("image", "gyro", x), gen.generate("image", "gyro", x))
    with pytest.raises(ConfigError, match="not a saved CrossModalGenerator"):
        CrossModalGenerator.from_pretrained(tmp_path / "nothing")
    with pytest.raises(DataError, match="do not match"):
        CrossModalGenerator((ACC, GYRO), hidden=8).load_arrays(gen.arrays())


def test_tokens_and_single_modalities_are_refused() -> None:
    with pytest.raises(ConfigError, match="token modality 'text'"):
        CrossModalGenerator((ACC, ModalitySpec("text", (8,), "tokens")))
    with pytest.raises(ConfigError, match="at least two modalities"):
        CrossModalGenerator((ACC,))
