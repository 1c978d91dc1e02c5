"""fedmm.schedule — FlexMod importance-aware modality scheduling and its baselines, Entire Update
and Partial Update (each a technique of its own)."""

from fedmm.schedule.baselines import EntireUpdate, PartialUpdate
from fedmm.schedule.flexmod import FlexMod

__all__ = ["EntireUpdate", "FlexMod", "PartialUpdate"]
