"""av-digits: sklearn digit images paired with espeak-ng spoken digits (small builds, tmp cache)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedmm.core.data import av_digits
from fedmm.core.data.av_digits import SAMPLE_RATE, Speech
from fedmm.core.data.types import CentralDataset
from fedmm.core.errors import MissingDependencyError

# One voice, speed and pitch: 10 espeak calls instead of 720.
SMALL: dict[str, Any] = {"voices": ("en",), "speeds": (160,), "pitches": (50,)}
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fedmm-cache")


@pytest.fixture(autouse=True)
def _tmp_cache(cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("FEDMM_CACHE", str(cache_root))
    yield


@pytest.fixture(scope="module")
def small(cache_root: Path) -> CentralDataset:
    """The small build, loaded once (seed 0) through the FEDMM_CACHE variable."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEDMM_CACHE", str(cache_root))
        return av_digits.load_central(progress=False, **SMALL)


def _no_espeak(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("espeak-ng must not be called")

    monkeypatch.setattr(av_digits.subprocess, "run", refuse)
    monkeypatch.setattr(av_digits.shutil, "which", lambda name: None)


def test_missing_espeak_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMM_CACHE", str(tmp_path))  # empty cache: synthesis is needed
    monkeypatch.setattr(av_digits.shutil, "which", lambda name: None)
    with pytest.raises(MissingDependencyError) as err:
        av_digits.load_central(progress=False, **SMALL)
    msg = str(err.value)
    assert "apt-get install espeak-ng" in msg and "brew install espeak-ng" in msg


def test_mel_filterbank() -> None:
    fb = av_digits.mel_filterbank(32)
    assert fb.shape == (32, av_digits.NFFT // 2 + 1) and fb.min() >= 0.0 and fb.max() <= 1.0
    peaks = fb.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all() and peaks[-1] > 4 * peaks[0]
    assert (fb.sum(axis=1) > 0).all()


def test_audio_features_pair_each_label_with_its_own_class() -> None:
    # A fake "speech" bank: digit d is a pure tone whose pitch rises with d.
    t = np.arange(int(0.3 * SAMPLE_RATE)) / SAMPLE_RATE
    waves = np.stack([np.sin(2 * np.pi * (300 + 400 * d) * t) for d in range(10) for _ in range(2)])
    n = waves.shape[0]
    digits = np.repeat(np.arange(10), 2)
    speech = Speech(
        waves.astype(np.float32), np.full(n, waves.shape[1]), digits, np.zeros(n), np.zeros(n), np.zeros(n)
    )
    labels = np.random.default_rng(0).integers(0, 10, 200)
    feats = av_digits._audio_features(speech, labels, np.random.default_rng(1), 40, 32, 20.0, False)
    assert feats.shape == (200, 40, 32) and feats.dtype == np.float32
    loudest_band = feats.max(axis=1).argmax(axis=1)
    for d in range(9):  # higher digit → higher tone → higher mel band
        assert loudest_band[labels == d].max() < loudest_band[labels == d + 1].min()


def test_image_degradation() -> None:
    ones = np.ones((50, 1, 8, 8), dtype=np.float32)
    out = av_digits._degrade_images(ones, np.random.default_rng(0), noise=0.0, occlusion=3)
    assert ((out == 0).sum(axis=(1, 2, 3)) == 9).all()
    noisy = av_digits._degrade_images(ones * 0.5, np.random.default_rng(0), noise=0.3, occlusion=0)
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0 and noisy.std() > 0.2


@needs_espeak
def test_shapes_split_and_normalisation(small: CentralDataset) -> None:
    ds = small
    assert ds.name == "av-digits" and ds.num_classes == 10
    assert [(m.name, m.kind, m.shape) for m in ds.modalities] == [
        ("image", "image", (1, 8, 8)),
        ("audio", "sequence", (80, 32)),
    ]
    assert len(ds.train) + len(ds.test) == 1797
    counts = np.bincount(np.concatenate([ds.train.labels, ds.test.labels]), minlength=10)
    np.testing.assert_array_equal(np.bincount(ds.test.labels, minlength=10), np.round(0.2 * counts))
    img = ds.train.features["image"]
    assert img.shape == (len(ds.train), 1, 8, 8) and img.min() >= 0.0 and img.max() <= 1.0
    audio = ds.train.features["audio"]
    np.testing.assert_allclose(audio.mean(axis=(0, 1)), 0.0, atol=1e-3)
    np.testing.assert_allclose(audio.std(axis=(0, 1)), 1.0, atol=1e-3)
    assert ds.metadata["utterances"] == 10


@needs_espeak
def test_deterministic_for_a_seed_and_cached(
    small: CentralDataset, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = list((cache_root / "av-digits").glob("speech-*.npz"))
    assert len(files) == 1 and not list((cache_root / "av-digits").glob("*.tmp"))
    _no_espeak(monkeypatch)  # the second load needs neither the binary nor a subprocess
    again = av_digits.load_central(seed=0, progress=False, **SMALL)
    other = av_digits.load_central(seed=1, progress=False, **SMALL)
    for m in ("image", "audio"):
        np.testing.assert_array_equal(small.train.features[m], again.train.features[m])
        np.testing.assert_array_equal(small.test.features[m], again.test.features[m])
        assert not np.array_equal(small.train.features[m][:50], other.train.features[m][:50])
    np.testing.assert_array_equal(small.test.labels, again.test.labels)
    assert not np.array_equal(small.test.labels, other.test.labels)


@needs_espeak
def test_build_returns_cache_and_rebuilds(cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    real_run = subprocess.run

    def counting_run(cmd: list[str], **kwargs: Any) -> Any:
        calls.append(cmd)
        return real_run(cmd, **kwargs)

    monkeypatch.setattr(av_digits.subprocess, "run", counting_run)
    path = av_digits.build(progress=False, rebuild=True, **SMALL)
    assert path.parent == cache_root / "av-digits" and path.is_file()
    assert len(calls) == 10 and {c[c.index("-v") + 1] for c in calls} == {"en"}
    assert sorted(c[-1] for c in calls) == sorted(av_digits.DIGIT_WORDS)
    assert av_digits.build(progress=False, **SMALL) == path and len(calls) == 10  # reused
    other = av_digits.build(cache=cache_root, progress=False, voices=("en",), speeds=(160,), pitches=(40, 60))
    assert other != path and len(calls) == 30


@pytest.mark.integration
@needs_espeak
def test_default_modalities_are_unequal_and_complementary() -> None:
    """The documented difficulty (see the module docstring): image > audio, both > image."""
    acc = av_digits._measure(seed=0)
    assert acc["image only"] > acc["audio only"] + 0.1
    assert acc["image+audio"] > acc["image only"] + 0.03
