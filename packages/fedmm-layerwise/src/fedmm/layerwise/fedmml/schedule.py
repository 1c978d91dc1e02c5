"""The stage schedule of layer-wise training: which stage a round is in, and how deep each encoder is.

Reference: Tun et al., "Resource-Efficient Federated Multimodal Learning via Layer-wise and
Progressive Training" (arXiv 2407.15426). Training runs in ``S`` stages; stage ``s`` (1-based)
lasts ``rounds[s-1]`` rounds and adds ``layers_per_stage[m]`` layers to encoder ``m``. The stage
is a pure function of the round number, so a run resumed in the middle of a stage continues that
stage with no state of its own. Stages of 0 rounds are skipped (their layers stay at their
initial weights, as with the paper's "low-high" schedule over pretrained layers); rounds after
the last stage stay in it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedmm.core.api import ConfigError

__all__ = ["StageSchedule"]


@dataclass(frozen=True)
class StageSchedule:
    """Rounds per stage, e.g. ``StageSchedule((10, 10, 10, 10))`` or ``StageSchedule.uniform(4, 10)``."""

    rounds: tuple[int, ...]

    def __post_init__(self) -> None:
        rounds = tuple(self.rounds)
        if not rounds:
            raise ConfigError("layerwise: the stage schedule needs at least one stage")
        for r in rounds:
            if isinstance(r, bool) or not isinstance(r, int) or r < 0:
                raise ConfigError(f"layerwise: rounds per stage must be integers >= 0, got {list(rounds)}")
        if sum(rounds) == 0:
            raise ConfigError(f"layerwise: every stage of {list(rounds)} has 0 rounds")
        object.__setattr__(self, "rounds", rounds)

    @classmethod
    def uniform(cls, stages: int, rounds_per_stage: int) -> StageSchedule:
        if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
            raise ConfigError(f"layerwise: stages must be a positive integer, got {stages!r}")
        return cls((rounds_per_stage,) * stages)

    @property
    def num_stages(self) -> int:
        return len(self.rounds)

    @property
    def total_rounds(self) -> int:
        return sum(self.rounds)

    def stage_at(self, round_: int) -> int:
        """The 1-based stage of 1-based round ``round_`` (the last stage after the schedule ends)."""
        if round_ < 1:
            raise ValueError(f"rounds are numbered from 1, got {round_}")
        end = 0
        for s, r in enumerate(self.rounds, start=1):
            end += r
            if round_ <= end:
                return s
        return self.num_stages

    def first_round(self, stage: int) -> int:
        """The first round of ``stage`` (1-based)."""
        if not 1 <= stage <= self.num_stages:
            raise ValueError(f"stage must be in 1..{self.num_stages}, got {stage}")
        return sum(self.rounds[: stage - 1]) + 1


def stages_needed(num_layers: Mapping[str, int], layers_per_stage: Mapping[str, int]) -> int:
    """How many stages grow every encoder to its full depth."""
    return max((math.ceil(n / layers_per_stage[m]) for m, n in num_layers.items()), default=1)


def schedule_from(rounds_per_stage: int | Sequence[int], stages: int) -> StageSchedule:
    """A uniform schedule of ``stages`` stages from an int, or the explicit per-stage list."""
    if isinstance(rounds_per_stage, bool):
        raise ConfigError(f"layerwise: rounds_per_stage must be an int or a list, got {rounds_per_stage!r}")
    if isinstance(rounds_per_stage, int):
        return StageSchedule.uniform(stages, rounds_per_stage)
    return StageSchedule(tuple(rounds_per_stage))
