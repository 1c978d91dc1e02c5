"""fedmm.schedule — FlexMod importance-aware modality scheduling and the Entire / Partial Update baselines."""

from fedmm.schedule.flexmod import EntireUpdate, FlexMod, PartialUpdate

__all__ = ["EntireUpdate", "FlexMod", "PartialUpdate"]
