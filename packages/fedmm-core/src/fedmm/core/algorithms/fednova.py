"""FedNova (Wang, Liu, Liang, Joshi, Poor, NeurIPS 2020, arXiv 2007.07481).

Clients that take different numbers of local steps (different data sizes, epochs) pull FedAvg
towards the objectives of the clients that stepped most. FedNova normalises each client's update
by its number of effective steps before averaging:

``d_i = (x − y_i) / a_i``,  ``x ← x − τ_eff Σ_i p_i d_i``,  ``τ_eff = Σ_i p_i a_i``,

with ``p_i`` the sample shares of the clients that uploaded the group, ``a_i = τ_i`` local steps
for plain SGD, and ``a_i = (τ_i − ρ (1 − ρ^τ_i) / (1 − ρ)) / (1 − ρ)`` with momentum ``ρ`` (the
paper's §4). ``τ_i`` is the client's measured step count (the ledger's), ``ρ`` the momentum its
plan trained with (read in ``configure``). With equal ``a_i`` it is FedAvg. It owns ``aggregate``
(so it does not combine with another technique that does) and composes with a server optimizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from fedmm.core.arguments import TechniqueArguments
from fedmm.core.arrays import GroupedArrays
from fedmm.core.protocol import ClientResult, ResultsContext, RoundContext, Technique, TrainPlan

__all__ = ["FedNova", "effective_steps"]


def effective_steps(steps: int, momentum: float = 0.0) -> float:
    """``a_i`` of a client that took ``steps`` SGD steps with heavy-ball ``momentum``."""
    if steps <= 0:
        return 0.0
    if momentum == 0:
        return float(steps)
    rho = momentum
    return (steps - rho * (1 - rho**steps) / (1 - rho)) / (1 - rho)


class FedNova(Technique):
    """Normalised averaging (no arguments)."""

    name: ClassVar[str] = "fednova"
    Arguments: ClassVar[type[TechniqueArguments]] = TechniqueArguments

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.momentum: dict[int, float] = {}  # per client, this round's planned momentum

    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        self.momentum[client_id] = float(plan.momentum) if plan.optimizer == "sgd" else 0.0
        return plan

    def aggregate(self, ctx: ResultsContext, results: Sequence[ClientResult]) -> GroupedArrays | None:
        a = {r.client_id: effective_steps(r.cost.steps, self.momentum.get(r.client_id, 0.0)) for r in results}
        out: GroupedArrays = {g: dict(t) for g, t in ctx.previous_arrays.items()}
        for group, previous in ctx.previous_arrays.items():
            carriers = [r for r in results if group in r.update and a[r.client_id] > 0]
            total = float(sum(r.num_samples for r in carriers))
            if not carriers or total <= 0:
                continue
            p = [r.num_samples / total for r in carriers]
            tau_eff = sum(pi * a[r.client_id] for pi, r in zip(p, carriers, strict=True))
            merged: dict[str, np.ndarray] = {}
            for key, x in previous.items():
                if not np.issubdtype(x.dtype, np.floating):
                    merged[key] = carriers[0].update[group][key].copy()
                    continue
                x64 = np.asarray(x, dtype=np.float64)
                step = np.zeros(x.shape, dtype=np.float64)
                for pi, r in zip(p, carriers, strict=True):
                    step += pi * (x64 - np.asarray(r.update[group][key], dtype=np.float64)) / a[r.client_id]
                merged[key] = (x64 - tau_eff * step).astype(x.dtype)
            out[group] = merged
        self.momentum.clear()
        return out
