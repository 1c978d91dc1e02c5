"""ptb-xl and ku-har: small folders in the real layouts (WFDB records written by `wfdb`, KU-HAR's
headerless 8-column CSVs), read back; malformed input named by file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmm.core.data import ku_har, ptbxl
from fedmm.core.data.registry import available, federate, load_central
from fedmm.core.errors import ArgumentError, ConfigError, DataError, DataFileError

wfdb = pytest.importorskip("wfdb")

LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
# ecg_id, site, fold, scp_codes: two sites train, fold 10 tests; one record with two superclasses,
# one with only a 50 % code, one without a site.
RECORDS = [
    (1, 0, 1, "{'NORM': 100.0, 'SR': 0.0}"),
    (2, 0, 2, "{'IMI': 100.0}"),
    (3, 0, 3, "{'NDT': 100.0}"),
    (4, 1, 4, "{'LVH': 100.0}"),
    (5, 1, 5, "{'NORM': 100.0}"),
    (6, 1, 6, "{'IMI': 100.0, 'LVH': 100.0}"),
    (7, 1, 7, "{'IMI': 50.0}"),
    (8, None, 8, "{'NORM': 100.0}"),
    (9, 2, 9, "{'NORM': 100.0}"),
    (10, 0, 10, "{'NDT': 100.0}"),
    (11, 1, 10, "{'NORM': 100.0}"),
]


def _signal(ecg_id: int, steps: int = 100) -> np.ndarray:
    rng = np.random.default_rng(ecg_id)
    return (rng.standard_normal((steps, 12)) * 0.5 + np.arange(12) * 0.1).round(3)


def _write_ptbxl(root: Path, lengths: dict[int, int] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "scp_statements.csv").write_text(
        ",description,diagnostic,form,rhythm,diagnostic_class,diagnostic_subclass\n"
        "NORM,normal ECG,1.0,,,NORM,NORM\n"
        "IMI,inferior MI,1.0,,,MI,IMI\n"
        "NDT,non-diagnostic T,1.0,1.0,,STTC,STTC\n"
        "LVH,left ventricular hypertrophy,1.0,,,HYP,LVH\n"
        "SR,sinus rhythm,,,1.0,,\n"
    )
    lines = ["ecg_id,patient_id,site,scp_codes,strat_fold,filename_lr,filename_hr"]
    for ecg_id, site, fold, codes in RECORDS:
        name = f"records100/00000/{ecg_id:05d}_lr"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        wfdb.wrsamp(
            f"{ecg_id:05d}_lr",
            fs=100,
            units=["mV"] * 12,
            sig_name=LEADS,
            p_signal=_signal(ecg_id, (lengths or {}).get(ecg_id, 100)),
            fmt=["16"] * 12,
            write_dir=str((root / name).parent),
        )
        site_txt = "" if site is None else f"{site}.0"
        lines.append(f'{ecg_id},{ecg_id + 100},{site_txt},"{codes}",{fold},{name},records500/x_hr')
    (root / "ptbxl_database.csv").write_text("\n".join(lines) + "\n")
    return root


def test_ptbxl_reads_leads_superclasses_sites_and_folds(tmp_path: Path) -> None:
    root = _write_ptbxl(tmp_path / "ptb-xl-1.0.3")
    ds = ptbxl.load_central(tmp_path, min_site_records=1, window_norm=False, progress=False)  # parent folder
    assert [m.name for m in ds.modalities] == ["limb", "chest"]
    assert ds.train.features["limb"].shape == (len(ds.train), 100, 6)
    # Train: ids 1-5 (single superclass, with a site) and 9; test: 10 and 11. Left out: 6 (two
    # superclasses), 7 (a 50 % code only), 8 (no site).
    assert ds.train.labels.tolist() == [0, 1, 2, 4, 0, 0]
    assert ds.test.labels.tolist() == [2, 0]
    assert ds.train_groups is not None and ds.train_groups.tolist() == [0, 0, 0, 1, 1, 2]
    meta = ds.metadata
    assert meta["left_out_several_superclasses"] == 1 and meta["left_out_no_superclass"] == 1
    assert meta["left_out_small_or_no_site"] == 1
    np.testing.assert_allclose(ds.train.features["chest"][1], _signal(2)[:, 6:], atol=1e-3)
    np.testing.assert_allclose(ds.test.features["limb"][0], _signal(10)[:, :6], atol=1e-3)
    # FedMultimodal's rule: sites with fewer than 10 training records do not train; here that is all.
    with pytest.raises(DataFileError, match="empty train or test"):
        ptbxl.load_central(root, progress=False)
    normed = ptbxl.load_central(root, min_site_records=2, progress=False)
    assert normed.train_groups is not None and set(normed.train_groups.tolist()) == {0, 1}
    np.testing.assert_allclose(normed.train.features["limb"].mean(axis=1), 0.0, atol=1e-4)
    # Through the registry, federated by site.
    data = load_central("ptb-xl", path=root, min_site_records=2, progress=False)
    assert federate(data, clients=None, partition="natural").num_clients == 2
    assert "ptb-xl" in available() and "ku-har" in available()


def test_ptbxl_names_the_file_and_line_of_bad_input(tmp_path: Path) -> None:
    root = _write_ptbxl(tmp_path / "p")
    db = root / "ptbxl_database.csv"
    good = db.read_text()
    lines = good.splitlines()
    lines[3] = lines[3].replace("{'NDT': 100.0}", "__import__('os')")
    db.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match=r"ptbxl_database.csv.*line 4.*scp_codes"):
        ptbxl.load_central(root, min_site_records=1, progress=False)
    lines = good.splitlines()
    lines[2] = lines[2].replace(",2,records100", ",12,records100")
    db.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match=r"line 3.*strat_fold"):
        ptbxl.load_central(root, min_site_records=1, progress=False)
    db.write_text(good.replace("strat_fold", "fold"))
    with pytest.raises(DataFileError, match=r"line 1.*strat_fold"):
        ptbxl.load_central(root, min_site_records=1, progress=False)
    db.write_text(good)
    (root / "records100/00000/00003_lr.hea").unlink()
    with pytest.raises(DataFileError, match=r"00003_lr.hea.*missing record header"):
        ptbxl.load_central(root, min_site_records=1, progress=False)
    with pytest.raises(DataFileError, match="not a PTB-XL folder"):
        ptbxl.load_central(tmp_path / "nowhere")
    with pytest.raises(ArgumentError, match="sampling_rate"):
        ptbxl.load_central(root, sampling_rate=250)  # type: ignore[arg-type]


def test_ptbxl_refuses_records_of_unequal_length(tmp_path: Path) -> None:
    root = _write_ptbxl(tmp_path / "p", lengths={2: 90})
    with pytest.raises(DataFileError, match="unequal lengths"):
        ptbxl.load_central(root, min_site_records=1, progress=False)


# -- KU-HAR -------------------------------------------------------------------------------------
def _recording(rows: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    t = np.arange(rows) / 100.0
    acc, gyro = rng.standard_normal((rows, 3)), rng.standard_normal((rows, 3))
    return "".join(
        f"{t[i]:.4f},{acc[i, 0]:.5f},{acc[i, 1]:.5f},{acc[i, 2]:.5f},"
        f"{t[i]:.4f},{gyro[i, 0]:.5f},{gyro[i, 1]:.5f},{gyro[i, 2]:.5f}\n"
        for i in range(rows)
    )


def _write_kuhar(root: Path, subjects: tuple[int, ...] = (1001, 1002, 1003, 1004, 1005, 1101)) -> Path:
    base = root / "Trimmed_interpolated_data"
    codes = {c: chr(ord("A") + i) for i, c in enumerate(ku_har.FEDMULTIMODAL_CLASSES)}
    for folder in (*ku_har.FEDMULTIMODAL_CLASSES, "2.Talk-sit"):
        (base / folder).mkdir(parents=True)
        for s in subjects:
            code = codes.get(folder, "C")
            (base / folder / f"{s}_{code}_1.csv").write_text(_recording(600, s))
    return base


def test_kuhar_windows_classes_and_subject_folds(tmp_path: Path) -> None:
    _write_kuhar(tmp_path)
    ds = ku_har.load_central(tmp_path, progress=False)
    # 600 rows at 100 Hz → 300 at 50 Hz → two 128-step windows per recording (no overlap).
    assert ds.num_classes == 8 and ds.class_names[2] == "walk"
    assert ds.train.features["acc"].shape[1:] == (128, 3)
    assert len(ds.train) + len(ds.test) == 5 * 8 * 2  # subject 1101 left out
    assert ds.metadata["test_subjects"] == [1001]  # 5 subjects, 5 folds: fold 0 is the first
    assert ds.train_groups is not None and sorted(set(ds.train_groups.tolist())) == [1002, 1003, 1004, 1005]
    np.testing.assert_allclose(ds.train.features["gyro"].std(axis=1), 1.0, atol=1e-3)  # window_norm
    raw = ku_har.load_central(tmp_path, window_norm=False, progress=False, test_fold=4)
    first = raw.train.features["acc"][0]
    rows = np.loadtxt(tmp_path / "Trimmed_interpolated_data/0.Stand/1001_A_1.csv", delimiter=",")
    np.testing.assert_allclose(first, rows[::2][:128, 1:4], atol=1e-5)
    every = ku_har.load_central(tmp_path, classes="all", progress=False)
    assert every.num_classes == 9 and every.class_names[2] == "talk-sit"  # ordered by class id


def test_kuhar_names_the_file_and_line_of_bad_input(tmp_path: Path) -> None:
    base = _write_kuhar(tmp_path)
    f = base / "1.Sit/1002_B_1.csv"
    lines = f.read_text().splitlines()
    lines[6] = lines[6].rsplit(",", 1)[0]
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match=r"1002_B_1.csv.*line 7.*8 comma-separated"):
        ku_har.load_central(tmp_path, progress=False)
    lines[6] = "0.1,abc,1,1,0.1,1,1,1"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match=r"line 7.*non-numeric value 'abc'"):
        ku_har.load_central(tmp_path, progress=False)
    f.unlink()
    (base / "1.Sit/notes.csv").write_text("x\n")
    with pytest.raises(DataFileError, match=r"notes.csv.*<subject>_<activity code>_<trial>"):
        ku_har.load_central(tmp_path, progress=False)
    (base / "1.Sit/notes.csv").unlink()
    (base / "misc").mkdir()
    with pytest.raises(DataFileError, match=r"misc.*<class id>.<activity>"):
        ku_har.load_central(tmp_path, progress=False)
    with pytest.raises(DataFileError, match="not a KU-HAR folder"):
        ku_har.load_central(tmp_path / "nowhere")
    with pytest.raises(ArgumentError, match="test_fold"):
        ku_har.load_central(tmp_path, test_fold=5)


def test_loader_options_are_checked_before_reading(tmp_path: Path) -> None:
    from fedmm.core.data.options import option_problems

    assert option_problems("ku-har", {"path": str(tmp_path), "clases": "all"})
    assert option_problems("ptb-xl", {"path": str(tmp_path), "sampling_rate": 250})
    assert not option_problems("ptb-xl", {"path": str(tmp_path), "sampling_rate": 500})
    with pytest.raises((ConfigError, DataError)):
        load_central("ku-har", path=str(tmp_path / "none"))
