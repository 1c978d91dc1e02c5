"""Evaluation of a (global) model on held-out samples: accuracy, loss, macro-F1, per-modality accuracy."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedmm.core.data.types import MISSING_LABEL, SampleSet


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Macro-averaged F1 over the classes present in ``y_true`` or ``y_pred``."""
    scores = []
    for c in range(num_classes):
        tp = int(np.sum((y_pred == c) & (y_true == c)))
        fp = int(np.sum((y_pred == c) & (y_true != c)))
        fn = int(np.sum((y_pred != c) & (y_true == c)))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


@torch.no_grad()
def predict(
    model: nn.Module, samples: SampleSet, batch_size: int = 512, active: Iterable[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of the labelled samples in ``samples``."""
    was_training = model.training
    model.eval()
    idx = np.flatnonzero(samples.labels != MISSING_LABEL)
    active_t = tuple(active) if active is not None else None
    logits = []
    for start in range(0, idx.shape[0], batch_size):
        batch = samples.batch(idx[start : start + batch_size])
        logits.append(model(batch, active_t).logits)
    model.train(was_training)
    out = torch.cat(logits).numpy() if logits else np.zeros((0, 0), np.float32)
    return out, samples.labels[idx]


def evaluate(
    model: nn.Module,
    samples: SampleSet,
    num_classes: int,
    *,
    batch_size: int = 512,
    per_modality: bool = True,
) -> dict[str, float]:
    """``accuracy``, ``loss``, ``f1_macro`` with all modalities, and ``accuracy/<m>`` with only ``m``."""
    logits, labels = predict(model, samples, batch_size)
    if labels.shape[0] == 0:
        return {}
    pred = logits.argmax(axis=1)
    out = {
        "accuracy": float(np.mean(pred == labels)),
        "loss": float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()),
        "f1_macro": macro_f1(labels, pred, num_classes),
    }
    if per_modality and len(samples.modalities) > 1:
        for m in samples.modality_names:
            m_logits, m_labels = predict(model, samples, batch_size, active=(m,))
            out[f"accuracy/{m}"] = float(np.mean(m_logits.argmax(axis=1) == m_labels))
    return out
