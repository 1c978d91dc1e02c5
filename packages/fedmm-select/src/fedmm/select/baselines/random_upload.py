"""``RandomUpload``: FedMFS's random-selection baseline (Yuan et al., ICC 2024, arXiv 2310.07048).

Each client uploads γ of the modality models it owns drawn uniformly at random, instead of the
top γ by FedMFS's priority. Everything else is FedMFS's (:class:`~fedmm.select.fedmfs.FedMFS`):
the per-modality ensemble model, one NLL per modality model, the stage-1 ensemble and its Shapley
values (computed and logged as ``fedmfs/shapley/<m>`` so its curves compare with FedMFS's, though
they choose nothing here), the ``upload`` filter and the ``fedmfs/uploads/<m>`` counts.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from torch import nn

from fedmm.core.api import TechniqueArguments
from fedmm.select.fedmfs.priority import random_gamma
from fedmm.select.fedmfs.technique import FedMFS, UploadArguments

__all__ = ["RandomUpload"]


class RandomUpload(FedMFS):
    """Random modality upload: each client sends γ uniformly drawn modality models per round.
    Arguments: :class:`~fedmm.select.fedmfs.technique.UploadArguments` (FedMFS's, without the
    priority's weights, which a random choice does not use)."""

    name: ClassVar[str] = "random_upload"
    _owner: ClassVar[str] = "RandomUpload"
    Arguments: ClassVar[type[TechniqueArguments]] = UploadArguments

    def _choose(
        self, model: nn.Module, names: list[str], phi: np.ndarray, available: np.ndarray, seed: int
    ) -> list[int]:
        # The client's report seed: the same draw on every engine and on resume.
        return random_gamma(available, self.args.gamma, np.random.default_rng(seed))
