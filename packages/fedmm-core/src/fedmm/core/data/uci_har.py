"""uci-har: the UCI "Human Activity Recognition Using Smartphones" data set from a local folder.

Source: Anguita et al., 2013 (UCI ML repository, "UCI HAR Dataset.zip"). fedmm never downloads it;
pass the unzipped ``UCI HAR Dataset/`` folder (or the folder that contains it) as ``path``.
The layout read is::

    UCI HAR Dataset/
        activity_labels.txt                       (optional: "1 WALKING" …)
        train/y_train.txt                         one label 1..6 per line
        train/subject_train.txt                   one subject id per line
        train/Inertial Signals/total_acc_{x,y,z}_train.txt   each line: 128 floats
        train/Inertial Signals/body_acc_{x,y,z}_train.txt
        train/Inertial Signals/body_gyro_{x,y,z}_train.txt
        test/…  (same with _test)

Each line of a signal file is one 2.56 s window (128 samples at 50 Hz, 50 % overlap) of one axis.
Modalities: ``acc`` ``(128, 3)`` and ``gyro`` ``(128, 3)`` (kind ``sequence``). ``acc`` is the
*total* acceleration by default (gravity included: it is what a phone measures, and the gravity
direction is what separates sitting/standing/laying); ``acc_source="body"`` selects the
gravity-free body acceleration instead. ``gyro`` is ``body_gyro``. Labels 1..6 become classes
0..5; ``train_groups`` is the subject id of each training window (21 train / 9 test subjects).
Channels are standardised with training statistics unless ``standardize=False``;
``window_norm=True`` instead z-scores each window's channels by their own mean and std (eps
1e-5), FedMultimodal's preprocessing (no statistics shared across windows, so none leak from
the training split).

Malformed input raises :class:`~fedmm.core.errors.DataFileError` naming the file and the 1-based
line: missing files, a line without exactly 128 values, a non-numeric token, a label outside 1..6,
or files of one split that disagree in their number of lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from fedmm.core.arguments import choice
from fedmm.core.data.cache import read_text
from fedmm.core.data.hapt import CLASS_NAMES  # the same six UCI activities
from fedmm.core.data.types import CentralDataset, ModalitySpec, SampleSet
from fedmm.core.data.windows import window_normalize
from fedmm.core.errors import DataFileError

NAME = "uci-har"
WINDOW = 128
AXES = ("x", "y", "z")


def resolve_root(root: str | Path) -> Path:
    """The ``UCI HAR Dataset`` folder: ``root`` itself or its child of that name."""
    base = Path(root).expanduser()
    for cand in (base, base / "UCI HAR Dataset"):
        if (cand / "train").is_dir() and (cand / "test").is_dir():
            return cand
    raise DataFileError(
        base,
        "not a UCI HAR Dataset folder: expected train/ and test/ in it or in 'UCI HAR Dataset/' below it "
        "(download and unzip 'UCI HAR Dataset.zip' from the UCI ML repository)",
    )


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataFileError(path, "missing file (part of the UCI HAR Dataset layout)")
    text = read_text(path, "ascii", "numeric file")
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # tolerate trailing blank lines only
        lines.pop()
    return lines


def read_matrix(path: Path, width: int = WINDOW) -> np.ndarray:
    """A signal file as ``(lines, width)`` float32; exact file/line errors on malformed content."""
    lines = _read_lines(path)
    tokens: list[str] = []
    for i, line in enumerate(lines, start=1):
        parts = line.split()
        if len(parts) != width:
            raise DataFileError(path, f"expected {width} values, found {len(parts)}", i)
        tokens.extend(parts)
    try:
        flat = np.array(tokens, dtype=np.float64)  # one vectorised parse; on failure find the line
    except ValueError:
        for i, line in enumerate(lines, start=1):
            for tok in line.split():
                try:
                    float(tok)
                except ValueError:
                    raise DataFileError(path, f"non-numeric value {tok!r}", i) from None
        raise
    if not np.all(np.isfinite(flat)):
        bad = int(np.flatnonzero(~np.isfinite(flat))[0]) // width + 1
        raise DataFileError(path, "non-finite value (nan/inf)", bad)
    return flat.reshape(len(lines), width).astype(np.float32)


def read_ints(path: Path, low: int | None = None, high: int | None = None) -> np.ndarray:
    """A one-integer-per-line file (labels, subjects), optionally range-checked."""
    lines = _read_lines(path)
    out = np.empty(len(lines), dtype=np.int64)
    for i, line in enumerate(lines, start=1):
        parts = line.split()
        if len(parts) != 1:
            raise DataFileError(path, f"expected one integer, found {len(parts)} values", i)
        try:
            v = int(parts[0])
        except ValueError:
            raise DataFileError(path, f"not an integer: {parts[0]!r}", i) from None
        if (low is not None and v < low) or (high is not None and v > high):
            raise DataFileError(path, f"value {v} outside [{low}, {high}]", i)
        out[i - 1] = v
    return out


def _check_rows(path: Path, rows: int, ref_path: Path, ref_rows: int) -> None:
    if rows != ref_rows:
        raise DataFileError(
            path,
            f"has {rows} lines but {ref_path.name} has {ref_rows}; files of a split must align",
            min(rows, ref_rows) + 1,
        )


def read_split(
    root: Path, split: Literal["train", "test"], acc_source: Literal["total", "body"] = "total"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One split: acc ``(N, 128, 3)``, gyro ``(N, 128, 3)``, labels 1..6 ``(N,)``, subjects ``(N,)``."""
    d = root / split
    y_path, s_path = d / f"y_{split}.txt", d / f"subject_{split}.txt"
    labels = read_ints(y_path, 1, len(CLASS_NAMES))
    subjects = read_ints(s_path, 1, None)
    _check_rows(s_path, subjects.size, y_path, labels.size)
    sig = d / "Inertial Signals"

    def stack(prefix: str) -> np.ndarray:
        chans = []
        for axis in AXES:
            p = sig / f"{prefix}_{axis}_{split}.txt"
            m = read_matrix(p)
            _check_rows(p, m.shape[0], y_path, labels.size)
            chans.append(m)
        return np.stack(chans, axis=-1)

    acc = stack("total_acc" if acc_source == "total" else "body_acc")
    gyro = stack("body_gyro")
    return acc, gyro, labels, subjects


def _class_names(root: Path) -> tuple[str, ...]:
    """Names from ``activity_labels.txt`` when present (lower-cased), else the standard ones."""
    path = root / "activity_labels.txt"
    if not path.is_file():
        return CLASS_NAMES
    names = list(CLASS_NAMES)
    for i, line in enumerate(_read_lines(path), start=1):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or not 1 <= int(parts[0]) <= len(CLASS_NAMES):
            raise DataFileError(path, "expected '<id 1..6> <NAME>'", i)
        names[int(parts[0]) - 1] = parts[1].lower()
    return tuple(names)


def load_central(
    path: str | Path,
    *,
    acc_source: Literal["total", "body"] = "total",
    standardize: bool = True,
    window_norm: bool = False,
) -> CentralDataset:
    """Load UCI-HAR from ``path``, the ``UCI HAR Dataset/`` folder or its parent (see the module doc).

    ``window_norm`` replaces ``standardize``'s training statistics by each window's own.
    """
    choice("uci-har", "acc_source", acc_source, ("total", "body"))  # before any file is read
    base = resolve_root(path)
    tr_acc, tr_gyro, tr_y, tr_s = read_split(base, "train", acc_source)
    te_acc, te_gyro, te_y, te_s = read_split(base, "test", acc_source)
    if window_norm:
        tr_acc, te_acc, tr_gyro, te_gyro = map(window_normalize, (tr_acc, te_acc, tr_gyro, te_gyro))
    elif standardize:
        for tr, te in ((tr_acc, te_acc), (tr_gyro, te_gyro)):
            mean = tr.mean(axis=(0, 1), keepdims=True, dtype=np.float64)
            std = tr.std(axis=(0, 1), keepdims=True, dtype=np.float64) + 1e-6
            tr -= mean
            tr /= std
            te -= mean
            te /= std
    modalities = (
        ModalitySpec(
            "acc", (WINDOW, 3), "sequence", f"{acc_source} acceleration x/y/z (g), 50 Hz, 2.56 s windows"
        ),
        ModalitySpec("gyro", (WINDOW, 3), "sequence", "body angular velocity x/y/z (rad/s), 50 Hz"),
    )
    meta: dict[str, Any] = {
        "source": str(base),
        "acc_source": acc_source,
        "normalisation": "window" if window_norm else ("train" if standardize else "none"),
        "train_subjects": sorted(int(s) for s in np.unique(tr_s)),
        "test_subjects": sorted(int(s) for s in np.unique(te_s)),
    }
    return CentralDataset(
        name=NAME,
        modalities=modalities,
        num_classes=len(CLASS_NAMES),
        train=SampleSet(modalities, {"acc": tr_acc, "gyro": tr_gyro}, tr_y - 1),
        test=SampleSet(modalities, {"acc": te_acc, "gyro": te_gyro}, te_y - 1),
        class_names=_class_names(base),
        train_groups=tr_s,
        metadata=meta,
    )
