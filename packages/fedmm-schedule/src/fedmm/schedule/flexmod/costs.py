"""Measured cost of one local iteration of each modality combination, and a client's budget.

FlexMod's budget is in FLOPs (device-independent): ``c_S`` is what core's
:func:`~fedmm.core.client.measure_train_step` counts for one real training step, the step a
client runs (forward with only ``S`` active, cross-entropy, backward, optimiser step), on a
batch of the server's validation data, on a copy of the global model. It depends only on shapes,
so it is measured once per combination.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import numpy as np
from torch import nn

from fedmm.core.api import MISSING_LABEL, ConfigError, SampleSet, measure_train_step

__all__ = ["CombinationCosts", "entire_update_iterations"]

Combo = tuple[str, ...]


class CombinationCosts:
    """FLOPs of one training step per combination (``batch_size`` samples), measured lazily."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.flops: dict[Combo, int] = {}

    def measure(
        self, model: Callable[[], nn.Module], samples: SampleSet, combos: Sequence[Combo]
    ) -> np.ndarray:
        """``c_S`` for ``combos`` (measured on first request, cached after); ``model()`` is called
        only when something is left to measure."""
        todo = [s for s in combos if s not in self.flops]
        if todo:
            idx = np.flatnonzero(samples.labels != MISSING_LABEL)[: self.batch_size]
            if idx.size == 0:
                raise ConfigError("FlexMod needs labelled validation samples to measure step costs")
            batch = samples.batch(idx)
            work = copy.deepcopy(model())
            for s in todo:
                self.flops[s] = max(int(measure_train_step(work, batch, s).flops), 1)
        return np.array([self.flops[s] for s in combos], dtype=np.float64)

    def state_dict(self) -> dict[str, int]:
        return {"+".join(s): v for s, v in self.flops.items()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.flops = {tuple(k.split("+")): int(v) for k, v in state.items()}


def entire_update_iterations(num_samples: int, batch_size: int, local_epochs: int) -> int:
    """Iterations Entire Update runs in a round: ``local_epochs`` passes of ``⌈n / batch⌉`` steps."""
    return local_epochs * max(1, math.ceil(num_samples / batch_size))
