"""Evaluation of a (global) model on held-out samples: accuracy, loss, macro-F1, UAR, per-modality
accuracy, and accuracy/F1 as modalities go missing at test time (:func:`missing_modality_curve`)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedmm.core.data.partition import missing_modalities
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


def unweighted_average_recall(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """UAR: the mean over the classes present in ``y_true`` of each class's recall (balanced accuracy)."""
    recalls = [float(np.mean(y_pred[y_true == c] == c)) for c in range(num_classes) if np.any(y_true == c)]
    return float(np.mean(recalls)) if recalls else 0.0


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
        logits.append(model(batch, active_t).logits.cpu())
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
    """``accuracy``, ``loss``, ``f1_macro``, ``uar`` with all modalities; ``accuracy/<m>`` with only ``m``."""
    logits, labels = predict(model, samples, batch_size)
    if labels.shape[0] == 0:
        return {}
    pred = logits.argmax(axis=1)
    out = {
        "accuracy": float(np.mean(pred == labels)),
        "loss": float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()),
        "f1_macro": macro_f1(labels, pred, num_classes),
        "uar": unweighted_average_recall(labels, pred, num_classes),
    }
    if per_modality and len(samples.modalities) > 1:
        for m in samples.modality_names:
            m_logits, m_labels = predict(model, samples, batch_size, active=(m,))
            out[f"accuracy/{m}"] = float(np.mean(m_logits.argmax(axis=1) == m_labels))
    return out


def drop_modalities(present: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """``present`` with each (sample, modality) entry switched off with probability ``rate``.

    A sample left with no modality gets one of its present ones back, chosen at random: the curve
    measures a model that sees less, not one asked to classify nothing. The drawing is the
    ``missing_rate`` knob's (:func:`fedmm.core.data.partition.missing_modalities`).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"missing rate must lie in [0, 1), got {rate}")
    return missing_modalities(present, rate, rng)


def missing_modality_curve(
    model: nn.Module,
    samples: SampleSet,
    num_classes: int,
    rates: Iterable[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    *,
    seed: int = 0,
    batch_size: int = 512,
) -> dict[float, dict[str, float]]:
    """Test-time missing modalities: ``{rate: {"accuracy", "f1_macro", "uar"}}`` for each rate.

    At each rate every modality of every sample is missing independently with that probability
    (a sample keeps at least one, see :func:`drop_modalities`); the model sees them as absent, as
    it sees a modality a client lacks. One generator seeded by ``seed`` draws every rate's mask
    in turn, so a curve is reproducible.
    """
    rng = np.random.default_rng(seed)
    out: dict[float, dict[str, float]] = {}
    for rate in rates:
        masked = samples.with_columns(present=drop_modalities(samples.present, float(rate), rng))
        m = evaluate(model, masked, num_classes, batch_size=batch_size, per_modality=False)
        out[float(rate)] = {k: m[k] for k in ("accuracy", "f1_macro", "uar")}
    return out
