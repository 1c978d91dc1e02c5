"""uci-har: the real UCI HAR Dataset file layout, written small into tmp_path."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from fedmm.core.data import uci_har
from fedmm.core.errors import DataFileError

TRAIN_SUBJECTS = [1, 1, 3, 3, 5, 5]
TRAIN_LABELS = [1, 2, 3, 4, 5, 6]
TEST_SUBJECTS = [2, 9, 24]
TEST_LABELS = [6, 1, 4]
SIGNALS = [f"{kind}_{axis}" for kind in ("body_acc", "body_gyro", "total_acc") for axis in "xyz"]


def _signal(split: str, name: str, rows: int) -> np.ndarray:
    seed = zlib.crc32(f"{split}/{name}".encode())  # stable across processes, unlike hash()
    return np.random.default_rng(seed).standard_normal((rows, 128)).astype(np.float32)


def _write_matrix(path: Path, m: np.ndarray) -> None:
    # The real files: two leading spaces, values like " 1.0180800e+000", one window per line.
    lines = ["".join(f" {v: .7e}".replace("e+0", "e+00").replace("e-0", "e-00") for v in row) for row in m]
    path.write_text("\n".join(" " + ln for ln in lines) + "\n")


def _write(root: Path) -> Path:
    ds = root / "UCI HAR Dataset"
    (ds / "activity_labels.txt").parent.mkdir(parents=True)
    (ds / "activity_labels.txt").write_text(
        "1 WALKING\n2 WALKING_UPSTAIRS\n3 WALKING_DOWNSTAIRS\n4 SITTING\n5 STANDING\n6 LAYING\n"
    )
    for split, subj, lab in (("train", TRAIN_SUBJECTS, TRAIN_LABELS), ("test", TEST_SUBJECTS, TEST_LABELS)):
        sig = ds / split / "Inertial Signals"
        sig.mkdir(parents=True)
        (ds / split / f"y_{split}.txt").write_text("".join(f"{v}\n" for v in lab))
        (ds / split / f"subject_{split}.txt").write_text("".join(f"{v}\n" for v in subj))
        for name in SIGNALS:
            _write_matrix(sig / f"{name}_{split}.txt", _signal(split, name, len(lab)))
    return ds


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return _write(tmp_path)


def test_loads_shapes_labels_groups(root: Path) -> None:
    ds = uci_har.load_central(root, standardize=False)
    assert [m.name for m in ds.modalities] == ["acc", "gyro"]
    assert ds.train.features["acc"].shape == (6, 128, 3) and ds.test.features["gyro"].shape == (3, 128, 3)
    assert ds.train.labels.tolist() == [v - 1 for v in TRAIN_LABELS]
    assert ds.test.labels.tolist() == [v - 1 for v in TEST_LABELS]
    assert ds.train_groups is not None and ds.train_groups.tolist() == TRAIN_SUBJECTS
    assert ds.class_names == (
        "walking",
        "walking_upstairs",
        "walking_downstairs",
        "sitting",
        "standing",
        "laying",
    )
    # acc = total_acc by default, gyro = body_gyro; axes in x, y, z order; values parsed exactly.
    for axis, k in zip("xyz", range(3), strict=True):
        np.testing.assert_allclose(
            ds.train.features["acc"][:, :, k], _signal("train", f"total_acc_{axis}", 6), rtol=1e-6
        )
        np.testing.assert_allclose(
            ds.test.features["gyro"][:, :, k], _signal("test", f"body_gyro_{axis}", 3), rtol=1e-6
        )
    body = uci_har.load_central(root, acc_source="body", standardize=False)
    np.testing.assert_allclose(
        body.train.features["acc"][:, :, 1], _signal("train", "body_acc_y", 6), rtol=1e-6
    )


def test_accepts_parent_folder_and_standardises(root: Path) -> None:
    ds = uci_har.load_central(root.parent)
    acc = ds.train.features["acc"]
    np.testing.assert_allclose(acc.mean(axis=(0, 1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(acc.std(axis=(0, 1)), 1.0, atol=1e-4)
    assert ds.metadata["test_subjects"] == [2, 9, 24]


def test_window_norm_zscores_each_window_with_its_own_statistics(root: Path) -> None:
    ds = uci_har.load_central(root, acc_source="body", window_norm=True)
    raw = _signal("train", "body_acc_x", 6)
    want = (raw - raw.mean(axis=1, keepdims=True)) / (raw.std(axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(ds.train.features["acc"][:, :, 0], want, rtol=1e-4, atol=1e-5)
    assert ds.metadata["normalisation"] == "window"


def test_not_a_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="not a UCI HAR Dataset folder"):
        uci_har.load_central(tmp_path)


def _replace_line(path: Path, line: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = new
    path.write_text("\n".join(lines) + "\n")


def test_wrong_number_of_values_names_file_and_line(root: Path) -> None:
    path = root / "train" / "Inertial Signals" / "body_gyro_y_train.txt"
    _replace_line(path, 2, " ".join(["1.0"] * 127))
    with pytest.raises(
        DataFileError, match=r"body_gyro_y_train\.txt, line 2: expected 128 values, found 127"
    ) as e:
        uci_har.load_central(root)
    assert e.value.line == 2 and Path(str(e.value.path)) == path


def test_non_numeric_token_names_file_and_line(root: Path) -> None:
    path = root / "test" / "Inertial Signals" / "total_acc_z_test.txt"
    _replace_line(path, 3, " ".join(["0.5"] * 60 + ["abc"] + ["0.5"] * 67))
    with pytest.raises(DataFileError, match=r"total_acc_z_test\.txt, line 3: non-numeric value 'abc'"):
        uci_har.load_central(root)


def test_line_count_mismatch(root: Path) -> None:
    path = root / "train" / "Inertial Signals" / "total_acc_x_train.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:4]) + "\n")
    with pytest.raises(
        DataFileError, match=r"total_acc_x_train\.txt, line 5: has 4 lines but y_train\.txt has 6"
    ):
        uci_har.load_central(root)
    (root / "test" / "subject_test.txt").write_text("2\n9\n24\n24\n")
    with pytest.raises(DataFileError, match=r"subject_test\.txt, line 4: has 4 lines but y_test\.txt has 3"):
        uci_har.read_split(root, "test")


def test_bad_label_and_missing_file(root: Path) -> None:
    _replace_line(root / "train" / "y_train.txt", 4, "7")
    with pytest.raises(DataFileError, match=r"y_train\.txt, line 4: value 7 outside \[1, 6\]"):
        uci_har.load_central(root)
    _replace_line(root / "train" / "y_train.txt", 4, "4")
    (root / "test" / "Inertial Signals" / "body_gyro_x_test.txt").unlink()
    with pytest.raises(DataFileError, match=r"body_gyro_x_test\.txt: missing file"):
        uci_har.load_central(root)


def test_non_ascii_byte_names_file_and_line(root: Path) -> None:
    path = root / "train" / "y_train.txt"
    lines = path.read_bytes().split(b"\n")
    lines[3] = b"\xe9"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(
        DataFileError, match=r"y_train\.txt, line 4: numeric file has a byte that is not ascii"
    ):
        uci_har.load_central(root)
