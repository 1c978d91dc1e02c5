"""ptb-xl: the PTB-XL 12-lead ECG data set from a local folder, as two modalities.

Source: Wagner et al., "PTB-XL, a large publicly available electrocardiography dataset",
Scientific Data 2020; PhysioNet (``physionet.org/content/ptb-xl/1.0.3``). fedmm never downloads
it: pass the unzipped folder as ``path``. The layout read is::

    ptbxl_database.csv      one row per record: ecg_id, patient_id, ..., site, ..., scp_codes
                            (a dict literal such as "{'NORM': 100.0, 'SR': 0.0}"), strat_fold
                            (1..10), filename_lr (records100/…), filename_hr (records500/…)
    scp_statements.csv      one row per SCP code (first column), with diagnostic (1 or empty)
                            and diagnostic_class (NORM, MI, STTC, CD, HYP)
    records100/00000/00001_lr.hea + .dat    WFDB records, 10 s at 100 Hz (records500: 500 Hz)

Read as FedMultimodal reads it: modalities ``limb`` (leads I, II, III, aVR, aVL, aVF) and
``chest`` (V1–V6), each ``(T, 6)`` (``T`` = 1000 at 100 Hz), kind ``sequence``, each record's
leads z-scored by their own statistics (``window_norm``, on by default); a record's diagnostic
superclasses are those of its SCP codes of likelihood ≥ ``min_likelihood`` (FedMultimodal: 100)
that are diagnostic statements. The natural split is the recording ``site``: ``train_groups``
holds each training record's site, and sites with fewer than ``min_site_records`` training
records (FedMultimodal: 10) or no site are left out of training. ``test_fold`` (default 10, the
PTB-XL authors' recommendation) is the test set; the other folds train.

**Labels are single-label here.** fedmm's models classify one class per sample, while a PTB-XL
record can have several superclasses (FedMultimodal trains 5 binary outputs and reports macro-F1
over them). Records with exactly one superclass keep it as their class (``NORM`` 0, ``MI`` 1,
``STTC`` 2, ``CD`` 3, ``HYP`` 4); records with none or several are left out and counted in
``metadata`` (``left_out_no_superclass``, ``left_out_several_superclasses``). Figures on this
loader are therefore not FedMultimodal's PTB-XL figures.

Malformed input raises :class:`~fedmm.core.errors.DataFileError` naming the file and, for the
CSV files, the 1-based line: a missing column, a ``scp_codes`` that is not a dict of numbers, a
``strat_fold`` outside 1..10, a record file that is missing or unreadable, a record without the
12 standard leads, or records of unequal lengths.
"""

from __future__ import annotations

import ast
import csv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fedmm.core.arguments import integer, number
from fedmm.core.console import bar
from fedmm.core.data.types import CentralDataset, ModalitySpec, SampleSet
from fedmm.core.data.windows import window_normalize
from fedmm.core.errors import ArgumentError, DataFileError, MissingDependencyError

NAME = "ptb-xl"
SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")
LIMB_LEADS: tuple[str, ...] = ("I", "II", "III", "AVR", "AVL", "AVF")
CHEST_LEADS: tuple[str, ...] = ("V1", "V2", "V3", "V4", "V5", "V6")
DATABASE = "ptbxl_database.csv"
STATEMENTS = "scp_statements.csv"
_INSTALL_HINT = (
    "the ptb-xl dataset reads WFDB records with the PhysioNet `wfdb` package; install it with "
    '`pip install "fedmm-core[ptbxl]"` (or `pip install wfdb`)'
)


def resolve_root(root: str | Path) -> Path:
    """The PTB-XL folder: ``root`` itself or its one child holding ``ptbxl_database.csv``."""
    base = Path(root).expanduser()
    if (base / DATABASE).is_file():
        return base
    found = sorted(p.parent for p in base.glob(f"*/{DATABASE}")) if base.is_dir() else []
    if len(found) == 1:
        return found[0]
    raise DataFileError(
        base,
        f"not a PTB-XL folder: expected {DATABASE} and {STATEMENTS} in it or in one folder below it "
        "(download PTB-XL from physionet.org/content/ptb-xl and unzip it)",
    )


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Each CSV row with its 1-based line number; a missing column is named with the header line."""
    if not path.is_file():
        raise DataFileError(path, "missing file (part of the PTB-XL layout)")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise DataFileError(path, "empty file: expected a header line", 1) from None
        header = [h.strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise DataFileError(path, f"missing column(s) {missing} in the header", 1)
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise DataFileError(path, f"expected {len(header)} fields, found {len(row)}", reader.line_num)
            yield reader.line_num, dict(zip(header, row, strict=True))


def diagnostic_classes(path: Path) -> dict[str, str]:
    """SCP code → diagnostic superclass, for the codes ``scp_statements.csv`` marks diagnostic."""
    out: dict[str, str] = {}
    for line, row in _rows(path, ("diagnostic", "diagnostic_class")):
        code = next(iter(row.values())).strip()  # the first, unnamed column
        if row["diagnostic"].strip() not in ("", "0", "0.0", "1", "1.0"):
            raise DataFileError(path, f"diagnostic must be 1 or empty, got {row['diagnostic']!r}", line)
        if row["diagnostic"].strip() in ("1", "1.0"):
            cls = row["diagnostic_class"].strip()
            if cls not in SUPERCLASSES:
                raise DataFileError(
                    path, f"unknown diagnostic_class {cls!r}; expected one of {SUPERCLASSES}", line
                )
            out[code] = cls
    return out


def parse_scp_codes(text: str, path: Path, line: int) -> dict[str, float]:
    """A ``scp_codes`` cell, a dict literal of code → likelihood, read without evaluating code."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise DataFileError(path, f"scp_codes is not a dict literal: {text[:60]!r}", line) from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
        for k, v in value.items()
    ):
        raise DataFileError(path, f"scp_codes must map code strings to numbers: {text[:60]!r}", line)
    return {k: float(v) for k, v in value.items()}


def _read_record(root: Path, name: str, leads: tuple[str, ...]) -> np.ndarray:
    """One WFDB record's leads in ``leads`` order, ``(T, len(leads))`` float32."""
    try:
        import wfdb
    except ImportError:
        raise MissingDependencyError(_INSTALL_HINT) from None
    header = root / f"{name}.hea"
    if not header.is_file():
        raise DataFileError(header, "missing record header (the path comes from ptbxl_database.csv)")
    try:
        signal, fields = wfdb.rdsamp(str(root / name))
    except Exception as exc:  # wfdb raises many types on a malformed record
        raise DataFileError(header, f"unreadable WFDB record ({type(exc).__name__}: {exc})") from None
    names = [str(n).upper() for n in fields.get("sig_name", [])]
    absent = [lead for lead in leads if lead not in names]
    if absent:
        raise DataFileError(header, f"record lacks lead(s) {absent}; it has {names}")
    out = np.asarray(signal, dtype=np.float32)[:, [names.index(lead) for lead in leads]]
    return np.nan_to_num(out, nan=0.0)


def load_central(
    path: str | Path,
    *,
    sampling_rate: Literal[100, 500] = 100,
    test_fold: int = 10,
    min_site_records: int = 10,
    min_likelihood: float = 100.0,
    window_norm: bool = True,
    progress: bool = True,
) -> CentralDataset:
    """Load PTB-XL from ``path`` (see the module docstring)."""
    if isinstance(sampling_rate, bool) or sampling_rate not in (100, 500):
        raise ArgumentError(NAME, "sampling_rate", f"must be 100 or 500 (Hz), got {sampling_rate!r}")
    integer(NAME, "test_fold", test_fold, low=1, high=10)
    integer(NAME, "min_site_records", min_site_records, low=1)
    number(NAME, "min_likelihood", min_likelihood, low=0, high=100)
    root = resolve_root(path)
    classes = diagnostic_classes(root / STATEMENTS)
    column = "filename_lr" if sampling_rate == 100 else "filename_hr"
    db = root / DATABASE
    kept: list[tuple[str, int, int | None, bool]] = []  # filename, class, site, is_test
    none = several = 0
    for line, row in _rows(db, ("ecg_id", "scp_codes", "strat_fold", "site", column)):
        codes = parse_scp_codes(row["scp_codes"], db, line)
        try:
            fold = int(float(row["strat_fold"]))
        except ValueError:
            raise DataFileError(db, f"strat_fold is not a number: {row['strat_fold']!r}", line) from None
        if not 1 <= fold <= 10:
            raise DataFileError(db, f"strat_fold must lie in 1..10, got {fold}", line)
        supers = {classes[c] for c, p in codes.items() if c in classes and p >= min_likelihood}
        if not supers:
            none += 1
            continue
        if len(supers) > 1:
            several += 1
            continue
        site = row["site"].strip()
        site_id = None if site in ("", "nan") else int(float(site))
        kept.append((row[column].strip(), SUPERCLASSES.index(supers.pop()), site_id, fold == test_fold))
    counts = Counter(s for _, _, s, test in kept if not test and s is not None)
    use = [r for r in kept if r[3] or (r[2] is not None and counts[r[2]] >= min_site_records)]
    if not any(r[3] for r in use) or all(r[3] for r in use):
        raise DataFileError(db, f"test_fold={test_fold} leaves an empty train or test split")
    limb: list[np.ndarray] = []
    chest: list[np.ndarray] = []
    for name, _, _, _ in bar(use, enabled=progress, desc="ptb-xl: reading records", leave=False):
        both = _read_record(root, name, LIMB_LEADS + CHEST_LEADS)
        limb.append(both[:, :6])
        chest.append(both[:, 6:])
    lengths = {x.shape[0] for x in limb}
    if len(lengths) != 1:
        raise DataFileError(
            root / column.replace("filename_", "records"), f"records of unequal lengths {sorted(lengths)}"
        )
    x_limb, x_chest = np.stack(limb), np.stack(chest)
    if window_norm:
        x_limb, x_chest = window_normalize(x_limb), window_normalize(x_chest)
    labels = np.array([r[1] for r in use], dtype=np.int64)
    test = np.array([r[3] for r in use])
    steps = lengths.pop()
    modalities = (
        ModalitySpec(
            "limb", (steps, 6), "sequence", f"limb leads I, II, III, aVR, aVL, aVF (mV), {sampling_rate} Hz"
        ),
        ModalitySpec("chest", (steps, 6), "sequence", f"chest leads V1-V6 (mV), {sampling_rate} Hz"),
    )

    def subset(mask: np.ndarray) -> SampleSet:
        return SampleSet(modalities, {"limb": x_limb[mask], "chest": x_chest[mask]}, labels[mask])

    sites = np.array([r[2] for r in use if not r[3]], dtype=np.int64)
    meta: dict[str, Any] = {
        "source": str(root),
        "sampling_rate_hz": sampling_rate,
        "test_fold": test_fold,
        "train_sites": sorted(int(s) for s in np.unique(sites)),
        "left_out_no_superclass": none,
        "left_out_several_superclasses": several,
        "left_out_small_or_no_site": len(kept) - len(use),
        "normalisation": "window" if window_norm else "none",
        "labels": "single superclass (records with none or several left out)",
    }
    return CentralDataset(
        name=NAME,
        modalities=modalities,
        num_classes=len(SUPERCLASSES),
        train=subset(~test),
        test=subset(test),
        class_names=tuple(c.lower() for c in SUPERCLASSES),
        train_groups=sites,
        metadata=meta,
    )
