"""Per-window preprocessing shared by the sensor loaders (``hapt``, ``uci-har``)."""

from __future__ import annotations

import numpy as np

WINDOW_NORM_EPS = 1e-5  # FedMultimodal's: (x - mean) / (std + 1e-5)


def window_normalize(x: np.ndarray) -> np.ndarray:
    """Z-score each window's channels over its time steps: ``x`` ``(N, T, C)`` → float32 ``(N, T, C)``.

    No statistic is shared across windows, so nothing leaks from one split into another.
    """
    mean = x.mean(axis=1, keepdims=True, dtype=np.float64)
    std = x.std(axis=1, keepdims=True, dtype=np.float64)
    return ((x - mean) / (std + WINDOW_NORM_EPS)).astype(np.float32)
