"""The data model: modality specs, columnar sample sets, client views and federated datasets.

Every client is an *index view* into one shared, columnar :class:`SampleSet`: a population of
10 000 (or 1 000 000) clients costs one int64 index array plus one offsets array, never a copy of
the samples. A sample carries a dict of modality tensors, a presence mask (a modality can be
missing per sample or for a whole client) and a label (``-1`` = unlabelled).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from fedmm.core.errors import DataError

MISSING_LABEL = -1

ModalityKind = Literal["vector", "image", "sequence", "tokens"]


@dataclass(frozen=True)
class ModalitySpec:
    """One input modality: its name and per-sample feature shape.

    ``kind`` tells model builders which encoder fits (``vector`` → MLP, ``image`` → CNN,
    ``sequence`` → 1-D conv/LSTM over ``(time, channels)``, ``tokens`` → embedding).
    """

    name: str
    shape: tuple[int, ...]
    kind: ModalityKind = "vector"
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or "." in self.name or "/" in self.name:
            raise DataError(f"modality name {self.name!r} must be non-empty and contain no '.' or '/'")
        if not self.shape or any(int(d) <= 0 for d in self.shape):
            raise DataError(f"modality {self.name!r}: shape {self.shape} must be non-empty and positive")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


class SampleSet:
    """Columnar samples shared by every client view.

    ``features[m]`` is an array ``(N, *spec.shape)``; ``present`` is ``(N, M)`` bool in the order
    of ``modalities``; ``labels`` is ``(N,)`` int64 with ``-1`` for a missing label. Torch views of
    the arrays are created once and share memory with them.

    ``generated`` ``(N, M)`` is the provenance of present values: ``True`` where a value was
    produced (completed, imputed, synthesised — even zero-filled) rather than observed; it implies
    ``present`` and is all ``False`` for loaded data. Any technique that fills missing values marks
    them here, so the values stay distinguishable from real ones for whatever comes after — a
    technique, a benchmark, a metric. It lives in core because only core's column operations
    (``with_columns``, ``take``, ``ClientData.local_copy`` / ``with_samples``) can carry it along
    with the samples. FedMVP's completers set it, and its retrieval pool draws only on observed
    values.
    """

    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
        features: Mapping[str, np.ndarray],
        labels: np.ndarray,
        present: np.ndarray | None = None,
        generated: np.ndarray | None = None,
    ) -> None:
        self.modalities = tuple(modalities)
        names = [m.name for m in self.modalities]
        if len(set(names)) != len(names):
            raise DataError(f"duplicate modality names: {names}")
        missing = [n for n in names if n not in features]
        extra = [n for n in features if n not in names]
        if missing or extra:
            raise DataError(f"features do not match modalities: missing {missing}, unexpected {extra}")
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise DataError(f"labels must be 1-D, got shape {labels.shape}")
        n = labels.shape[0]
        self.labels: np.ndarray = labels.astype(np.int64, copy=False)
        self.features: dict[str, np.ndarray] = {}
        for spec in self.modalities:
            arr = np.asarray(features[spec.name])
            if arr.shape != (n, *spec.shape):
                raise DataError(
                    f"modality {spec.name!r}: features have shape {arr.shape}, expected {(n, *spec.shape)}"
                )
            dtype = np.int64 if spec.kind == "tokens" else np.float32
            self.features[spec.name] = np.ascontiguousarray(arr, dtype=dtype)
        if present is None:
            present = np.ones((n, len(names)), dtype=bool)
        present = np.asarray(present, dtype=bool)
        if present.shape != (n, len(names)):
            raise DataError(f"presence mask has shape {present.shape}, expected {(n, len(names))}")
        self.present: np.ndarray = present
        if generated is None:
            generated = np.zeros_like(present)
        generated = np.asarray(generated, dtype=bool)
        if generated.shape != present.shape:
            raise DataError(f"generated mask has shape {generated.shape}, expected {present.shape}")
        if np.any(generated & ~present):
            raise DataError("generated mask marks values that are not present; a generated value is present")
        self.generated: np.ndarray = generated
        self._torch: dict[str, torch.Tensor] | None = None

    # -- basic facts -------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.features.values()) + self.present.nbytes + self.labels.nbytes)

    def torch_views(self) -> dict[str, torch.Tensor]:
        """Torch tensors sharing memory with the numpy columns (made once)."""
        if self._torch is None:
            views = {name: torch.from_numpy(arr) for name, arr in self.features.items()}
            views["__present__"] = torch.from_numpy(self.present)
            views["__labels__"] = torch.from_numpy(self.labels)
            self._torch = views
        return self._torch

    def with_columns(
        self,
        *,
        features: Mapping[str, np.ndarray] | None = None,
        labels: np.ndarray | None = None,
        present: np.ndarray | None = None,
        generated: np.ndarray | None = None,
    ) -> SampleSet:
        """A new set sharing every column that is not replaced (a new ``present`` without a
        ``generated`` keeps the old generated marks where still present)."""
        new_present = self.present if present is None else np.asarray(present, dtype=bool)
        return SampleSet(
            self.modalities,
            {**self.features, **(features or {})},
            self.labels if labels is None else labels,
            new_present,
            self.generated & new_present if generated is None else generated,
        )

    def take(self, indices: np.ndarray) -> SampleSet:
        """A copy holding only ``indices`` (used for small splits, never per client)."""
        idx = np.asarray(indices, dtype=np.int64)
        return SampleSet(
            self.modalities,
            {k: v[idx] for k, v in self.features.items()},
            self.labels[idx],
            self.present[idx],
            self.generated[idx],
        )

    def batch(self, indices: np.ndarray | torch.Tensor, modality_mask: np.ndarray | None = None) -> Batch:
        """Gather samples ``indices`` into a :class:`Batch` (one index_select per column)."""
        views = self.torch_views()
        idx = indices if isinstance(indices, torch.Tensor) else torch.from_numpy(np.asarray(indices))
        feats = {name: views[name].index_select(0, idx) for name in self.modality_names}
        present = views["__present__"].index_select(0, idx)
        if modality_mask is not None and not bool(np.all(modality_mask)):
            present = present & torch.from_numpy(np.asarray(modality_mask, dtype=bool))
        return Batch(feats, present, views["__labels__"].index_select(0, idx), self.modality_names)


@dataclass
class Batch:
    """A minibatch: modality tensors, presence mask ``(B, M)`` and labels ``(B,)`` (``-1`` = missing)."""

    features: dict[str, torch.Tensor]
    present: torch.Tensor
    labels: torch.Tensor
    modalities: tuple[str, ...]
    # Which modalities some sample of the batch has, when the caller already knows it: a batch
    # traced under ``torch.func.vmap`` (several clients' batches at once) cannot read a tensor's
    # truth value, so the batched engine sets it and models branch on it instead of the mask.
    any_present: tuple[bool, ...] | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def has_any(self, index: int, mask: torch.Tensor) -> bool:
        """Whether some sample has modality ``index``: ``any_present`` when set, else ``mask.any()``
        (``mask`` is the batch's presence column for it, after any restriction to active modalities)."""
        if self.any_present is not None:
            return self.any_present[index]
        return bool(mask.any())

    def present_for(self, active: Iterable[str] | None = None) -> torch.Tensor:
        """The presence mask with every modality outside ``active`` marked missing (None = all)."""
        if active is None:
            return self.present
        keep = set(active)
        wanted = [m in keep for m in self.modalities]
        mask = torch.tensor(wanted, dtype=torch.bool, device=self.present.device)
        return self.present & mask

    @property
    def device(self) -> torch.device:
        return self.labels.device

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """This batch on ``device`` (itself when it is there already: no copy on the CPU path)."""
        device = torch.device(device)
        # "cuda" (no index) means the current CUDA device: a batch on any CUDA device stays.
        same_cuda = device.type == "cuda" and device.index is None and self.labels.is_cuda
        if self.labels.device == device or same_cuda:
            return self
        return Batch(
            {m: t.to(device, non_blocking=non_blocking) for m, t in self.features.items()},
            self.present.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
            self.modalities,
            self.any_present,
        )


@dataclass(frozen=True)
class Partition:
    """Which samples each client holds, in CSR form: ``indices[offsets[i]:offsets[i+1]]``."""

    offsets: np.ndarray
    indices: np.ndarray

    def __post_init__(self) -> None:
        if self.offsets.ndim != 1 or self.offsets.shape[0] < 2 or self.offsets[0] != 0:
            raise DataError("partition offsets must be 1-D, start at 0 and describe at least one client")
        if int(self.offsets[-1]) != self.indices.shape[0] or np.any(np.diff(self.offsets) < 0):
            raise DataError("partition offsets must be non-decreasing and end at len(indices)")

    @classmethod
    def from_lists(cls, per_client: Sequence[np.ndarray | Sequence[int]]) -> Partition:
        sizes = np.array([len(p) for p in per_client], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        flat = (
            np.concatenate([np.asarray(p, dtype=np.int64) for p in per_client])
            if len(per_client) and offsets[-1] > 0
            else np.zeros(0, dtype=np.int64)
        )
        return cls(offsets, flat)

    @classmethod
    def from_assignment(cls, client_of_sample: np.ndarray, num_clients: int) -> Partition:
        """Build from a per-sample client id (stable: samples keep their order inside a client)."""
        owner = np.asarray(client_of_sample, dtype=np.int64)
        order = np.argsort(owner, kind="stable")
        counts = np.bincount(owner, minlength=num_clients)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(offsets, order.astype(np.int64))

    @property
    def num_clients(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def of(self, client: int) -> np.ndarray:
        return self.indices[self.offsets[client] : self.offsets[client + 1]]


@dataclass(frozen=True)
class ClientData:
    """One client's data: a view of shared samples, never a copy.

    ``modality_mask`` (M,) says which modalities this client has at all; the per-sample presence
    is ``samples.present[indices] & modality_mask``.
    """

    client_id: int
    samples: SampleSet
    indices: np.ndarray
    modality_mask: np.ndarray

    @property
    def num_samples(self) -> int:
        return int(self.indices.shape[0])

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities this client holds (for at least one sample)."""
        names = self.samples.modality_names
        if not self.num_samples:
            return ()
        present = np.asarray(self.present().any(axis=0))
        return tuple(n for i, n in enumerate(names) if bool(present[i]))

    def present(self) -> np.ndarray:
        return self.samples.present[self.indices] & self.modality_mask[None, :]

    def labels(self) -> np.ndarray:
        return self.samples.labels[self.indices]

    def local_copy(self) -> SampleSet:
        """This client's samples as a set of its own (a copy; the client's modality mask applied)."""
        own = self.samples.take(self.indices)
        return own.with_columns(present=own.present & self.modality_mask[None, :])

    def with_samples(self, samples: SampleSet) -> ClientData:
        """This client holding ``samples`` instead (e.g. its data with missing modalities completed)."""
        n = len(samples)
        return ClientData(
            self.client_id, samples, np.arange(n, dtype=np.int64), np.ones(len(samples.modalities), bool)
        )

    def labelled(self) -> ClientData:
        """The same client restricted to labelled samples."""
        keep = self.labels() != MISSING_LABEL
        return self if bool(keep.all()) else replace(self, indices=self.indices[keep])

    def batch(self, positions: np.ndarray | None = None) -> Batch:
        idx = self.indices if positions is None else self.indices[positions]
        return self.samples.batch(idx, self.modality_mask)

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True
    ) -> Iterator[Batch]:
        """One pass over the client's samples in minibatches (shuffled with ``generator``)."""
        n = self.num_samples
        if n == 0:
            return
        idx = torch.from_numpy(self.indices)
        if shuffle:
            # The order is drawn on the host, so it is the same whatever device trains.
            idx = idx[torch.randperm(n, generator=generator, device="cpu")]
        mask = None if bool(np.all(self.modality_mask)) else self.modality_mask
        for start in range(0, n, batch_size):
            yield self.samples.batch(idx[start : start + batch_size], mask)


@dataclass
class CentralDataset:
    """A dataset before federation: train/test sample sets and optional natural groups (e.g. subjects)."""

    name: str
    modalities: tuple[ModalitySpec, ...]
    num_classes: int
    train: SampleSet
    test: SampleSet
    class_names: tuple[str, ...] = ()
    train_groups: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.train_groups is not None and len(self.train_groups) != len(self.train):
            raise DataError("train_groups must have one entry per training sample")
        for split, ss in (("train", self.train), ("test", self.test)):
            if ss.modality_names != tuple(m.name for m in self.modalities):
                raise DataError(f"{split} modalities {ss.modality_names} differ from the dataset's")
            labelled = ss.labels[ss.labels != MISSING_LABEL]
            if labelled.size and (labelled.min() < 0 or labelled.max() >= self.num_classes):
                raise DataError(f"{split} labels must lie in [0, {self.num_classes}) or be -1 (missing)")


@dataclass
class FederatedDataset:
    """Clients (index views of one shared train set) + a global held-out test set + modality specs.

    ``validation`` is an optional small labelled split held by the server (used by server-side
    techniques such as FlexMod's Shapley importance); it is disjoint from every client's data.
    """

    name: str
    modalities: tuple[ModalitySpec, ...]
    num_classes: int
    train: SampleSet
    test: SampleSet
    partition: Partition
    client_modalities: np.ndarray | None = None
    validation: SampleSet | None = None
    class_names: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.client_modalities is not None:
            cm = np.asarray(self.client_modalities, dtype=bool)
            if cm.shape != (self.partition.num_clients, len(self.modalities)):
                raise DataError(
                    f"client_modalities has shape {cm.shape}, expected "
                    f"{(self.partition.num_clients, len(self.modalities))}"
                )
            self.client_modalities = cm

    @property
    def num_clients(self) -> int:
        return self.partition.num_clients

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    def spec(self, name: str) -> ModalitySpec:
        for m in self.modalities:
            if m.name == name:
                return m
        raise KeyError(f"no modality {name!r}; this dataset has {self.modality_names}")

    def client(self, client_id: int) -> ClientData:
        if not 0 <= client_id < self.num_clients:
            raise IndexError(f"client {client_id} out of range [0, {self.num_clients})")
        mask = (
            self.client_modalities[client_id]
            if self.client_modalities is not None
            else np.ones(len(self.modalities), dtype=bool)
        )
        return ClientData(client_id, self.train, self.partition.of(client_id), mask)

    def client_sizes(self) -> np.ndarray:
        return self.partition.sizes()

    def describe(self) -> dict[str, Any]:
        sizes = self.client_sizes()
        return {
            "name": self.name,
            "modalities": {m.name: list(m.shape) for m in self.modalities},
            "num_classes": self.num_classes,
            "clients": self.num_clients,
            "train_samples": len(self.train),
            "test_samples": len(self.test),
            "client_size_min": int(sizes.min()) if sizes.size else 0,
            "client_size_max": int(sizes.max()) if sizes.size else 0,
            # Scalars and short lists only: bulky metadata (a vocabulary, group ids) stays out.
            **{k: v for k, v in self.metadata.items() if _is_small(v)},
        }


def _is_small(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return len(value) <= 16 and all(_is_small(v) for v in value)
    if isinstance(value, dict):
        return len(value) <= 16 and all(_is_small(v) for v in value.values())
    return False
