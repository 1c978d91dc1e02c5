"""``RandomUpload``: FedMFS's random-selection baseline (Yuan et al., ICC 2024, arXiv 2310.07048).

Each client uploads γ of the modality models it owns drawn uniformly at random, instead of the
top γ by FedMFS's priority. Everything else is FedMFS's (:class:`~fedmm.select.fedmfs.FedMFS`):
the per-modality ensemble model, one NLL per modality model, the stage-1 ensemble and its Shapley
values (computed and logged as ``fedmfs/shapley/<m>`` so its curves compare with FedMFS's, though
they choose nothing here), the ``upload`` filter and the ``fedmfs/uploads/<m>`` counts.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from torch import nn

from fedmm.select.fedmfs.priority import random_gamma
from fedmm.select.fedmfs.technique import FedMFS, ShapleyBackend

__all__ = ["RandomUpload"]


class RandomUpload(FedMFS):
    """Random modality upload: each client sends γ uniformly drawn modality models per round.

    Args:
        gamma: modality models a client uploads per round, ``1 <= γ <= M`` (a client owning
            fewer modalities uploads all it has).
        shapley: how the (logged) Shapley values are computed, as FedMFS's ``shapley``.
        n_estimators: trees in the stage-1 random forest.
        shap_samples: background (and explained) points sampled from the client's data.
        model: ``"ensemble"`` (the paper's independent per-modality models) or ``"late_fusion"``
            (core's default model), as FedMFS's ``model``.
    """

    name: ClassVar[str] = "random_upload"
    _owner: ClassVar[str] = "RandomUpload"

    def __init__(
        self,
        gamma: int = 1,
        shapley: ShapleyBackend = "tree",
        n_estimators: int = 10,
        shap_samples: int = 50,
        model: Literal["ensemble", "late_fusion"] = "ensemble",
    ) -> None:
        # FedMFS's default weights: checked there, unused by the random choice.
        super().__init__(
            gamma=gamma, shapley=shapley, n_estimators=n_estimators, shap_samples=shap_samples, model=model
        )

    def config(self) -> dict[str, Any]:
        return {k: v for k, v in super().config().items() if k not in ("alpha_s", "alpha_c")}

    def _choose(
        self, model: nn.Module, names: list[str], phi: np.ndarray, available: np.ndarray, seed: int
    ) -> list[int]:
        # The client's report seed: the same draw on every engine and on resume.
        return random_gamma(available, self.gamma, np.random.default_rng(seed))
