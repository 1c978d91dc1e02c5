"""FedMFS stage-2 ensemble and the paper's metric (Yuan et al., ICC 2024, arXiv 2310.07048, §2 step 7–8).

After the server has averaged the modality models, each client refits its personalised ensemble
(a random forest over the argmax class predicted by each *global* modality model on its own
training samples) and deploys it. The paper reports the mean over clients of that ensemble's test
accuracy. The server holds no client data, so this is a pure function a benchmark calls at the end
of a run: it plays every client's stage 2 on the client's training view and scores it on the
global test set restricted to the modalities the client owns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from fedmm.core.api import MISSING_LABEL, FederatedDataset, SampleSet

Weighting = Literal["client", "uniform"]

ABSENT = -1
"""Ensemble input for a modality the sample (or client) does not have."""


@torch.no_grad()
def modality_predictions(
    model: nn.Module,
    samples: SampleSet,
    indices: np.ndarray | None = None,
    modality_mask: np.ndarray | None = None,
    batch_size: int = 512,
) -> np.ndarray:
    """``(n, M)`` argmax class of each modality model alone (``model(batch, active=(m,))``), -1 where absent.

    Works for any fedmm model whose forward takes ``active`` (the modality ensemble, or a
    late-fusion model whose unimodal predictions go through its fusion).
    """
    was_training = model.training
    model.eval()
    idx = np.arange(len(samples)) if indices is None else np.asarray(indices, dtype=np.int64)
    names = samples.modality_names
    out = np.full((idx.shape[0], len(names)), ABSENT, dtype=np.int64)
    for start in range(0, idx.shape[0], batch_size):
        batch = samples.batch(idx[start : start + batch_size], modality_mask)
        present = batch.present.numpy()
        for j, m in enumerate(names):
            if not present[:, j].any():
                continue
            pred = model(batch, (m,)).logits.argmax(dim=1).cpu().numpy()
            out[start : start + batch_size, j] = np.where(present[:, j], pred, ABSENT)
    model.train(was_training)
    return out


def fit_ensemble(u: np.ndarray, y: np.ndarray, seed: int, n_estimators: int = 10) -> object:
    """The FedMFS local ensemble: ``RandomForestClassifier(n_estimators)`` on per-modality predictions."""
    from sklearn.ensemble import RandomForestClassifier  # sklearn is slow to import

    return RandomForestClassifier(n_estimators=n_estimators, random_state=seed).fit(u, y)


def personalised_accuracies(
    model: nn.Module,
    data: FederatedDataset,
    clients: Sequence[int] | None = None,
    *,
    seed: int = 0,
    n_estimators: int = 10,
    weighting: Weighting = "client",
) -> np.ndarray:
    """Each client's stage-2 ensemble accuracy on the global test set (its modalities only).

    ``weighting="client"`` (default) weighs the per-class test accuracy by the client's own class
    frequencies (its personalised task under label skew); ``"uniform"`` scores the whole global
    test set. Clients without a labelled training sample are skipped (no ensemble can be fitted).
    """
    ids = list(range(data.num_clients)) if clients is None else [int(c) for c in clients]
    train_u = modality_predictions(model, data.train)
    test_lab = np.flatnonzero(data.test.labels != MISSING_LABEL)
    test_u = modality_predictions(model, data.test, test_lab)
    test_y = data.test.labels[test_lab]
    accs: list[float] = []
    for cid in ids:
        client = data.client(cid)
        idx = client.indices[client.labels() != MISSING_LABEL]
        if idx.shape[0] == 0:
            continue
        mask = client.modality_mask
        u = np.where(data.train.present[idx] & mask[None, :], train_u[idx], ABSENT)
        rf = fit_ensemble(u, data.train.labels[idx], seed=seed + cid, n_estimators=n_estimators)
        tu = np.where(mask[None, :], test_u, ABSENT)
        hit = (rf.predict(tu) == test_y).astype(np.float64)  # type: ignore[attr-defined]
        if weighting == "uniform":
            accs.append(float(hit.mean()))
            continue
        # The client's own test distribution: per-class test accuracy weighted by its class mix,
        # i.e. the expected accuracy on a test split drawn like its training data (the paper
        # splits every client's data 80/20; a global test set is shared here).
        prior = np.bincount(data.train.labels[idx], minlength=data.num_classes) / idx.shape[0]
        per_class = np.zeros(data.num_classes)
        np.add.at(per_class, test_y, hit)
        counts = np.bincount(test_y, minlength=data.num_classes)
        seen = counts > 0
        per_class[seen] /= counts[seen]
        accs.append(float(np.sum(prior[seen] * per_class[seen]) / max(np.sum(prior[seen]), 1e-12)))
    return np.asarray(accs, dtype=np.float64)


def personalised_accuracy(
    model: nn.Module,
    data: FederatedDataset,
    clients: Sequence[int] | None = None,
    *,
    seed: int = 0,
    n_estimators: int = 10,
    weighting: Weighting = "client",
) -> float:
    """Mean over clients of the stage-2 personalised ensemble's test accuracy (the paper's metric)."""
    accs = personalised_accuracies(
        model, data, clients, seed=seed, n_estimators=n_estimators, weighting=weighting
    )
    return float(accs.mean()) if accs.size else float("nan")


__all__ = [
    "ABSENT",
    "fit_ensemble",
    "modality_predictions",
    "personalised_accuracies",
    "personalised_accuracy",
]
