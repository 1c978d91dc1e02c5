"""ku-har: the KU-HAR smartphone activity data set from a local folder (accelerometer + gyroscope).

Source: Sikder & Nahid, "KU-HAR: An open dataset for heterogeneous human activity recognition",
Pattern Recognition Letters 2021; Mendeley Data ``45f952y38r``. fedmm never downloads it: pass
the folder holding ``Trimmed_interpolated_data`` (unzipped ``2.Trimmed_interpolated_data.zip``)
as ``path``. The layout read is::

    Trimmed_interpolated_data/          (also accepted: 2.Trimmed_interpolated_data/)
        0.Stand/1001_A_1.csv            one folder per activity, "<class id>.<name>"; one file per
        1.Sit/…                         recording "<subject>_<activity code>_<trial>.csv"
        …

Each file has no header and 8 comma-separated columns per row, 100 Hz: accelerometer time,
x, y, z (m/s²), gyroscope time, x, y, z (rad/s). Read as FedMultimodal reads it: the signals are
taken every ``downsample``-th row (2: 50 Hz), cut into ``window``-step windows (128, 2.56 s) with
``stride`` (default: the window, no overlap), and each window's channels are z-scored by their
own statistics (``window_norm``, on by default). ``classes="fedmultimodal"`` keeps
FedMultimodal's 8 activities (stand, sit, walk, lay, jump, run, stair-up, stair-down, as classes
0–7 in that order); ``"all"`` keeps every activity folder found, ordered by class id. Subject
1101 is left out, as FedMultimodal does (``exclude_subjects``).

Modalities: ``acc`` and ``gyro``, ``(window, 3)``, kind ``sequence``. Natural split by subject:
subjects sorted by id are cut into 5 contiguous folds; fold ``test_fold`` (0–4) is the test set
(FedMultimodal's first fold), the others train, and ``train_groups`` holds each training
window's subject.

Malformed input raises :class:`~fedmm.core.errors.DataFileError` naming the file and, within a
file, the 1-based line: an activity folder not named ``<id>.<name>``, a file name not
``<subject>_<code>_<trial>.csv``, a row without 8 values, a non-numeric value.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fedmm.core.arguments import choice, integer
from fedmm.core.console import bar
from fedmm.core.data.cache import read_text
from fedmm.core.data.types import CentralDataset, ModalitySpec, SampleSet
from fedmm.core.data.windows import window_normalize
from fedmm.core.errors import DataError, DataFileError

NAME = "ku-har"
FOLDERS = ("Trimmed_interpolated_data", "2.Trimmed_interpolated_data")
COLUMNS = 8
SAMPLE_RATE_HZ = 100
# FedMultimodal's 8 activities, by KU-HAR folder name, in their class order.
FEDMULTIMODAL_CLASSES: tuple[str, ...] = (
    "0.Stand",
    "1.Sit",
    "11.Walk",
    "5.Lay",
    "8.Jump",
    "14.Run",
    "15.Stair-up",
    "16.Stair-down",
)
FOLDS = 5
_CLASS_DIR = re.compile(r"^(\d+)\.(.+)$")
_FILE = re.compile(r"^(\d+)_([A-Za-z0-9]+)_(\d+)\.csv$")


def resolve_root(root: str | Path) -> Path:
    """The ``Trimmed_interpolated_data`` folder: ``root``'s child of that name, or ``root`` itself."""
    base = Path(root).expanduser()
    for cand in (*(base / f for f in FOLDERS), *(base / f / f for f in FOLDERS)):
        if cand.is_dir():
            return cand
    if base.is_dir() and any(_CLASS_DIR.match(p.name) for p in base.iterdir() if p.is_dir()):
        return base
    raise DataFileError(
        base,
        "not a KU-HAR folder: expected Trimmed_interpolated_data/ (from 2.Trimmed_interpolated_data.zip) "
        "with one '<id>.<activity>' folder per class (download KU-HAR from Mendeley Data, 45f952y38r)",
    )


def read_recording(path: Path) -> np.ndarray:
    """One recording file as ``(rows, 6)`` float32: acc x/y/z, gyro x/y/z (the time columns dropped)."""
    lines = read_text(path, "ascii", "CSV file").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    out = np.empty((len(lines), 6), dtype=np.float32)
    for i, line in enumerate(lines, start=1):
        parts = line.split(",")
        if len(parts) != COLUMNS:
            raise DataFileError(path, f"expected {COLUMNS} comma-separated values, found {len(parts)}", i)
        try:
            values = [float(parts[k]) for k in (1, 2, 3, 5, 6, 7)]
        except ValueError:
            bad = next(t for t in parts if not _is_number(t))
            raise DataFileError(path, f"non-numeric value {bad.strip()!r}", i) from None
        if not all(np.isfinite(values)):
            raise DataFileError(path, "non-finite value (nan/inf)", i)
        out[i - 1] = values
    return out


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _class_folders(root: Path, classes: str) -> list[tuple[str, Path]]:
    """The chosen activity folders in class order, each with its activity name (lower case)."""
    found: dict[str, tuple[int, str, Path]] = {}  # folder name -> (class id, activity, folder)
    for p in sorted(root.iterdir()):
        if not p.is_dir():
            continue
        m = _CLASS_DIR.match(p.name)
        if m is None:
            raise DataFileError(p, "activity folder must be named '<class id>.<activity>', e.g. '0.Stand'")
        found[p.name] = (int(m.group(1)), m.group(2).lower(), p)
    if classes == "fedmultimodal":
        missing = [c for c in FEDMULTIMODAL_CLASSES if c not in found]
        if missing:
            raise DataFileError(
                root, f"missing activity folder(s) {missing} (classes='fedmultimodal' needs them)"
            )
        chosen = [found[c] for c in FEDMULTIMODAL_CLASSES]
    else:
        chosen = sorted(found.values(), key=lambda f: f[0])
    return [(activity, folder) for _, activity, folder in chosen]


def load_central(
    path: str | Path,
    *,
    classes: Literal["fedmultimodal", "all"] = "fedmultimodal",
    window: int = 128,
    stride: int | None = None,
    downsample: int = 2,
    test_fold: int = 0,
    exclude_subjects: tuple[int, ...] = (1101,),
    window_norm: bool = True,
    progress: bool = True,
) -> CentralDataset:
    """Load KU-HAR from ``path`` (see the module docstring)."""
    choice(NAME, "classes", classes, ("fedmultimodal", "all"))
    integer(NAME, "window", window, low=2)
    step = integer(NAME, "stride", stride, low=1) if stride is not None else window
    integer(NAME, "downsample", downsample, low=1)
    integer(NAME, "test_fold", test_fold, low=0, high=FOLDS - 1)
    root = resolve_root(path)
    folders = _class_folders(root, classes)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    subjects: list[np.ndarray] = []
    files = [(k, f) for k, (_, folder) in enumerate(folders) for f in sorted(folder.glob("*.csv"))]
    if not files:
        raise DataFileError(root, "no recording files (*.csv) in the activity folders")
    for k, f in bar(files, enabled=progress, desc="ku-har: reading recordings", leave=False):
        m = _FILE.match(f.name)
        if m is None:
            raise DataFileError(
                f, "file name must be '<subject>_<activity code>_<trial>.csv', e.g. '1001_A_1.csv'"
            )
        subject = int(m.group(1))
        if subject in exclude_subjects:
            continue
        sig = read_recording(f)[::downsample]
        if sig.shape[0] < window:
            continue
        starts = np.arange(0, sig.shape[0] - window + 1, step)
        xs.append(sig[starts[:, None] + np.arange(window)[None, :]])
        ys.append(np.full(starts.size, k, dtype=np.int64))
        subjects.append(np.full(starts.size, subject, dtype=np.int64))
    if not xs:
        raise DataError(
            f"ku-har: no recording in {root} is {window} steps long after downsampling by {downsample}"
        )
    x, y, subj = np.concatenate(xs), np.concatenate(ys), np.concatenate(subjects)
    if window_norm:
        x = window_normalize(x)
    ids = np.unique(subj)  # sorted
    if len(ids) < FOLDS:
        raise DataError(f"ku-har: {len(ids)} subjects cannot form {FOLDS} subject folds")
    folds = np.array_split(ids, FOLDS)
    test = np.isin(subj, folds[test_fold])
    modalities = (
        ModalitySpec(
            "acc", (window, 3), "sequence", f"accelerometer x/y/z (m/s²), {SAMPLE_RATE_HZ // downsample} Hz"
        ),
        ModalitySpec(
            "gyro", (window, 3), "sequence", f"gyroscope x/y/z (rad/s), {SAMPLE_RATE_HZ // downsample} Hz"
        ),
    )

    def subset(mask: np.ndarray) -> SampleSet:
        return SampleSet(modalities, {"acc": x[mask, :, :3], "gyro": x[mask, :, 3:]}, y[mask])

    meta: dict[str, Any] = {
        "source": str(root),
        "classes": classes,
        "window": window,
        "stride": step,
        "sample_rate_hz": SAMPLE_RATE_HZ // downsample,
        "test_fold": test_fold,
        "test_subjects": [int(s) for s in folds[test_fold]],
        "train_subjects": sorted(int(s) for s in np.unique(subj[~test])),
        "normalisation": "window" if window_norm else "none",
    }
    return CentralDataset(
        name=NAME,
        modalities=modalities,
        num_classes=len(folders),
        train=subset(~test),
        test=subset(test),
        class_names=tuple(activity for activity, _ in folders),
        train_groups=subj[~test],
        metadata=meta,
    )
