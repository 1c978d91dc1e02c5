"""FlexMod's baselines, each a technique of its own: :class:`EntireUpdate` (every step trains
every modality) and :class:`PartialUpdate` (one random modality combination per client and round),
both on FlexMod's compute budget (:mod:`fedmm.schedule.flexmod.budget`)."""

from fedmm.schedule.baselines.entire_update import EntireUpdate
from fedmm.schedule.baselines.partial_update import PartialUpdate

__all__ = ["EntireUpdate", "PartialUpdate"]
