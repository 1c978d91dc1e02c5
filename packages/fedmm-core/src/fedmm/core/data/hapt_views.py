"""hapt-views: the HAPT windows seen four ways — two raw sensor sequences and their summary vectors.

Why
---
Selective modality upload (FedMFS: each client uploads the top-γ of its per-modality models by a
priority mixing Shapley impact and model size) is only put to the test when the two criteria
*disagree*: when the small models are not simply the informative ones. ``hapt`` has two sensors
of equal size (two identical 1-D conv encoders), so the size term cannot rank them; the synthetic
sets have sizes and strengths that are chosen, not measured. This dataset is real (the same UCI
HAPT recordings, windows, labels and subjects as :mod:`fedmm.core.data.hapt`, read through its
cache — nothing else is downloaded or read) and has four modalities whose natural model sizes and
informativeness are different orderings:

==============  ===================  ========  ==========================================
modality        shape, kind          encoder   what it is
==============  ===================  ========  ==========================================
``acc``         ``(128, 3)`` seq.    conv1d    the raw accelerometer window (as ``hapt``)
``gyro``        ``(128, 3)`` seq.    conv1d    the raw gyroscope window (as ``hapt``)
``acc_stats``   ``(24,)`` vector     MLP       8 statistics of each accelerometer axis
``gyro_stats``  ``(24,)`` vector     MLP       8 statistics of each gyroscope axis
==============  ===================  ========  ==========================================

The statistics are :func:`fedmm.core.data.hapt.summary_features` of the window (per axis: mean,
std, min, max, 10/50/90 % quantiles and mean absolute first difference, in
:data:`~fedmm.core.data.hapt.SUMMARY_STATISTICS` order, statistic-major: ``acc-x mean``,
``acc-y mean``, ``acc-z mean``, ``acc-x std``, ...; the names are in ``metadata["stats_features"]``
and :func:`feature_names`). Each of the 24 columns is then z-scored with the training split's mean
and standard deviation (the test split uses the same ones), so the two summary views are finite,
float32 and standardised whatever ``standardize`` does to the raw views (every statistic is
affine-equivariant in its channel, so a per-channel affine rescaling of the window disappears in the
z-scoring). The raw views are exactly ``hapt``'s, with the same options (``window``, ``stride``,
``test_subjects``, ``standardize``, ``cache``, ``progress``, ``rebuild``); ``train_groups`` holds
each training window's subject, so ``partition="natural"`` gives one client per training subject
(21).

Why these views, and not another split
--------------------------------------
The summary vectors are a different *representation* of the same sensor, the one classic HAR
pipelines hand-craft (UCI-HAR ships 561 such features); a phone could compute them on-device and
send a few numbers instead of a raw stream. Their natural model is a small MLP on 24 inputs; the raw
windows' is a 1-D conv net over time. Measured (``python -m fedmm.core.data.hapt_views``, about
1.5 minutes on 2 cores; train on the 21 training subjects, score on the 9 test subjects; the
encoders are core's, each with its own linear head to the 6 classes, as FedMFS's per-modality
models)::

    view         params (encoder + head)    logistic regression    own encoder, 15 epochs
    acc          15 366 (conv1d, 32 ch.)    0.576 (flattened)      0.846 ± 0.017
    gyro         15 366 (conv1d, 32 ch.)    0.444 (flattened)      0.733 ± 0.013
    acc_stats     6 150 (mlp, hidden 64)    0.847                  0.851 ± 0.005
    gyro_stats    6 150 (mlp, hidden 64)    0.759                  0.703 ± 0.023

(logistic regression: ``C = 1``, lbfgs, standardised inputs, deterministic — on the raw views it
is weak because it is not shift-invariant; own encoder: Adam 1e-3, batch 64, mean ± std over seeds
0–2, one thread. With the default MLP width, 128, a summary model has 11 846 parameters.) The
helper also prints the exact Shapley values of the same four models in a log-probability-averaging
ensemble (FedMFS's fusion; value = test accuracy, v(∅) = 1/6; mean of seeds 0–2): ``acc_stats``
0.222, ``acc`` 0.219, ``gyro`` 0.171, ``gyro_stats`` 0.158; and each pair's ensemble accuracy.

So size and informativeness disagree, in both directions: ``acc_stats`` is one of the two
*smallest* models and the most informative view (tied with ``acc``, at 2.5× fewer parameters);
the other small one, ``gyro_stats``, is the *weakest*; the large ``gyro`` model is weaker than the
small ``acc_stats``. Ranked by size the order is {``acc_stats``, ``gyro_stats``} < {``acc``,
``gyro``}; by impact ``acc_stats`` ≈ ``acc`` > ``gyro`` > ``gyro_stats``. With γ = 1 a size-only
rule cannot tell the two summary models apart and impact picks ``acc_stats``; with γ = 2 size picks
the two summary models, impact the two accelerometer views. The two views of one sensor are
redundant and the two sensors complement each other, so the impact ranking is not the best pair:
centrally the two summary models together score 0.928, the two accelerometer views 0.870
(``acc`` + ``gyro``: 0.932; ``gyro`` + ``acc_stats``: 0.935, the best pair). The setting is
therefore not built to favour impact: at γ = 1 impact's pick is right and size cannot choose, at
γ = 2 size's pick beats impact's.

Size ties: the sizes come in two tiers (two conv models, two MLPs of the same width). FedMFS's size
term, min–max normalised over a client's models, is then 0 for both small and 1 for both large
models: with γ = 2 the gap between the tiers is the whole range, and with its default weights the
Shapley term cannot move the choice; with γ = 1 or 3 it decides inside a tier. Giving the two
summary MLPs (or the two conv nets) different widths separates all four sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedmm.core.data import hapt
from fedmm.core.data.types import CentralDataset, ModalitySpec, SampleSet

NAME = "hapt-views"
SENSORS: tuple[str, ...] = ("acc", "gyro")
_AXES = ("x", "y", "z")


def feature_names(sensor: str) -> tuple[str, ...]:
    """The 24 column names of ``<sensor>_stats``: ``"<sensor>-<axis> <statistic>"``, statistic-major."""
    return tuple(f"{sensor}-{axis} {stat}" for stat in hapt.SUMMARY_STATISTICS for axis in _AXES)


def _standardise(
    train: np.ndarray, test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Z-score each column with the training split's mean and std (a constant column stays 0)."""
    train64, test64 = train.astype(np.float64), test.astype(np.float64)
    mean = train64.mean(axis=0)
    std = train64.std(axis=0)
    std[std < 1e-12] = 1.0
    return (
        ((train64 - mean) / std).astype(np.float32),
        ((test64 - mean) / std).astype(np.float32),
        mean,
        std,
    )


def load_central(
    *,
    window: int = 128,
    stride: int = 64,
    test_subjects: Sequence[int] = hapt.UCI_HAR_TEST_SUBJECTS,
    standardize: bool = True,
    cache: Path | None = None,
    progress: bool = True,
    rebuild: bool = False,
) -> CentralDataset:
    """``hapt``'s windows (same options, split and groups) as four views (see the module docstring)."""
    base = hapt.load_central(
        window=window,
        stride=stride,
        test_subjects=test_subjects,
        standardize=standardize,
        cache=cache,
        progress=progress,
        rebuild=rebuild,
    )
    n_stats = len(hapt.SUMMARY_STATISTICS) * len(_AXES)
    stats_specs = tuple(
        ModalitySpec(
            f"{s}_stats",
            (n_stats,),
            "vector",
            f"{len(hapt.SUMMARY_STATISTICS)} statistics of each {s} axis over the window, z-scored",
        )
        for s in SENSORS
    )
    modalities = (*base.modalities, *stats_specs)
    train = dict(base.train.features)
    test = dict(base.test.features)
    stats_mean: dict[str, list[float]] = {}
    stats_std: dict[str, list[float]] = {}
    for s in SENSORS:
        name = f"{s}_stats"
        train[name], test[name], mean, std = _standardise(
            hapt.summary_features(base.train.features[s]), hapt.summary_features(base.test.features[s])
        )
        stats_mean[name], stats_std[name] = mean.tolist(), std.tolist()
    meta: dict[str, Any] = {
        **base.metadata,
        "views": {m.name: m.description for m in modalities},
        "stats_features": {f"{s}_stats": list(feature_names(s)) for s in SENSORS},
        # Training statistics of the summary columns before z-scoring (in the units of the raw
        # views as loaded: standardised or not, per ``standardize``).
        "stats_mean": stats_mean,
        "stats_std": stats_std,
    }
    return CentralDataset(
        name=NAME,
        modalities=modalities,
        num_classes=base.num_classes,
        train=SampleSet(modalities, train, base.train.labels),
        test=SampleSet(modalities, test, base.test.labels),
        class_names=base.class_names,
        train_groups=base.train_groups,
        metadata=meta,
    )


# -- the measurements quoted in the module docstring (manual helper, about 1.5 minutes on 2 cores) --

_ENCODERS = {
    "acc": ("conv1d", {}),
    "gyro": ("conv1d", {}),
    "acc_stats": ("mlp", {"hidden": 64}),
    "gyro_stats": ("mlp", {"hidden": 64}),
}


def _encoder_log_probs(
    data: CentralDataset, view: str, seed: int, epochs: int = 15
) -> tuple[int, np.ndarray]:
    """Parameters and test log-probabilities of core's encoder for ``view`` plus a linear head,
    trained centrally (Adam 1e-3, batch 64)."""
    import torch
    from torch import nn

    from fedmm.core.models.encoders import build_encoder
    from fedmm.core.models.model import out_dim

    torch.manual_seed(seed)
    spec = next(m for m in data.modalities if m.name == view)
    kind, options = _ENCODERS[view]
    encoder = build_encoder(spec, kind, 64, **options)
    net = nn.Sequential(encoder, nn.Linear(out_dim(encoder), data.num_classes))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.from_numpy(data.train.features[view]), torch.from_numpy(data.train.labels)
    for _ in range(epochs):
        order = torch.randperm(len(y))
        for start in range(0, len(y), 64):
            idx = order[start : start + 64]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        logp = torch.log_softmax(net(torch.from_numpy(data.test.features[view])), dim=1).numpy()
    return sum(p.numel() for p in net.parameters()), logp


def _measure(seeds: Sequence[int] = (0, 1, 2)) -> dict[str, dict[str, float]]:
    """Per view: parameters, logistic-regression accuracy, own-encoder accuracy (mean, std) and
    exact Shapley value in the log-probability-averaging ensemble of the four; per pair of views:
    that ensemble's accuracy (mean over seeds)."""
    from itertools import combinations

    from fedmm.core.data.probe import linear_probe
    from fedmm.core.maths.shapley import shapley_values

    data = load_central(progress=False)
    views = [m.name for m in data.modalities]
    probe = linear_probe(data, {v: [v] for v in views})
    labels = data.test.labels
    acc: dict[str, list[float]] = {v: [] for v in views}
    phi: dict[str, list[float]] = {v: [] for v in views}
    pairs: dict[str, list[float]] = {f"{a}+{b}": [] for a, b in combinations(views, 2)}
    params: dict[str, int] = {}
    for seed in seeds:
        logp: dict[str, np.ndarray] = {}
        for v in views:
            params[v], logp[v] = _encoder_log_probs(data, v, seed)

        def value(team: frozenset[str], logp: dict[str, np.ndarray] = logp) -> float:
            if not team:
                return 1.0 / data.num_classes
            fused = np.mean([logp[v] for v in sorted(team)], axis=0)
            return float((fused.argmax(axis=1) == labels).mean())

        for v, p in shapley_values(value, views, "exact").items():
            phi[v].append(p)
            acc[v].append(value(frozenset([v])))
        for a, b in combinations(views, 2):
            pairs[f"{a}+{b}"].append(value(frozenset([a, b])))
    out: dict[str, dict[str, float]] = {
        v: {
            "params": params[v],
            "probe": probe[v],
            "encoder": float(np.mean(acc[v])),
            "encoder_std": float(np.std(acc[v])),
            "shapley": float(np.mean(phi[v])),
        }
        for v in views
    }
    out["pairs"] = {k: float(np.mean(a)) for k, a in pairs.items()}
    return out


if __name__ == "__main__":  # pragma: no cover - manual measurement helper
    results = _measure()
    pair_accuracy = results.pop("pairs")
    for view, r in results.items():
        print(
            f"{view:11s} {int(r['params']):6d} params  probe {r['probe']:.3f}  "
            f"encoder {r['encoder']:.3f} ± {r['encoder_std']:.3f}  shapley {r['shapley']:.3f}"
        )
    for pair, a in pair_accuracy.items():
        print(f"ensemble {pair:22s} {a:.3f}")
