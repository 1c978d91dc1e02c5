"""Dataset registry and ``datasets.load``: build a central dataset, then federate it.

Builders are found by name: the ones shipped with core, plus any that another package registers
under the ``fedmm.datasets`` entry-point group (a callable ``load_central(**options) -> CentralDataset``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Literal

import numpy as np

from fedmm.core.data import partition as P
from fedmm.core.data.types import CentralDataset, FederatedDataset, Partition, SampleSet
from fedmm.core.errors import ConfigError

PartitionKind = Literal["iid", "dirichlet", "natural", "natural_dirichlet"]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    loader: str  # "module:function" returning a CentralDataset
    summary: str
    builder: str | None = None  # "module:function" building the on-disk cache, for `fedmm datasets build`
    needs_path: bool = False


BUILTIN: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "av-digits",
            "fedmm.core.data.av_digits:load_central",
            "audio-visual digits: sklearn 8x8 digit images + espeak-ng spoken digits (log-mel)",
            builder="fedmm.core.data.av_digits:build",
        ),
        DatasetInfo(
            "hapt",
            "fedmm.core.data.hapt:load_central",
            "UCI HAPT smartphone accelerometer + gyroscope, 2.56 s windows, split by subject",
            builder="fedmm.core.data.hapt:build",
        ),
        DatasetInfo(
            "hapt-views",
            "fedmm.core.data.hapt_views:load_central",
            "hapt's windows as 4 views: raw acc, raw gyro (128x3) and their 24 summary statistics each",
            builder="fedmm.core.data.hapt:build",
        ),
        DatasetInfo(
            "synthetic",
            "fedmm.core.data.synthetic:load_central",
            "M synthetic modalities with controllable informativeness, noise and size",
        ),
        DatasetInfo(
            "uci-har",
            "fedmm.core.data.uci_har:load_central",
            "UCI-HAR read from a local 'UCI HAR Dataset/' folder (path=...)",
            needs_path=True,
        ),
        DatasetInfo(
            "ptb-xl",
            "fedmm.core.data.ptbxl:load_central",
            "PTB-XL 12-lead ECG from a local folder: limb vs chest leads, split by site (path=...)",
            needs_path=True,
        ),
        DatasetInfo(
            "ku-har",
            "fedmm.core.data.ku_har:load_central",
            "KU-HAR smartphone accelerometer + gyroscope from a local folder, split by subject (path=...)",
            needs_path=True,
        ),
        DatasetInfo(
            "captions",
            "fedmm.core.data.captions:load_central",
            "image-caption folder (CUB/Flowers text_c10 layout or COCO captions JSON) (path=...)",
            needs_path=True,
        ),
    )
}


def available() -> dict[str, DatasetInfo]:
    """Every dataset name that ``load`` accepts: built-ins plus entry points."""
    found = dict(BUILTIN)
    for ep in entry_points(group="fedmm.datasets"):
        found.setdefault(
            ep.name, DatasetInfo(ep.name, ep.value, f"registered by {ep.dist.name if ep.dist else '?'}")
        )
    return found


def _resolve(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _takes(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` names the parameter ``name`` (``**kwargs`` may forward it anywhere: no)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def load_central(name: str, *, progress: bool | None = None, **options: Any) -> CentralDataset:
    """Load (building and caching if needed) the central, un-federated dataset ``name``.

    ``progress`` (bars and messages while a cache is built) reaches loaders that take it; the
    others ignore it."""
    infos = available()
    if name not in infos:
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(sorted(infos))}")
    info = infos[name]
    if info.needs_path and "path" not in options:
        raise ConfigError(f"dataset {name!r} reads a local folder: pass path='...' (it is never downloaded)")
    loader = _resolve(info.loader)
    if progress is not None and _takes(loader, "progress"):
        options["progress"] = progress
    try:
        return loader(**options)
    except TypeError as exc:
        raise ConfigError(f"dataset {name!r}: bad options {sorted(options)}: {exc}") from exc


def build(name: str, **options: Any) -> Any:
    """Build the on-disk cache of ``name`` (for datasets that have one)."""
    info = available().get(name)
    if info is None:
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(sorted(available()))}")
    if info.builder is None:
        raise ConfigError(f"dataset {name!r} has nothing to build (it is generated or read on load)")
    return _resolve(info.builder)(**options)


def restrict_modalities(central: CentralDataset, names: list[str] | tuple[str, ...]) -> CentralDataset:
    """The same dataset with only ``names`` (e.g. a unimodal baseline); samples left with no
    modality are dropped."""
    known = [m.name for m in central.modalities]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(f"modalities {list(names)} invalid for {central.name!r}; it has {known}")
    cols = [known.index(n) for n in names]
    specs = tuple(central.modalities[i] for i in cols)

    def cut(ss: SampleSet) -> tuple[SampleSet, np.ndarray]:
        present = ss.present[:, cols]
        keep = np.flatnonzero(present.any(axis=1))
        return SampleSet(
            specs, {n: ss.features[n][keep] for n in names}, ss.labels[keep], present[keep]
        ), keep

    train, keep = cut(central.train)
    test, _ = cut(central.test)
    groups = central.train_groups[keep] if central.train_groups is not None else None
    return CentralDataset(
        central.name,
        specs,
        central.num_classes,
        train,
        test,
        central.class_names,
        groups,
        dict(central.metadata),
    )


def federate(
    central: CentralDataset,
    *,
    clients: int | None = 10,
    partition: PartitionKind = "iid",
    alpha: float = 0.5,
    unimodal_fraction: float = 0.0,
    missing_rate: float = 0.0,
    missing_label_rate: float = 0.0,
    label_noise_rate: float = 0.0,
    validation_fraction: float = 0.0,
    min_samples: int = 1,
    seed: int = 0,
    incomplete_fraction: float = 0.0,
    subclients: int = 5,
    client_missing_rate: float = 0.0,
    validation_split: Literal["pooled", "per_group"] = "pooled",
) -> FederatedDataset:
    """Split ``central.train`` over clients and apply the simulation knobs.

    ``partition="natural_dirichlet"``: each natural group is cut into ``subclients`` sub-clients by
    a Dirichlet(``alpha``) over labels (FedMultimodal's UCI-HAR split). ``client_missing_rate``:
    each client lacks each modality for all its samples with that probability; a client left with
    none is dropped (``metadata["clients_dropped_no_modality"]``).

    ``validation_fraction`` of the training pool is held out for the server (never given to a
    client): drawn from the whole pool (``validation_split="pooled"``) or the same fraction from
    each natural group (``"per_group"``, FedMultimodal's dev split: 20 % of each subject's
    windows). The knobs change shared columns once (O(samples)), never per-client copies.
    """
    rng = np.random.default_rng(seed)
    train = central.train
    groups = central.train_groups
    validation: SampleSet | None = None
    if validation_split not in ("pooled", "per_group"):
        raise ConfigError(f"unknown validation_split {validation_split!r}; use 'pooled' or 'per_group'")
    if validation_split == "per_group" and validation_fraction and groups is None:
        raise ConfigError(
            f"validation_split='per_group' needs natural groups, which {central.name!r} has none of; "
            "use validation_split='pooled'"
        )
    if validation_fraction:
        P.check_rate("validation_fraction", validation_fraction)
        held = np.zeros(len(train), dtype=bool)
        if validation_split == "pooled":
            held[rng.permutation(len(train))[: round(validation_fraction * len(train))]] = True
        else:
            assert groups is not None
            for g in np.unique(groups):
                members = np.flatnonzero(groups == g)
                held[rng.permutation(members)[: int(validation_fraction * members.shape[0])]] = True
        validation = train.take(np.flatnonzero(held))
        keep = np.flatnonzero(~held)
        train = train.take(keep)
        groups = groups[keep] if groups is not None else None

    metadata: dict[str, Any] = dict(central.metadata)
    if partition in ("natural", "natural_dirichlet") and groups is None:
        raise ConfigError(
            f"dataset {central.name!r} has no natural groups; use partition='iid' or 'dirichlet'"
        )
    if partition == "natural":
        assert groups is not None
        part, ids = P.natural(groups)
        if clients is not None and clients != part.num_clients:
            raise ConfigError(
                f"partition='natural' gives one client per group ({part.num_clients} for {central.name!r}); "
                f"set clients = {part.num_clients} or leave it out"
            )
        metadata["client_groups"] = ids.tolist()
    elif partition == "natural_dirichlet":
        assert groups is not None
        part, group_of = P.natural_dirichlet(
            groups, train.labels, subclients, alpha, rng, min_samples=min_samples
        )
        if clients is not None and clients != part.num_clients:
            raise ConfigError(
                f"partition='natural_dirichlet' makes {part.num_clients // subclients} groups x {subclients} "
                f"sub-clients = {part.num_clients} clients for {central.name!r}; set clients = "
                f"{part.num_clients} or leave it out"
            )
        metadata["client_groups"] = group_of.tolist()
    elif clients is None:
        raise ConfigError(f"partition={partition!r} needs a number of clients")
    elif partition == "iid":
        part = P.iid(len(train), clients, rng)
    elif partition == "dirichlet":
        part = P.dirichlet(train.labels, clients, alpha, rng, min_samples=min_samples)
    else:
        raise ConfigError(
            f"unknown partition {partition!r}; use 'iid', 'dirichlet', 'natural' or 'natural_dirichlet'"
        )

    labels, present = train.labels, train.present
    if label_noise_rate:
        labels = P.label_noise(labels, label_noise_rate, central.num_classes, rng)
    if missing_label_rate:
        labels = P.missing_labels(labels, missing_label_rate, rng)
    if missing_rate:
        present = P.missing_modalities(present, missing_rate, rng)
    if incomplete_fraction:
        present = P.incomplete_samples(present, incomplete_fraction, rng)
    if labels is not train.labels or present is not train.present:
        train = train.with_columns(labels=labels, present=present)
    client_modalities = None
    if unimodal_fraction:
        client_modalities = P.modality_availability(
            part.num_clients, len(central.modalities), unimodal_fraction, rng
        )
    dropped = 0
    if client_missing_rate:
        lacking = P.client_missing_modalities(
            part.num_clients, len(central.modalities), client_missing_rate, rng
        )
        client_modalities = lacking if client_modalities is None else client_modalities & lacking
        keep = np.flatnonzero(client_modalities.any(axis=1))
        dropped = part.num_clients - keep.shape[0]
        if keep.shape[0] == 0:
            raise ConfigError(
                f"client_missing_rate={client_missing_rate} left no client with any modality; "
                "use a lower rate"
            )
        if dropped:
            part = Partition.from_lists([part.of(int(c)) for c in keep])
            client_modalities = client_modalities[keep]
            if "client_groups" in metadata:
                metadata["client_groups"] = [metadata["client_groups"][int(c)] for c in keep]
    metadata.update(
        partition=partition,
        alpha=alpha if partition in ("dirichlet", "natural_dirichlet") else None,
        subclients=subclients if partition == "natural_dirichlet" else None,
        client_missing_rate=client_missing_rate,
        clients_dropped_no_modality=dropped,
        unimodal_fraction=unimodal_fraction,
        missing_rate=missing_rate,
        incomplete_fraction=incomplete_fraction,
        missing_label_rate=missing_label_rate,
        label_noise_rate=label_noise_rate,
    )
    return FederatedDataset(
        name=central.name,
        modalities=central.modalities,
        num_classes=central.num_classes,
        train=train,
        test=central.test,
        partition=part,
        client_modalities=client_modalities,
        validation=validation,
        class_names=central.class_names,
        metadata=metadata,
    )


def load(
    name: str,
    *,
    only_modalities: list[str] | tuple[str, ...] | None = None,
    **options: Any,
) -> FederatedDataset:
    """Load dataset ``name`` and federate it.

    Keyword arguments that :func:`federate` takes (``clients``, ``partition``, ``alpha``,
    ``missing_rate``, ``incomplete_fraction``, ``validation_fraction``, ``seed``, ...) go to it;
    the others go to the dataset's own loader (e.g. ``num_samples`` for ``synthetic``).
    ``only_modalities`` keeps a subset of the modalities (e.g. for a unimodal baseline);
    ``progress=False`` silences the loader's bars and messages where it has any.

    >>> data = load("synthetic", clients=20, partition="dirichlet", alpha=0.5, missing_rate=0.3)
    """
    knobs = {k: options.pop(k) for k in list(options) if k in _FEDERATE_KNOBS}
    central = load_central(name, **options)
    if only_modalities is not None:
        central = restrict_modalities(central, only_modalities)
    return federate(central, **knobs)


_FEDERATE_KNOBS = frozenset(inspect.signature(federate).parameters) - {"central"}


__all__ = [
    "BUILTIN",
    "DatasetInfo",
    "Partition",
    "available",
    "build",
    "federate",
    "load",
    "load_central",
    "restrict_modalities",
]
