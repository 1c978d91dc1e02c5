"""A linear probe: how informative each modality (and their union) is, centrally.

Used to check and report that a dataset's modalities differ in strength (unimodal vs
multimodal accuracy of a standardised logistic regression on the held-out test split).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from fedmm.core.data.types import CentralDataset


def linear_probe(
    data: CentralDataset,
    modality_sets: Mapping[str, Sequence[str]],
    *,
    featurize: Callable[[np.ndarray], np.ndarray] | None = None,
    C: float = 1.0,
    max_iter: int = 3000,
) -> dict[str, float]:
    """Test accuracy of a logistic regression trained on each named set of modalities.

    ``featurize`` maps one modality's ``(N, *shape)`` features to ``(N, k)``; default: flatten.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def matrix(features: Mapping[str, np.ndarray], mods: Sequence[str], n: int) -> np.ndarray:
        cols = [featurize(features[m]) if featurize else features[m].reshape(n, -1) for m in mods]
        return np.concatenate(cols, axis=1)

    out: dict[str, float] = {}
    for name, mods in modality_sets.items():
        xtr = matrix(data.train.features, mods, len(data.train))
        xte = matrix(data.test.features, mods, len(data.test))
        scaler = StandardScaler().fit(xtr)
        clf = LogisticRegression(C=C, max_iter=max_iter).fit(scaler.transform(xtr), data.train.labels)
        out[name] = float(clf.score(scaler.transform(xte), data.test.labels))
    return out
