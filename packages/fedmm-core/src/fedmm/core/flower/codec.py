"""fedmm's round data as Flower records, and back.

Everything a hook passes between server and client crosses as Flower records: parameter groups
as an ``ArrayRecord`` (key ``"<group>|<tensor key>"``), plans, reports and costs as JSON text in a
``ConfigRecord`` whose numpy arrays travel beside it in an ``ArrayRecord``. Flower serialises
arrays with ``np.save(allow_pickle=False)``, and our JSON carries no code, so nothing a peer sends
is ever unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedmm.core.arrays import GroupedArrays, contiguous
from fedmm.core.errors import UpdateError

SEP = "|"


def arrays_to_record(arrays: Mapping[str, Mapping[str, np.ndarray]]) -> ArrayRecord:
    """Grouped arrays → one ArrayRecord (order kept)."""
    items: dict[str, Array] = {}
    for group, tensors in arrays.items():
        for key, value in tensors.items():
            items[f"{group}{SEP}{key}"] = Array(contiguous(value))
    return ArrayRecord(items)


def record_to_arrays(record: ArrayRecord) -> GroupedArrays:
    """ArrayRecord → grouped arrays; a malformed key is a bad update."""
    out: GroupedArrays = {}
    for name, array in record.items():
        group, sep, key = name.partition(SEP)
        if not sep:
            raise UpdateError(f"array {name!r} is not named '<group>{SEP}<key>'")
        out.setdefault(group, {})[key] = array.numpy()
    return out


# -- nested values (reports, plan extras, costs): JSON text + an ArrayRecord of their arrays --------
_ND = "__ndarray__"
_MAP = "__mapping__"


def _encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        name = str(len(arrays))
        arrays[name] = value
        return {_ND: name}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value) and _ND not in value and _MAP not in value:
            return {k: _encode(v, arrays) for k, v in value.items()}
        # Non-string keys (client ids, modality tuples) survive as a list of pairs.
        return {_MAP: [[_encode(k, arrays), _encode(v, arrays)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return [_encode(v, arrays) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot send a {type(value).__name__} over Flower (use arrays and JSON-able values)")


def _decode(value: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if _ND in value and len(value) == 1:
            return arrays[value[_ND]]
        if _MAP in value and len(value) == 1:
            return {_hashable(_decode(k, arrays)): _decode(v, arrays) for k, v in value[_MAP]}
        return {k: _decode(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    return value


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def pack(content: RecordDict, name: str, value: Any) -> None:
    """Put a nested value (dicts, lists, numpy arrays, JSON scalars) into ``content`` as ``name``."""
    arrays: dict[str, np.ndarray] = {}
    text = json.dumps(_encode(value, arrays))
    content[name] = ConfigRecord({"json": text})
    if arrays:
        content[name + ".arrays"] = ArrayRecord({k: Array(contiguous(v)) for k, v in arrays.items()})


def unpack(content: RecordDict, name: str) -> Any:
    record = content.config_records.get(name)
    if record is None:
        raise UpdateError(f"message lacks its {name!r} record")
    arrays_record = content.array_records.get(name + ".arrays")
    arrays = {k: a.numpy() for k, a in arrays_record.items()} if arrays_record is not None else {}
    try:
        return _decode(json.loads(str(record["json"])), arrays)
    except (KeyError, ValueError) as exc:
        raise UpdateError(f"record {name!r} is malformed: {exc}") from None


def content_bytes(content: RecordDict) -> int:
    """Payload bytes of a message's records as Flower sends them (array buffers as serialised by
    Flower, config/metric values by their encoded size)."""
    total = 0
    for record in content.values():
        if isinstance(record, ArrayRecord):
            total += sum(len(a.data) for a in record.values())
        elif isinstance(record, ConfigRecord | MetricRecord):
            for key, value in record.items():
                total += len(key.encode())
                values = value if isinstance(value, list) else [value]
                for v in values:
                    total += len(v.encode()) if isinstance(v, str) else len(v) if isinstance(v, bytes) else 8
    return total


__all__ = ["arrays_to_record", "content_bytes", "contiguous", "pack", "record_to_arrays", "unpack"]
