"""FlexMod: importance-aware modality scheduling (Bian, Wang, Xu, arXiv 2408.06549).

The server weighs each modality's importance (Shapley) against its encoder's training need
(prototype quality) with a β chosen by a DDPG agent, then splits every client's compute budget
over modality combinations by a convex program.
"""

from fedmm.schedule.flexmod.agent import BetaAgent
from fedmm.schedule.flexmod.allocation import (
    InfeasibleBudgetError,
    allocate,
    combination_weights,
    encoder_credits,
    execution_order,
    integer_allocation,
    modality_combinations,
    modality_weights,
    utility,
)
from fedmm.schedule.flexmod.env import ENV_ID, FederationSimulator, FlexModEnv, RoundSignals
from fedmm.schedule.flexmod.technique import FlexMod

__all__ = [
    "ENV_ID",
    "BetaAgent",
    "FederationSimulator",
    "FlexMod",
    "FlexModEnv",
    "InfeasibleBudgetError",
    "RoundSignals",
    "allocate",
    "combination_weights",
    "encoder_credits",
    "execution_order",
    "integer_allocation",
    "modality_combinations",
    "modality_weights",
    "utility",
]
