"""Checkpoints: safetensors for arrays, JSON for everything else, written atomically.

Layout of ``<dir>/``: ``round-000010/`` folders (``model.safetensors``, ``state.safetensors``,
``state.json``) and a ``LATEST`` file naming the newest complete one. A folder is written under
a temporary name and renamed when complete, and ``LATEST`` is replaced atomically, so a run killed
mid-write leaves the previous checkpoint intact. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from fedmm.core.arrays import GroupedArrays
from fedmm.core.errors import CheckpointError

ARRAY_TAG = "__array__"


def split_arrays(tree: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    """Replace every numpy array in a nested dict/list by a reference and collect it in ``arrays``."""
    if isinstance(tree, np.ndarray):
        arrays[prefix] = np.ascontiguousarray(tree)
        return {ARRAY_TAG: prefix}
    if isinstance(tree, Mapping):
        for key in tree:
            if not isinstance(key, str) or "|" in key:
                raise CheckpointError(f"state key {key!r} at {prefix!r} must be a string without '|'")
        return {k: split_arrays(v, f"{prefix}|{k}", arrays) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [split_arrays(v, f"{prefix}|{i}", arrays) for i, v in enumerate(tree)]
    if isinstance(tree, np.generic):
        return tree.item()
    return tree


def join_arrays(tree: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {ARRAY_TAG}:
            return arrays[tree[ARRAY_TAG]]
        return {k: join_arrays(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [join_arrays(v, arrays) for v in tree]
    return tree


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save(
    directory: str | os.PathLike[str],
    round_: int,
    global_arrays: GroupedArrays,
    state: Mapping[str, Any],
    keep: int = 2,
) -> Path:
    """Write the checkpoint of ``round_`` (global weights + any nested state with arrays)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"round-{round_:06d}"
    tmp = root / f".tmp-round-{round_:06d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    flat = {f"{g}|{k}": np.ascontiguousarray(v) for g, t in global_arrays.items() for k, v in t.items()}
    save_file(flat, str(tmp / "model.safetensors"), metadata={"round": str(round_)})
    arrays: dict[str, np.ndarray] = {}
    tree = split_arrays(dict(state), "s", arrays)
    save_file(arrays, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"round": round_, "state": tree}, allow_nan=True))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _atomic_write_text(root / "LATEST", final.name)
    for old in sorted(root.glob("round-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(directory: str | os.PathLike[str]) -> Path | None:
    pointer = Path(directory) / "LATEST"
    if not pointer.exists():
        return None
    path = Path(directory) / pointer.read_text().strip()
    return path if path.exists() else None


def load(path: str | os.PathLike[str]) -> tuple[int, GroupedArrays, dict[str, Any]]:
    """Read a checkpoint folder (or a checkpoint root, taking its latest): (round, arrays, state)."""
    path = Path(path)
    if (path / "LATEST").exists():
        found = latest(path)
        if found is None:
            raise CheckpointError(f"{path}: LATEST names a checkpoint that does not exist")
        path = found
    needed = [path / n for n in ("model.safetensors", "state.safetensors", "state.json")]
    missing = [p.name for p in needed if not p.exists()]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {missing}")
    try:
        flat = load_file(str(needed[0]))
        arrays = load_file(str(needed[1]))
        meta = json.loads(needed[2].read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from exc
    grouped: GroupedArrays = {}
    for key, value in flat.items():
        group, _, name = key.partition("|")
        grouped.setdefault(group, {})[name] = value
    return int(meta["round"]), grouped, join_arrays(meta["state"], arrays)
