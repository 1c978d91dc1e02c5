"""What FlexMod and its baselines (Entire Update, Partial Update) share: the per-client compute
budget and the measured step costs.

The budget is in FLOPs: ``budget × (Entire Update's iterations) × c_full``, where Entire Update
runs ``local_epochs`` passes over the client's data with every modality and ``c_S`` is the
measured FLOPs of one step of combination ``S``. All three spend the same budget: Entire Update on
the full combination, Partial Update on one random combination per client and round, FlexMod on
its allocation. Each needs a server validation split (``validation_fraction`` > 0) — FlexMod for
its importance and reward, the others to measure step costs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from fedmm.core.api import ConfigError, RoundContext, Technique, TechniqueArguments, TrainPlan
from fedmm.schedule.flexmod.costs import CombinationCosts, entire_update_iterations

__all__ = ["COUNTS", "PROTO", "BudgetArguments", "BudgetedSchedule"]

# FlexMod's report keys (per modality): a schedule reads from them which modalities a client holds.
PROTO = "flexmod/prototypes/"
COUNTS = "flexmod/counts/"


class BudgetArguments(TechniqueArguments):
    """The argument the three schedules share (Entire Update's only one)."""

    # A positive fraction of Entire Update's compute (> 1 allowed: more than Entire Update).
    budget: float = Field(
        1.0,
        gt=0,
        description="each client's compute per round as a fraction of Entire Update's (its `local_epochs` "
        "passes), in FLOPs",
    )


class BudgetedSchedule(Technique):
    """What the three schedules share: the per-client budget and the measured step costs.

    Each owns the plan's ``combinations``: one schedule per strategy, listed after any technique
    that restricts a client's modalities (BMSFed's weak-modality picks), whose choice it keeps."""

    owns: ClassVar[frozenset[str]] = frozenset({"combinations"})
    Arguments: ClassVar[type[TechniqueArguments]] = BudgetArguments
    args: BudgetArguments

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._costs: CombinationCosts | None = None

    @property
    def budget(self) -> float:
        """The budget, as a fraction of Entire Update's compute."""
        return self.args.budget

    def _held(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> tuple[str, ...]:
        """The modalities a client trains: those it reported prototypes for (all of them before its
        first report), within those an earlier technique restricted the plan to (e.g. BMSFed's
        weak-modality picks). The budget is then Entire Update's over these modalities."""
        names = tuple(m.name for m in ctx.modalities)
        report = ctx.reports.get(client_id, {})
        held = tuple(m for m in names if COUNTS + m in report) or names
        if plan.combinations and all(c.modalities is not None for c in plan.combinations):
            allowed = {m for c in plan.combinations for m in c.modalities or ()}
            held = tuple(m for m in held if m in allowed) or tuple(m for m in names if m in allowed)
        return held

    def _entire_iterations(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> int:
        return entire_update_iterations(int(ctx.client_sizes[client_id]), plan.batch_size, plan.local_epochs)

    def _step_costs(
        self, ctx: RoundContext, combos: Sequence[tuple[str, ...]], plan: TrainPlan
    ) -> np.ndarray:
        if ctx.validation is None or len(ctx.validation) == 0:
            raise ConfigError(
                f"{self.name} needs a server validation split to measure step costs"
                + (" and modality importance" if self.name == "flexmod" else "")
                + ": load the data with validation_fraction > 0 (e.g. [data] validation_fraction = 0.1)"
            )
        if self._costs is None or self._costs.batch_size != plan.batch_size:
            self._costs = CombinationCosts(plan.batch_size)
        return self._costs.measure(ctx.global_model, ctx.validation, combos)

    def _cost_state(self) -> dict[str, Any]:
        return {
            "costs": None if self._costs is None else self._costs.state_dict(),
            "costs_batch": None if self._costs is None else self._costs.batch_size,
        }

    def _load_cost_state(self, state: Mapping[str, Any]) -> None:
        self._costs = None
        if state.get("costs") is not None:
            self._costs = CombinationCosts(int(state["costs_batch"]))
            self._costs.load_state_dict(dict(state["costs"]))
