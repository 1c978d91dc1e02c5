"""The restricted unpickler: numpy arrays and recorded pandas frames in, everything else refused."""

from __future__ import annotations

import copyreg
import gzip
import io
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedmm.core.data.safe_pickle import (
    RecordedObject,
    frame_columns,
    index_values,
    safe_load,
    safe_load_path,
)
from fedmm.core.errors import DataFileError


class _RunsShell:
    """A classic malicious payload: unpickling it would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class _Popen:
    def __reduce__(self) -> tuple[Any, ...]:
        return (subprocess.Popen, (["true"],))


class _Eval:
    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_accepts_numpy_arrays(protocol: int) -> None:
    arrays = [
        np.arange(12, dtype=np.float64).reshape(3, 4),
        np.arange(6, dtype=np.int64).reshape(2, 3).T,  # non-contiguous
        np.array(["acc-x", "label"], dtype=object),
        np.array([1.5, -2.0], dtype=np.float32),
    ]
    out = safe_load(io.BytesIO(pickle.dumps({"k": arrays, "s": slice(0, 6, 1)}, protocol=protocol)))
    assert out["s"] == slice(0, 6, 1)
    for a, b in zip(arrays, out["k"], strict=True):
        assert isinstance(b, np.ndarray)
        assert b.dtype == a.dtype and b.shape == a.shape
        np.testing.assert_array_equal(a, b)


def test_refuses_os_system_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_RunsShell(marker), protocol=2)
    with pytest.raises(DataFileError, match=r"refusing to unpickle global (os|posix|nt)\.system") as err:
        safe_load(io.BytesIO(payload), path="evil.pkl")
    assert "evil.pkl" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("obj", [_Popen(), _Eval()])
def test_refuses_other_callables(obj: object) -> None:
    with pytest.raises(DataFileError, match="refusing to unpickle global"):
        safe_load(io.BytesIO(pickle.dumps(obj)))


def test_refuses_unlisted_pandas_and_numpy_names() -> None:
    for module, name in [("pandas.io.pickle", "read_pickle"), ("numpy", "load"), ("builtins", "getattr")]:
        payload = f"c{module}\n{name}\n.".encode()
        with pytest.raises(DataFileError, match=f"{module}.{name}"):
            safe_load(io.BytesIO(payload))


def test_reconstructor_only_builds_stubs() -> None:
    # copyreg._reconstructor(numpy.ndarray, object, None): allowed globals, forbidden combination.
    payload = b"ccopy_reg\n_reconstructor\n(cnumpy\nndarray\nc__builtin__\nobject\nNtR."
    with pytest.raises(DataFileError, match="_reconstructor"):
        safe_load(io.BytesIO(payload))


def test_codecs_encode_only_latin1() -> None:
    ok = b"c_codecs\nencode\n(Vab\nVlatin1\ntR."
    assert safe_load(io.BytesIO(ok)) == b"ab"
    bad = b"c_codecs\nencode\n(Vab\nVrot13\ntR."
    with pytest.raises(DataFileError, match="rot13"):
        safe_load(io.BytesIO(bad))


def test_truncated_and_not_gzip(tmp_path: Path) -> None:
    data = pickle.dumps(np.arange(10), protocol=2)
    with pytest.raises(DataFileError, match="malformed pickle"):
        safe_load(io.BytesIO(data[:-5]), path="cut.pkl")
    bogus = tmp_path / "bogus.pkl.gz"
    bogus.write_bytes(b"not gzip at all")
    with pytest.raises(DataFileError, match=r"bogus\.pkl\.gz"):
        safe_load_path(bogus)


# -- an old-pandas-style DataFrame pickle, produced without pandas -------------------------------


def _fake_pandas(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Fake ``pandas`` modules so that pickle emits the same globals as a pandas 0.2x DataFrame."""
    mods: dict[str, types.ModuleType] = {}
    for name in ("pandas", "pandas.core", "pandas.core.frame", "pandas.core.internals",
                 "pandas.core.internals.managers", "pandas.core.indexes", "pandas.core.indexes.base",
                 "pandas.core.indexes.range"):  # fmt: skip
        mods[name] = types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, mods[name])

    def make(module: str, name: str) -> type:
        cls = type(name, (), {"__module__": module, "__qualname__": name})
        setattr(mods[module], name, cls)
        return cls

    frame_cls = make("pandas.core.frame", "DataFrame")
    manager_cls = make("pandas.core.internals.managers", "BlockManager")
    index_cls = make("pandas.core.indexes.base", "Index")
    range_cls = make("pandas.core.indexes.range", "RangeIndex")

    def _new_Index(cls: type, d: dict[str, Any]) -> None:  # only pickled by reference
        raise AssertionError("never called")

    _new_Index.__module__ = "pandas.core.indexes.base"
    _new_Index.__qualname__ = "_new_Index"
    mods["pandas.core.indexes.base"]._new_Index = _new_Index  # type: ignore[attr-defined]
    return {
        "frame": frame_cls,
        "manager": manager_cls,
        "index": index_cls,
        "range": range_cls,
        "new": _new_Index,
    }


class _Obj:
    def __init__(self, reduce: tuple[Any, ...]) -> None:
        self._reduce = reduce

    def __reduce__(self) -> tuple[Any, ...]:
        return self._reduce


def _frame_pickle(fake: dict[str, Any], floats: np.ndarray, ints: np.ndarray) -> bytes:
    cols = np.array(["acc-x", "acc-y", "sequence", "label"], dtype=object)
    n = floats.shape[1]
    columns = _Obj((fake["new"], (fake["index"], {"data": cols, "name": None})))
    rows = _Obj((fake["new"], (fake["range"], {"name": None, "start": 0, "stop": n, "step": 1})))
    blocks = [{"values": floats, "mgr_locs": slice(0, 2, 1)}, {"values": ints, "mgr_locs": slice(2, 4, 1)}]
    state: tuple[Any, ...] = (
        [columns, rows],
        [floats, ints],
        [],
        {"0.14.1": {"axes": [columns, rows], "blocks": blocks}},
    )
    manager = _Obj((copyreg._reconstructor, (fake["manager"], object, None), state))  # type: ignore[attr-defined]
    frame = _Obj(
        (
            copyreg._reconstructor,  # type: ignore[attr-defined]
            (fake["frame"], object, None),
            {"_data": manager, "_typ": "dataframe", "_metadata": [], "attrs": {}},
        )
    )
    return pickle.dumps({1: [frame]}, protocol=2)


def test_recovers_dataframe_columns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = _fake_pandas(monkeypatch)
    floats = np.random.default_rng(0).standard_normal((2, 7))
    ints = np.stack([np.arange(7), np.array([-1, 1, 1, 1, 2, 2, 2])])
    path = tmp_path / "frames.pkl.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(_frame_pickle(fake, floats, ints))
    monkeypatch.undo()  # the loader must not need the fake modules

    data = safe_load_path(path)
    frame = data[1][0]
    assert isinstance(frame, RecordedObject) and frame.pandas_name == "DataFrame"
    cols = frame_columns(frame, path)
    assert list(cols) == ["acc-x", "acc-y", "sequence", "label"]
    np.testing.assert_array_equal(cols["acc-x"], floats[0])
    np.testing.assert_array_equal(cols["acc-y"], floats[1])
    np.testing.assert_array_equal(cols["label"], ints[1])
    axes = frame.state["_data"].state[0]
    np.testing.assert_array_equal(index_values(axes[1]), np.arange(7))


def test_frame_columns_rejects_other_objects() -> None:
    with pytest.raises(DataFileError, match="expected a DataFrame"):
        frame_columns({"not": "a frame"}, "x.pkl")
