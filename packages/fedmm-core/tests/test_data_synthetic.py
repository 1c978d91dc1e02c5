"""synthetic: known informativeness, determinism, and speed/memory at millions of samples."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fedmm.core.data import synthetic
from fedmm.core.data.synthetic import SyntheticModality, class_centroids, make_synthetic
from fedmm.core.errors import DataError


def _nearest_centroid_accuracy(x: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    means = np.stack([x[y == c].mean(axis=0) for c in range(num_classes)])
    pred = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    return float((pred == y).mean())


def test_shapes_dtypes_and_split() -> None:
    ds = make_synthetic(1000, num_classes=4, modalities=[("a", 3, 1.0), ("b", 5, 0.2)], test_samples=250)
    assert [m.name for m in ds.modalities] == ["a", "b"] and ds.modalities[1].shape == (5,)
    assert len(ds.train) == 1000 and len(ds.test) == 250 and ds.num_classes == 4
    assert ds.train.features["a"].dtype == np.float32 and ds.train.features["b"].shape == (1000, 5)
    assert ds.train.labels.dtype == np.int64 and set(np.unique(ds.train.labels)) == {0, 1, 2, 3}
    assert ds.metadata["informativeness"] == {"a": 1.0, "b": 0.2}
    assert len(make_synthetic(100).test) == 20  # default: a fifth of num_samples


def test_deterministic_for_a_seed() -> None:
    a, b = make_synthetic(500, seed=7), make_synthetic(500, seed=7)
    c = make_synthetic(500, seed=8)
    np.testing.assert_array_equal(a.train.features["a"], b.train.features["a"])
    np.testing.assert_array_equal(a.test.labels, b.test.labels)
    assert not np.array_equal(a.train.features["a"], c.train.features["a"])
    dataclass_mods = [SyntheticModality("a", 8, 1.0), SyntheticModality("b", 8, 0.5)]
    d = make_synthetic(500, seed=7, modalities=dataclass_mods)
    np.testing.assert_array_equal(a.train.features["b"], d.train.features["b"])
    assert synthetic.load_central(num_samples=500, seed=7).train.labels.tolist() == a.train.labels.tolist()


def test_informativeness_controls_the_signal() -> None:
    mods = [("full", 8, 1.0), ("half", 8, 0.5), ("none", 8, 0.0)]
    ds = make_synthetic(20_000, num_classes=5, modalities=mods, noise=1.0, seed=1)
    x, y = ds.train.features, ds.train.labels
    # Class means are informativeness × centroid (the ground truth).
    mu = class_centroids(5, mods, seed=1)
    for name, inf in (("full", 1.0), ("half", 0.5)):
        means = np.stack([x[name][y == c].mean(axis=0) for c in range(5)])
        np.testing.assert_allclose(means, inf * mu[name], atol=0.06)
    np.testing.assert_allclose(np.linalg.norm(mu["full"], axis=1), 3.0, rtol=1e-5)
    # informativeness 0: pure N(0, noise²) noise, independent of the label.
    for c in range(5):
        assert np.abs(x["none"][y == c].mean(axis=0)).max() < 0.06
    np.testing.assert_allclose(x["none"].std(axis=0), 1.0, atol=0.03)
    accs = [
        _nearest_centroid_accuracy(ds.test.features[n], ds.test.labels, 5) for n in ("full", "half", "none")
    ]
    assert accs[0] > accs[1] + 0.15 and accs[1] > accs[2] + 0.15 and abs(accs[2] - 0.2) < 0.05


def test_noise_scales_the_spread() -> None:
    quiet = make_synthetic(5000, modalities=[("a", 4, 0.0)], noise=0.1)
    np.testing.assert_allclose(quiet.train.features["a"].std(axis=0), 0.1, rtol=0.05)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"modalities": [("a", 4, 1.5)]},
        {"modalities": [("a", 0, 0.5)]},
        {"modalities": []},
        {"num_classes": 1},
        {"noise": -1.0},
    ],
)
def test_invalid_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(DataError):
        make_synthetic(100, **kwargs)  # type: ignore[arg-type]


def test_four_million_samples_build_fast() -> None:
    start = time.perf_counter()
    ds = make_synthetic(4_000_000, modalities=[("a", 8, 1.0), ("b", 8, 0.5)], test_samples=1000)
    elapsed = time.perf_counter() - start
    assert len(ds.train) == 4_000_000
    # float32 features, no copies: 2 × 4M × 8 × 4 bytes + labels + presence mask.
    assert ds.train.nbytes <= 2 * 4_000_000 * 8 * 4 + 4_000_000 * (8 + 2)
    assert ds.train.features["a"].base is not None  # a view of the generated block, not a copy
    assert elapsed < 15.0, f"took {elapsed:.1f} s"
