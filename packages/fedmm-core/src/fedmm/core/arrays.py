"""Plain data that crosses between server and client: named numpy arrays per parameter group.

``GroupedArrays`` = ``{group: {state_dict_key: ndarray}}``. Only this (plus JSON-able config and
metric dicts) crosses, so a round runs the same in-process or over Flower's messages, and the
ledger counts the real bytes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from fedmm.core.errors import UpdateError

GroupedArrays = dict[str, dict[str, np.ndarray]]


def contiguous(value: np.ndarray) -> np.ndarray:
    """``value`` as a C-contiguous array of the same shape (a copy only where needed)."""
    # Not np.ascontiguousarray: it turns 0-d arrays (a BatchNorm batch counter, a CLIP logit
    # scale, Adam's step) into 1-d ones.
    value = np.asarray(value)
    return value if value.flags.c_contiguous else value.copy(order="C")


def model_groups(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """The model's parameter groups (``parameter_groups()`` if it has one, else one group per top module)."""
    groups = getattr(model, "parameter_groups", None)
    if groups is not None:
        return groups()
    found: dict[str, list[str]] = {}
    for key in model.state_dict():
        found.setdefault(key.split(".")[0], []).append(key)
    return {g: tuple(k) for g, k in found.items()}


def get_arrays(model: nn.Module, groups: Iterable[str] | None = None) -> GroupedArrays:
    """Copy the model's tensors of ``groups`` (all if None) into numpy arrays."""
    state = model.state_dict(keep_vars=False)
    all_groups = model_groups(model)
    chosen = all_groups if groups is None else {g: all_groups[g] for g in groups}
    return {g: {k: state[k].detach().cpu().numpy().copy() for k in keys} for g, keys in chosen.items()}


def set_arrays(model: nn.Module, arrays: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """Copy ``arrays`` into the model's tensors in place (no reallocation)."""
    state = model.state_dict(keep_vars=True)
    with torch.no_grad(), warnings.catch_warnings():
        # A read-only array (the server's global arrays as hooks see them) is only read here.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for group in arrays.values():
            for key, value in group.items():
                state[key].copy_(torch.from_numpy(np.asarray(value)))


def read_only(arrays: Mapping[str, Mapping[str, np.ndarray]]) -> GroupedArrays:
    """Read-only views of ``arrays`` (no copy): what a hook is given of the server's state, so
    that writing into it raises instead of silently changing the global model."""
    out: GroupedArrays = {}
    for group, tensors in arrays.items():
        views: dict[str, np.ndarray] = {}
        for key, value in tensors.items():
            view = np.asarray(value).view()
            view.flags.writeable = False
            views[key] = view
        out[group] = views
    return out


def nbytes(arrays: Mapping[str, Mapping[str, np.ndarray]]) -> int:
    """Bytes of the arrays as they are sent (their buffer sizes)."""
    return int(sum(a.nbytes for group in arrays.values() for a in group.values()))


def validate_update(
    update: Mapping[str, Mapping[str, np.ndarray]], reference: Mapping[str, Mapping[str, np.ndarray]]
) -> None:
    """Raise :class:`UpdateError` unless every group and array matches ``reference`` and is finite."""
    for group, tensors in update.items():
        if group not in reference:
            raise UpdateError(f"update has unknown parameter group {group!r}")
        ref = reference[group]
        if set(tensors) != set(ref):
            raise UpdateError(
                f"group {group!r}: keys {sorted(set(tensors) ^ set(ref))} differ from the global model's"
            )
        for key, value in tensors.items():
            if not isinstance(value, np.ndarray):
                raise UpdateError(f"{key}: expected a numpy array, got {type(value).__name__}")
            if value.shape != ref[key].shape:
                raise UpdateError(f"{key}: shape {value.shape} differs from the global {ref[key].shape}")
            if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                raise UpdateError(f"{key}: contains NaN or Inf")


def weighted_mean(
    updates: Sequence[Mapping[str, Mapping[str, np.ndarray]]],
    weights: Sequence[float],
    previous: Mapping[str, Mapping[str, np.ndarray]],
) -> GroupedArrays:
    """Per-group weighted mean over the updates that carry the group.

    Weights are renormalised per group over its uploaders, so clients that upload different
    subsets of groups are averaged correctly; a group nobody uploaded keeps ``previous``
    bit-exactly. Non-float arrays (counters) take the first uploader's value.
    """
    if len(updates) != len(weights):
        raise ValueError("one weight per update is needed")
    out: GroupedArrays = {g: dict(t) for g, t in previous.items()}
    for group, ref in previous.items():
        carriers = [(u[group], float(w)) for u, w in zip(updates, weights, strict=True) if group in u]
        total = sum(w for _, w in carriers)
        if not carriers or total <= 0:
            continue
        merged: dict[str, np.ndarray] = {}
        for key, ref_arr in ref.items():
            if not np.issubdtype(ref_arr.dtype, np.floating):
                merged[key] = carriers[0][0][key].copy()
                continue
            acc = np.zeros(ref_arr.shape, dtype=np.float64)
            for arrays, w in carriers:
                # float64 product: a Python float times a float32 array would round in float32.
                acc += (w / total) * np.asarray(arrays[key], dtype=np.float64)
            merged[key] = acc.astype(ref_arr.dtype)
        out[group] = merged
    return out
