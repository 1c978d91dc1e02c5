"""synthetic: Gaussian class clusters in M modalities with known, controllable informativeness.

For tests and scale benchmarks where the ground truth must be known. Every class ``c`` has, in each
modality ``m``, a random centroid ``mu[m, c]`` of norm ``separation`` (a normalised Gaussian draw),
and a sample of class ``y`` is::

    x_m = informativeness_m * mu[m, y] + noise * eps,    eps ~ N(0, I)

so ``informativeness = 0`` makes a modality pure noise (independent of the label) and
``informativeness = 1`` gives the full ``separation``. Labels are uniform over the classes.

Generation is vectorised, in float32 and chunked, so 4 000 000 samples × 2 modalities × 8 dims
(~256 MB of features) take a few seconds and no more than one extra chunk of temporary memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedmm.core.data.types import CentralDataset, ModalitySpec, SampleSet
from fedmm.core.errors import DataError

NAME = "synthetic"
_CHUNK = 1 << 20  # rows per in-place update: bounds the temporary memory of the centroid gather


@dataclass(frozen=True)
class SyntheticModality:
    """One synthetic modality: its name, feature dimension and informativeness in ``[0, 1]``."""

    name: str
    dim: int
    informativeness: float = 1.0

    def __post_init__(self) -> None:
        if self.dim <= 0:
            raise DataError(f"synthetic modality {self.name!r}: dim must be positive, got {self.dim}")
        if not 0.0 <= self.informativeness <= 1.0:
            raise DataError(
                f"synthetic modality {self.name!r}: informativeness must lie in [0, 1], "
                f"got {self.informativeness}"
            )


# A config writes a modality as [name, dim], [name, dim, informativeness] or a table of those names.
ModalityLike = SyntheticModality | tuple[str, int, float] | Mapping[str, Any]
DEFAULT_MODALITIES: tuple[SyntheticModality, ...] = (
    SyntheticModality("a", 8, 1.0),
    SyntheticModality("b", 8, 0.5),
)


def _as_modalities(modalities: Sequence[ModalityLike]) -> tuple[SyntheticModality, ...]:
    out = tuple(
        m
        if isinstance(m, SyntheticModality)
        else SyntheticModality(**m)
        if isinstance(m, Mapping)
        else SyntheticModality(*m)
        for m in modalities
    )
    if not out:
        raise DataError("synthetic data needs at least one modality")
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise DataError(f"synthetic modality names must be distinct, got {names}")
    return out


def class_centroids(
    num_classes: int,
    modalities: Sequence[ModalityLike] = DEFAULT_MODALITIES,
    separation: float = 3.0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The class centroids ``(num_classes, dim)`` per modality that :func:`make_synthetic` uses
    (before scaling by informativeness), reproducible from the same arguments."""
    out: dict[str, np.ndarray] = {}
    for k, m in enumerate(_as_modalities(modalities)):
        rng = np.random.default_rng([seed, 1, k])
        mu = rng.standard_normal((num_classes, m.dim))
        mu /= np.linalg.norm(mu, axis=1, keepdims=True) + 1e-12
        out[m.name] = (separation * mu).astype(np.float32)
    return out


def make_synthetic(
    num_samples: int = 10_000,
    *,
    num_classes: int = 10,
    modalities: Sequence[ModalityLike] = DEFAULT_MODALITIES,
    noise: float = 1.0,
    separation: float = 3.0,
    test_samples: int | None = None,
    seed: int = 0,
) -> CentralDataset:
    """Build the synthetic dataset (see the module docstring).

    ``modalities`` are :class:`SyntheticModality`, ``(name, dim[, informativeness])`` tuples or
    ``{"name", "dim"[, "informativeness"]}`` tables;
    ``test_samples`` defaults to ``max(1, num_samples // 5)``. The train and test sets share the
    centroids and are drawn independently.
    """
    if num_samples <= 0:
        raise DataError(f"num_samples must be positive, got {num_samples}")
    if num_classes < 2:
        raise DataError(f"num_classes must be at least 2, got {num_classes}")
    if noise < 0:
        raise DataError(f"noise must be non-negative, got {noise}")
    mods = _as_modalities(modalities)
    n_test = max(1, num_samples // 5) if test_samples is None else int(test_samples)
    if n_test <= 0:
        raise DataError(f"test_samples must be positive, got {test_samples}")
    total = num_samples + n_test
    centroids = class_centroids(num_classes, mods, separation, seed)

    labels = np.random.default_rng([seed, 0]).integers(0, num_classes, total, dtype=np.int64)
    features: dict[str, np.ndarray] = {}
    for k, m in enumerate(mods):
        rng = np.random.default_rng([seed, 2, k])
        x = rng.standard_normal((total, m.dim), dtype=np.float32)
        if noise != 1.0:
            x *= np.float32(noise)
        if m.informativeness > 0:
            mu = centroids[m.name] * np.float32(m.informativeness)
            for start in range(0, total, _CHUNK):  # in place, chunked: no full-size temporary
                x[start : start + _CHUNK] += mu[labels[start : start + _CHUNK]]
        features[m.name] = x

    specs = tuple(
        ModalitySpec(m.name, (m.dim,), "vector", f"synthetic, informativeness {m.informativeness}")
        for m in mods
    )
    # Row slices of C-contiguous arrays are contiguous views: the split copies nothing.
    train = SampleSet(specs, {k: v[:num_samples] for k, v in features.items()}, labels[:num_samples])
    test = SampleSet(specs, {k: v[num_samples:] for k, v in features.items()}, labels[num_samples:])
    meta: dict[str, Any] = {
        "informativeness": {m.name: m.informativeness for m in mods},
        "noise": noise,
        "separation": separation,
        "seed": seed,
    }
    return CentralDataset(
        name=NAME,
        modalities=specs,
        num_classes=num_classes,
        train=train,
        test=test,
        class_names=tuple(f"class_{c}" for c in range(num_classes)),
        metadata=meta,
    )


def load_central(**kwargs: Any) -> CentralDataset:
    """Alias of :func:`make_synthetic` for the dataset registry."""
    return make_synthetic(**kwargs)
