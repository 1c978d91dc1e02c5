"""Partitioners and simulation knobs (those of the FedMultimodal benchmark).

Pure functions of (labels or groups, sizes, ``numpy.random.Generator``) returning index arrays,
so they scale to a million clients: nothing per client is a Python object.

Why not flwr-datasets' partitioners: they partition a Hugging Face ``datasets.Dataset`` and hand
back one materialised ``Dataset`` per partition; using them would make ``datasets``/``pyarrow``
a core dependency and cost one object per client (a 1 000 000-client population must be one
index array). Our IID and Dirichlet rules follow the same definitions (Dirichlet: per class,
client shares ~ Dir(α), as flwr-datasets' ``DirichletPartitioner``), so results are comparable.
"""

from __future__ import annotations

import numpy as np

from fedmm.core.data.types import MISSING_LABEL, Partition
from fedmm.core.errors import ConfigError


def iid(num_samples: int, num_clients: int, rng: np.random.Generator) -> Partition:
    """Shuffle and deal samples round-robin: client sizes differ by at most one."""
    _check_clients(num_clients, num_samples)
    order = rng.permutation(num_samples)
    owner = np.empty(num_samples, dtype=np.int64)
    owner[order] = np.arange(num_samples, dtype=np.int64) % num_clients
    return Partition.from_assignment(owner, num_clients)


def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_samples: int = 1,
    max_tries: int = 50,
) -> Partition:
    """Dirichlet label skew: for each class, client shares ~ Dir(α·1); smaller α = more skew.

    Redraws (up to ``max_tries``) until every client holds at least ``min_samples`` samples.
    """
    if alpha <= 0:
        raise ConfigError(f"dirichlet alpha must be > 0 (got {alpha}); small values (0.1) mean strong skew")
    labels = np.asarray(labels)
    _check_clients(num_clients, labels.shape[0])
    classes = np.unique(labels)
    for _ in range(max_tries):
        owner = np.empty(labels.shape[0], dtype=np.int64)
        for c in classes:
            shares = rng.dirichlet(np.full(num_clients, alpha))
            _deal(owner, np.flatnonzero(labels == c), shares, rng)
        if np.bincount(owner, minlength=num_clients).min() >= min_samples:
            return Partition.from_assignment(owner, num_clients)
    raise ConfigError(
        f"dirichlet partition with alpha={alpha} left a client with fewer than {min_samples} samples after "
        f"{max_tries} draws; use fewer clients, a larger alpha, or min_samples=0"
    )


def _deal(owner: np.ndarray, idx: np.ndarray, shares: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cut the shuffled samples ``idx`` at the cumulative ``shares`` and write each one's client
    into ``owner``; returns how many each client got."""
    cuts = (np.cumsum(shares)[:-1] * idx.shape[0]).astype(np.int64)
    counts = np.diff(np.concatenate([[0], cuts, [idx.shape[0]]]))
    owner[rng.permutation(idx)] = np.repeat(np.arange(shares.shape[0]), counts)
    return counts


def natural(groups: np.ndarray) -> tuple[Partition, np.ndarray]:
    """One client per distinct group value (e.g. subject id). Returns the partition and the group ids."""
    groups = np.asarray(groups)
    ids, owner = np.unique(groups, return_inverse=True)
    return Partition.from_assignment(owner.astype(np.int64), ids.shape[0]), ids


def natural_dirichlet(
    groups: np.ndarray,
    labels: np.ndarray,
    subclients: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_samples: int = 1,
    max_tries: int = 100,
) -> tuple[Partition, np.ndarray]:
    """FedMultimodal's hierarchical split: each natural group (a subject) is cut into
    ``subclients`` sub-clients by a Dirichlet(α) over labels inside the group.

    Per group and class, shares ~ Dir(α·1) are drawn; as in FedMultimodal's (and FedMA's) code, a
    sub-client that already holds its fair part of the group (≥ n_group / subclients samples) gets
    no share of the later classes, which keeps sizes from running away. A group's draw is repeated
    (up to ``max_tries``) until each of its sub-clients holds at least ``min_samples``.
    Returns the partition (sub-clients numbered group by group) and each sub-client's group id.
    """
    if alpha <= 0:
        raise ConfigError(f"dirichlet alpha must be > 0 (got {alpha}); small values (0.1) mean strong skew")
    if subclients < 1:
        raise ConfigError(f"subclients must be >= 1 (got {subclients})")
    groups = np.asarray(groups)
    labels = np.asarray(labels)
    ids, inverse = np.unique(groups, return_inverse=True)
    owner = np.empty(labels.shape[0], dtype=np.int64)
    for g in range(ids.shape[0]):
        members = np.flatnonzero(inverse == g)
        n = members.shape[0]
        if n < subclients * max(min_samples, 1):
            raise ConfigError(
                f"group {ids[g]} has {n} samples: too few for {subclients} sub-clients of at least "
                f"{max(min_samples, 1)}; use fewer subclients or a smaller min_samples"
            )
        for _ in range(max_tries):
            local = np.empty(n, dtype=np.int64)
            held = np.zeros(subclients, dtype=np.int64)
            for c in np.unique(labels[members]):
                shares = rng.dirichlet(np.full(subclients, alpha)) * (held < n / subclients)
                shares = shares / shares.sum() if shares.sum() > 0 else np.full(subclients, 1 / subclients)
                held += _deal(local, np.flatnonzero(labels[members] == c), shares, rng)
            if held.min() >= min_samples:
                break
        else:
            raise ConfigError(
                f"natural_dirichlet: group {ids[g]} left a sub-client with fewer than {min_samples} samples "
                f"after {max_tries} draws; use fewer subclients, a larger alpha, or a smaller min_samples"
            )
        owner[members] = g * subclients + local
    return Partition.from_assignment(owner, ids.shape[0] * subclients), np.repeat(ids, subclients)


def client_missing_modalities(
    num_clients: int, num_modalities: int, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """FedMultimodal's missing modalities: each client lacks each modality, for all its samples,
    independently with probability ``rate`` (a client may be left with none; the caller drops it)."""
    check_rate("client_missing_rate", rate)
    return rng.random((num_clients, num_modalities)) >= rate


def modality_availability(
    num_clients: int,
    num_modalities: int,
    unimodal_fraction: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per-client modality mask: a ``unimodal_fraction`` of clients keep one random modality only."""
    check_rate("unimodal_fraction", unimodal_fraction)
    mask = np.ones((num_clients, num_modalities), dtype=bool)
    if num_modalities < 2 or unimodal_fraction == 0:
        return mask
    chosen = rng.permutation(num_clients)[: round(unimodal_fraction * num_clients)]
    keep = rng.integers(0, num_modalities, size=chosen.shape[0])
    mask[chosen] = False
    mask[chosen, keep] = True
    return mask


def missing_modalities(present: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Drop each (sample, modality) with probability ``rate``, always keeping one modality per sample."""
    check_rate("missing_rate", rate)
    present = np.asarray(present, dtype=bool)
    if rate == 0 or present.shape[1] < 2:
        return present.copy()
    drop = rng.random(present.shape) < rate
    out = present & ~drop
    # A sample must keep at least one modality: restore a random one it originally had.
    empty = np.flatnonzero(~out.any(axis=1))
    if empty.size:
        scores = rng.random((empty.shape[0], present.shape[1])) * present[empty]
        out[empty, scores.argmax(axis=1)] = True
    return out


def incomplete_samples(present: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Make a ``fraction`` of the samples incomplete: each loses exactly one of its modalities,
    chosen uniformly (so with two modalities about half lose each).

    A general missing-modality pattern (the ``[data]`` knob ``incomplete_fraction``): unlike
    :func:`missing_modalities`, which drops each value independently, it fixes the share of
    incomplete samples — the "missing ratio" of missing-modality papers (FedMVP's, among others),
    and the setting every technique is tested under in the technique matrix. Samples with a single
    modality left cannot lose it and are not picked.
    """
    check_rate("incomplete_fraction", fraction)
    present = np.asarray(present, dtype=bool)
    out = present.copy()
    if fraction == 0 or present.shape[1] < 2:
        return out
    eligible = np.flatnonzero(present.sum(axis=1) >= 2)
    k = min(round(fraction * present.shape[0]), eligible.shape[0])
    chosen = rng.permutation(eligible)[:k]
    scores = rng.random((k, present.shape[1])) * present[chosen]
    out[chosen, scores.argmax(axis=1)] = False
    return out


def missing_labels(labels: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Mark a ``rate`` fraction of labels as missing (``-1``)."""
    check_rate("missing_label_rate", rate)
    out = np.asarray(labels, dtype=np.int64).copy()
    out[rng.random(out.shape[0]) < rate] = MISSING_LABEL
    return out


def label_noise(labels: np.ndarray, rate: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Replace a ``rate`` fraction of labels by a different, uniformly drawn class."""
    check_rate("label_noise_rate", rate)
    out = np.asarray(labels, dtype=np.int64).copy()
    flip = (rng.random(out.shape[0]) < rate) & (out != MISSING_LABEL)
    if num_classes > 1 and flip.any():
        shift = rng.integers(1, num_classes, size=int(flip.sum()))
        out[flip] = (out[flip] + shift) % num_classes
    return out


def check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must lie in [0, 1] (got {value})")


def _check_clients(num_clients: int, num_samples: int) -> None:
    if num_clients < 1:
        raise ConfigError(f"clients must be >= 1 (got {num_clients})")
    if num_clients > num_samples:
        raise ConfigError(
            f"cannot split {num_samples} samples over {num_clients} clients; "
            f"use at most {num_samples} clients"
        )
