"""``EntireUpdate``: FlexMod's conventional baseline (Bian, Wang, Xu, arXiv 2408.06549) — every
local step trains every modality the client holds, on FlexMod's compute budget."""

from __future__ import annotations

import math
from typing import ClassVar

from fedmm.core.api import Combination, RoundContext, TrainPlan
from fedmm.schedule.flexmod.budget import BudgetedSchedule

__all__ = ["EntireUpdate"]


class EntireUpdate(BudgetedSchedule):
    """Every iteration trains every modality (conventional multimodal FL), within the budget.

    With ``budget = 1`` this is plain FedAvg's ``local_epochs`` passes; with ``budget = b`` it runs
    ``⌊b × iterations⌋`` full-combination steps. Arguments:
    :class:`~fedmm.schedule.flexmod.budget.BudgetArguments`.
    """

    name: ClassVar[str] = "entire_update"

    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        steps = max(1, math.floor(self.budget * self._entire_iterations(ctx, client_id, plan)))
        held = self._held(ctx, client_id, plan)
        return plan.replace(combinations=(Combination(held, steps),))
