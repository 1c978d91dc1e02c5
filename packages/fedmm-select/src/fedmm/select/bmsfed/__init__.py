"""BMSFed: balanced modality selection (Fan et al., ECCV 2024, arXiv 2401.00403).

>>> from fedmm.select.bmsfed import BMSFed
>>> strategy = FedAvg(techniques=[BMSFed(chi=1.5, clients_per_round=5)])

Or in TOML::

    [[techniques]]
    name = "bmsfed"
    chi = 1.5
"""

from fedmm.select.bmsfed.losses import client_imbalance_ratio, modal_enhancement_loss, prototype_scores
from fedmm.select.bmsfed.selection import (
    Selection,
    exhaustive_minimum,
    facility_location,
    greedy_facility_location,
    pairwise_distances,
    stochastic_greedy_bmsfed,
)
from fedmm.select.bmsfed.technique import BMSFed, count_sketch

__all__ = [
    "BMSFed",
    "Selection",
    "client_imbalance_ratio",
    "count_sketch",
    "exhaustive_minimum",
    "facility_location",
    "greedy_facility_location",
    "modal_enhancement_loss",
    "pairwise_distances",
    "prototype_scores",
    "stochastic_greedy_bmsfed",
]
