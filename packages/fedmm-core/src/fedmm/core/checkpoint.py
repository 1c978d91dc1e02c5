"""Checkpoints: safetensors for arrays, JSON for everything else, written atomically, checksummed.

Layout of ``<dir>/``: ``round-000010/`` folders (``model.safetensors``, ``state.safetensors``,
``state.json`` and ``manifest.json``: the sha256 of each of the three, written last) and a
``LATEST`` file naming the newest complete one. A folder is written under a temporary name and
renamed when complete, and ``LATEST`` is replaced atomically, so a run killed mid-write leaves the
previous checkpoint intact. Reading verifies every file against the manifest; a truncated or
changed file is a :class:`CheckpointError` naming it. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from fedmm.core.arrays import GroupedArrays, contiguous
from fedmm.core.errors import CheckpointError

ARRAY_TAG = "__array__"
MANIFEST = "manifest.json"
FILES = ("model.safetensors", "state.safetensors", "state.json")
_ROUND_DIR = re.compile(r"round-(\d+)")

log = logging.getLogger("fedmm")


def split_arrays(tree: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    """Replace every numpy array in a nested dict/list by a reference and collect it in ``arrays``."""
    if isinstance(tree, np.ndarray):
        arrays[prefix] = contiguous(tree)
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


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    _fsync(tmp)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def round_folders(directory: str | os.PathLike[str]) -> dict[int, Path]:
    """The ``round-N`` checkpoint folders under ``directory``, by round (ascending)."""
    root = Path(directory)
    if not root.is_dir():
        return {}
    found: dict[int, Path] = {}
    for child in root.iterdir():
        match = _ROUND_DIR.fullmatch(child.name)
        if match and child.is_dir():
            found[int(match.group(1))] = child
    return dict(sorted(found.items()))


def save(
    directory: str | os.PathLike[str],
    round_: int,
    global_arrays: GroupedArrays,
    state: Mapping[str, Any],
    keep: int = 2,
) -> Path:
    """Write the checkpoint of ``round_`` (global weights + any nested state with arrays).

    Keeps the ``keep`` highest rounds at or below ``round_``, so the checkpoint just written is
    always kept; folders of higher rounds (left by another run) are not touched.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"round-{round_:06d}"
    tmp = root / f".tmp-round-{round_:06d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    flat = {f"{g}|{k}": contiguous(v) for g, t in global_arrays.items() for k, v in t.items()}
    save_file(flat, str(tmp / "model.safetensors"), metadata={"round": str(round_)})
    arrays: dict[str, np.ndarray] = {}
    tree = split_arrays(dict(state), "s", arrays)
    save_file(arrays, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"round": round_, "state": tree}, allow_nan=True))
    sums = {}
    for name in FILES:
        _fsync(tmp / name)
        sums[name] = _sha256(tmp / name)
    # Written last: a folder whose manifest is there is complete.
    _atomic_write_text(tmp / MANIFEST, json.dumps({"round": round_, "sha256": sums}, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _atomic_write_text(root / "LATEST", final.name)
    kept_rounds = [path for r, path in round_folders(root).items() if r <= round_]
    for old in kept_rounds[: -max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _pointer(root: Path) -> tuple[Path | None, str | None]:
    """(the folder ``LATEST`` names, or None; what is wrong with ``LATEST``, or None)."""
    pointer = root / "LATEST"
    if not pointer.exists():
        return None, None
    try:
        name = pointer.read_bytes().decode("utf-8").strip()
    except UnicodeDecodeError:
        return None, f"{pointer}: not UTF-8 text (it holds a folder name such as round-000012)"
    except OSError as exc:
        return None, f"{pointer}: unreadable ({exc.strerror})"
    if _ROUND_DIR.fullmatch(name) is None:
        return None, f"{pointer} holds {name[:40]!r}, not a checkpoint folder name such as round-000012"
    if not (root / name).is_dir():
        return None, f"{pointer} names {name}, which does not exist"
    return root / name, None


def latest(directory: str | os.PathLike[str]) -> Path | None:
    """The folder ``LATEST`` names; None when ``LATEST`` is missing, unreadable or names no folder."""
    return _pointer(Path(directory))[0]


@dataclass(frozen=True)
class Resumable:
    """The checkpoint a resumed run continues from, and each newer one skipped with its reason."""

    path: Path
    round: int
    skipped: tuple[str, ...]


def _newest(root: Path) -> tuple[Resumable, tuple[int, GroupedArrays, dict[str, Any]]]:
    named, problem = _pointer(root)
    skipped = [problem] if problem else []
    # LATEST names the newest checkpoint of this run; a higher round is another run's leftover.
    limit = int(named.name.removeprefix("round-")) if named is not None else None
    for round_, path in reversed(round_folders(root).items()):
        if limit is not None and round_ > limit:
            continue
        try:
            loaded = _read(path)
        except CheckpointError as exc:
            skipped.append(str(exc))
            continue
        return Resumable(path, loaded[0], tuple(skipped)), loaded
    if not skipped:
        raise CheckpointError(f"{root}: no checkpoint to resume from")
    raise CheckpointError(f"no valid checkpoint in {root}: " + "; ".join(skipped))


def newest_valid(directory: str | os.PathLike[str]) -> Resumable:
    """The newest checkpoint under ``directory`` that reads back whole and matches its checksums.

    That is the one ``LATEST`` names, else the highest round below it (any round when ``LATEST``
    is missing or broken); ``skipped`` says which newer ones were passed over and why. Raises
    :class:`CheckpointError` naming every problem when there is no valid checkpoint.
    """
    return _newest(Path(directory))[0]


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def _verify(path: Path) -> None:
    """Check each file against the sha256 in the folder's manifest (checkpoints written before
    checksums have none and are only checked by reading them)."""
    manifest = path / MANIFEST
    if not manifest.exists():
        return
    try:
        sums = json.loads(manifest.read_bytes().decode("utf-8"))["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{manifest}: unreadable ({type(exc).__name__}: {exc})") from None
    for name in FILES:
        expected = sums.get(name) if isinstance(sums, dict) else None
        if not isinstance(expected, str):
            raise CheckpointError(f"{manifest}: records no sha256 for {name}")
        if _sha256(path / name) != expected:
            raise CheckpointError(
                f"{path / name}: does not match the sha256 recorded in {MANIFEST} "
                "(the file is truncated or was changed after the checkpoint was written)"
            )


def _read(path: Path) -> tuple[int, GroupedArrays, dict[str, Any]]:
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    _verify(path)
    model_file, state_file, json_file = (path / name for name in FILES)
    flat = _load_safetensors(model_file)
    arrays = _load_safetensors(state_file)
    try:
        meta = json.loads(json_file.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{json_file}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{json_file}: not a checkpoint's state (a JSON object with 'round' and 'state')"
        )
    round_ = meta.get("round")
    if not isinstance(round_, int) or isinstance(round_, bool):
        raise CheckpointError(f"{json_file}: has no whole-number 'round'")
    if not isinstance(meta.get("state"), dict):
        raise CheckpointError(f"{json_file}: has no 'state' object")
    named = _ROUND_DIR.fullmatch(path.name)
    if named is not None and int(named.group(1)) != round_:
        raise CheckpointError(f"{json_file}: is of round {round_}, but its folder is {path.name}")
    try:
        state = join_arrays(meta["state"], arrays)
    except KeyError as exc:
        raise CheckpointError(f"{json_file}: refers to array {exc}, which {state_file.name} lacks") from None
    grouped: GroupedArrays = {}
    for key, value in flat.items():
        group, _, name = key.partition("|")
        grouped.setdefault(group, {})[name] = value
    return round_, grouped, state


def load(path: str | os.PathLike[str]) -> tuple[int, GroupedArrays, dict[str, Any]]:
    """Read a checkpoint folder, or a checkpoint root's newest valid one: (round, arrays, state).

    A root's newer checkpoints that fail to read are skipped with a logged warning.
    """
    path = Path(path)
    if not (path / "LATEST").exists() and not round_folders(path):
        return _read(path)
    found, loaded = _newest(path)
    for problem in found.skipped:
        log.warning("skipped checkpoint: %s", problem)
    return loaded
