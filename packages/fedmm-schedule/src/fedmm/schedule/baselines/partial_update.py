"""``PartialUpdate``: FlexMod's random baseline (Bian, Wang, Xu, arXiv 2408.06549) — each client
trains one random modality combination per round, for as many steps as FlexMod's budget pays for."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from fedmm.core.api import Combination, RoundContext, TechniqueArguments, TrainPlan
from fedmm.schedule.flexmod.allocation import modality_combinations
from fedmm.schedule.flexmod.budget import BudgetArguments, BudgetedSchedule

__all__ = ["PartialUpdate", "PartialUpdateArguments"]


class PartialUpdateArguments(BudgetArguments):
    """Partial Update's arguments: the budget and the seed of its draws."""

    # numpy seeds its per-round generator from it, and refuses a negative seed (in round 1).
    seed: int = Field(0, ge=0, description="seeds the per-round draw of each client's combination")


class PartialUpdate(BudgetedSchedule):
    """Each round every client trains one uniformly random non-empty subset of its modalities,
    for as many iterations as the same budget pays for (spec §4). Arguments:
    :class:`PartialUpdateArguments`."""

    name: ClassVar[str] = "partial_update"
    Arguments: ClassVar[type[TechniqueArguments]] = PartialUpdateArguments
    args: PartialUpdateArguments

    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        held = self._held(ctx, client_id, plan)
        combos = modality_combinations(held)
        rng = np.random.default_rng([self.args.seed, ctx.round, client_id])
        pick = combos[int(rng.integers(len(combos)))]
        costs = self._step_costs(ctx, [combos[0], pick], plan)
        budget = self.budget * self._entire_iterations(ctx, client_id, plan) * costs[0]
        steps = max(1, math.floor(budget / costs[1]))
        return plan.replace(combinations=(Combination(pick, steps),))

    def state_dict(self) -> dict[str, Any]:
        return self._cost_state()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._load_cost_state(state)
